"""make web right after make run: it makes what audit-web needs, then serves.

Right after make run there was no shell.toml, then no web terminal account,
and audit-web stopped at each. make web (scripts/web_trial.py) now makes
them, one line each; paths and the account are moved into this test's own
(WEB_STATE_DIR, TERM_USER, REDEEM_SOCKET), and it is a dry run: the test
then starts the command it printed, on a free port.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from agent.web_config import load_web_config
from tests import harness
from tests.test_install import sign_in_page

pytestmark = pytest.mark.root


def test_make_web_makes_what_is_missing_then_audit_web_serves(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "shell.toml"
    term_user = f"bwx{secrets.token_hex(3)}"
    settings = {
        "SHELL_CONFIG": config,
        "WEB_STATE_DIR": tmp_path / "state" / "bastion-audit-web",
        "TERM_USER": term_user,
        "REDEEM_SOCKET": tmp_path / "run" / "redeem.sock",
        "INTENTS_DIR": tmp_path / "spool",
    }
    try:
        result = subprocess.run(
            ["make", "-s", "-C", str(harness.REPO), "web", "DRY_RUN=1"]
            + [f"{k}={v}" for k, v in settings.items()],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()  # after npm's, if it installed the player
        made, command = [x for x in lines if x.startswith("make web: ")], lines[-1]
        assert made == [
            f"make web: wrote an example {config} (no hosts yet: add [[host]], [[grant]])",
            f"make web: made the web terminal's account {term_user} (no shell, no password)",
            f"make web: made audit-web's state directory {settings['WEB_STATE_DIR']}",
            f"make web: made the token socket's directory {tmp_path / 'run'}",
        ]
        web = load_web_config(config).web
        assert (web.terminal_user, web.redeem_socket) == (
            term_user,
            settings["REDEEM_SOCKET"],
        )
        port = harness.free_port()
        with open(tmp_path / "audit-web.log", "wb") as log:
            process = subprocess.Popen(
                [*command.split(), "--port", str(port)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            page = harness.wait_for(
                lambda: sign_in_page(port) or process.poll() is not None, timeout=30
            )
            assert process.poll() is None, (tmp_path / "audit-web.log").read_text()
            assert "Bastion sign-in" in page
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        again = subprocess.run(  # nothing is missing now: nothing to say
            ["make", "-s", "-C", str(harness.REPO), "web", "DRY_RUN=1"]
            + [f"{k}={v}" for k, v in settings.items()],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.stdout.splitlines()[-1] == command
        assert not [x for x in again.stdout.splitlines() if x.startswith("make web: ")]
    finally:
        subprocess.run(["userdel", "-r", term_user], capture_output=True)
