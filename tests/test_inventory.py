"""audit-shell's TOML: settings, hosts, accounts and grants."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from agent.inventory import (
    InventoryError,
    load_shell_config,
    parse_shell_config,
)

GOOD = """
[shell]
idle_timeout_s = 600
tag_style = "patched"
ssh = "/usr/local/lib/bastion-audit/ssh"

[[host]]
name = "db1"
address = "10.0.0.5"
group = "databases"
  [[host.account]]
  name = "postgres"
  key_file = "/etc/bastion-audit/keys/db1"
  [[host.account]]
  name = "report"
  password = "s3cret"

[[host]]
name = "web1"
address = "10.0.0.7"
port = 2222
group = "web"
  [[host.account]]
  name = "deploy"
  key_file = "/etc/bastion-audit/keys/web1"

[[grant]]
users = ["alice"]
hosts = ["@databases"]
accounts = ["postgres"]

[[grant]]
groups = ["ops"]
hosts = ["*"]
accounts = ["*"]
"""


def parse(text: str):
    return parse_shell_config(tomllib.loads(text), Path("/etc/shell.toml"))


def labels(config, user: str, groups: frozenset[str] = frozenset()) -> list[str]:
    return [t.label for t in config.targets_for(user, groups)]


def test_settings_hosts_and_grants() -> None:
    config = parse(GOOD)
    assert config.settings.idle_timeout_s == 600.0
    assert config.settings.tag_style == "patched"
    assert config.settings.max_session_s == 8 * 3600.0  # default
    db1, web1 = config.hosts
    assert (web1.port, db1.port, db1.group) == (2222, 22, "databases")
    assert db1.accounts[1].auth == "password"
    assert "s3cret" not in repr(db1.accounts[1])
    assert labels(config, "alice") == ["postgres@db1"]
    assert labels(config, "bob") == []
    assert labels(config, "bob", frozenset({"ops"})) == [
        "postgres@db1",
        "report@db1",
        "deploy@web1",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[shell]\nnope = 1\n", "shell.nope is not a known key"),
        ("[shell]\nidle_timeout_s = -1\n", "shell.idle_timeout_s must be between"),
        ('[shell]\ntag_style = "x"\n', "shell.tag_style must be one of"),
        ('[shell]\nssh = "ssh"\n', "shell.ssh must be an absolute path"),
        ('[shell]\nknown_hosts = "kh"\n', "known_hosts must start with"),
        ('[[host]]\nname = "-oProxyCommand=x"\n', "host[0].name is not a valid"),
        (
            '[[host]]\nname = "a"\naddress = "-x"\n',
            "host[0].address must not start with '-'",
        ),
        ('[[host]]\nname = "a"\nport = 70000\n', "host[0].port must be a port"),
        ('[[host]]\nname = "a"\n', "host[0] has no [[host.account]]"),
        (
            '[[host]]\nname = "a"\n[[host.account]]\nname = "u"\n',
            "host[0].account[0] needs exactly one of key_file and password",
        ),
        (
            '[[host]]\nname = "a"\n[[host.account]]\nname = "-l"\npassword = "p"\n',
            "host[0].account[0].name is not a valid name",
        ),
        ('[[grant]]\nhosts = ["*"]\naccounts = ["*"]\n', "grant[0] names no users"),
        ('[[grant]]\nusers = ["a"]\n', "grant[0] needs hosts and accounts"),
        ("[[grant]]\nusers = 'a'\n", "grant[0].users must be a list"),
        ("oops = 1\n", "oops is not a known key"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(
        InventoryError, match="^/etc/shell.toml: .*" + re.escape(message)
    ):
        parse(text)


def test_duplicate_host_names(tmp_path: Path) -> None:
    host = '[[host]]\nname = "a"\n[[host.account]]\nname = "u"\nkey_file = "/k"\n'
    with pytest.raises(InventoryError, match="host name 'a' is used twice"):
        parse(host + host)


def test_file_errors_and_world_readable_passwords(tmp_path: Path) -> None:
    path = tmp_path / "shell.toml"
    with pytest.raises(InventoryError, match="cannot read config file"):
        load_shell_config(path)
    path.write_text("[shell\n")
    with pytest.raises(InventoryError, match="invalid config file"):
        load_shell_config(path)
    path.write_text(GOOD)
    path.chmod(0o644)
    with pytest.raises(InventoryError, match="holds passwords and everyone may"):
        load_shell_config(path)
    path.chmod(0o640)
    assert len(load_shell_config(path).hosts) == 2
