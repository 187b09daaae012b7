"""Token redemption: only the terminal's account, once, and the agent's record."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest

from agent.redemption import redeem
from agent.web_config import WebConfigError, load_web_config, parse_web_settings
from web.redeem import Redeemer, RedeemServer
from web.tokens import TokenStore

TERMINAL = "nobody"  # any existing account will do as the terminal's


def write_config(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = tmp_path / "shell.toml"
    path.write_text(
        f'[shell]\nintents_dir = "{spool}"\n'
        '[web]\nterminal_user = "nobody"\ntoken_ttl_s = 60\n'
        f'state_dir = "{tmp_path}"\nredeem_socket = "{tmp_path}/redeem.sock"\n'
        '[[host]]\nname = "web1"\naddress = "127.0.0.1"\nport = 2222\n'
        '  [[host.account]]\n  name = "deploy"\n  key_file = "/nonexistent"\n'
        '[[grant]]\nusers = ["alice"]\nhosts = ["web1"]\naccounts = ["*"]\n'
    )
    return path


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(WebConfigError, match=r"f: web.listen_port must be a whole"):
        parse_web_settings({"listen_port": "80"}, "f")
    with pytest.raises(WebConfigError, match=r"f: web.colour is not a known key"):
        parse_web_settings({"colour": 1}, "f")


def test_redeem_once_for_the_terminal_only(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path))
    assert config.web.token_ttl_s == 60.0
    tokens = TokenStore(tmp_path / "tokens.sqlite", ttl_s=config.web.token_ttl_s)
    token, _ = tokens.issue("alice", "web1", "deploy")
    redeemer = Redeemer(config, tokens)
    request = json.dumps({"token": token, "client": "192.0.2.9"}).encode()

    refused = redeemer.handle(request, peer_uid=0)
    assert not refused.ok and "only the web terminal" in refused.message

    terminal = pwd.getpwnam(TERMINAL).pw_uid
    reply = redeemer.handle(request, terminal)
    assert reply.ok and reply.tag.startswith("aw-")
    assert (reply.web_user, reply.host, reply.account) == ("alice", "web1", "deploy")
    record = json.loads((tmp_path / "spool" / f"{reply.tag}.json").read_text())
    assert record["origin"] == "web-token"
    assert (record["web_user"], record["ssh_user"]) == ("alice", TERMINAL)
    assert record["client_addr"] == "192.0.2.9"

    again = redeemer.handle(request, terminal)
    assert (again.ok, again.message) == (False, "token already used")


def test_the_socket_asks_the_kernel_who_calls(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path))
    tokens = TokenStore(tmp_path / "tokens.sqlite")
    token, _ = tokens.issue("alice", "web1", "deploy")
    with RedeemServer(config.web.redeem_socket, Redeemer(config, tokens)):
        reply = redeem(config.web.redeem_socket, token, "c")  # we are root
    assert not reply.ok and "only the web terminal" in reply.message
    assert not config.web.redeem_socket.exists()
