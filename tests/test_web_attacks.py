"""audit-web against a hostile local user or web client (issue 14, finding 9).

A real audit-web (its own account, group shadow, PAM), shellinaboxd and
audit-shell --token-login as the terminal account; no browser: a client
that keeps cookies and posts forms, and ordinary local accounts that hold
the redemption socket open.
"""

from __future__ import annotations

import json
import pwd
import re
import subprocess
import time
from collections.abc import Iterator

import pexpect
import pytest

from tests import harness, web_harness
from tests.web_harness import WebBastion, WebClient
from web.auth import login_account

pytestmark = [pytest.mark.root, pytest.mark.slow]

IDLE_S = 3  # session_idle_s: a signed-in session expires this soon
PYTHON = "/usr/bin/python3"
# One byte every 4 s: under the old per-recv timeout of 5 s, forever.
STALLER = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(sys.argv[1])\n"
    "print('connected', flush=True)\n"
    "for _ in range(60):\n"
    "    s.send(b' ')\n"
    "    time.sleep(4)\n"
)


@pytest.fixture(scope="module")
def web() -> Iterator[WebBastion]:
    # own_sessions off: a login account no grant names may not sign in at all.
    extra = f"session_idle_s = {IDLE_S}\nown_sessions = false\n"
    with web_harness.web_bastion(web_extra=extra) as b:
        yield b


def as_user(user: harness.TestUser) -> list[str]:
    gid = pwd.getpwnam(user.name).pw_gid
    return ["setpriv", f"--reuid={user.uid}", f"--regid={gid}", "--init-groups"]


def web_log(web: WebBastion) -> str:
    return (web.workdir / "audit-web.log").read_text(errors="replace")


def session_files(web: WebBastion) -> list[str]:
    return sorted(p.name for p in (web.workdir / "web-state" / "sessions").iterdir())


def test_a_stalling_local_client_holds_up_no_web_login(web: WebBastion) -> None:
    socket_path = str(web.workdir / "web-run" / "redeem.sock")
    stallers = [
        subprocess.Popen(
            [*as_user(who), PYTHON, "-c", STALLER, socket_path],
            stdout=subprocess.PIPE,
        )
        for who in (web.target_user, web.terminal)  # anyone, and the terminal's own
    ]
    try:
        for staller in stallers:
            assert staller.stdout is not None
            assert staller.stdout.readline() == b"connected\n"
        client = WebClient(web.web_url)
        assert client.sign_in(web.person.name, web.person.password) == 302
        token = client.token(f"{web.target_user.name}@web1")
        terminal = pexpect.spawn(
            as_user(web.terminal)[0],
            [
                *as_user(web.terminal)[1:],
                str(web.audit_shell),
                "--token-login",
                "--config",
                str(web.config),
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "TERM": harness.SSH_TERM,
                "HOME": str(web.terminal.home),
                # What a browser could put in X-Real-IP without the proxy.
                "SHELLINABOX_REALIP": "192.0.2.7\naudit-web: INFO forged line",
            },
            timeout=30,
        )
        try:
            terminal.expect(b"Token: ")
            started = time.monotonic()
            terminal.send(token.encode() + b"\r")
            terminal.expect([b"connecting to", b"error"])
            assert b"connecting to" in terminal.after, terminal.before
            # Redeemed at once, not after the stallers' 5 s timeout or later.
            assert time.monotonic() - started < 4.0
        finally:
            terminal.close(force=True)
    finally:
        for staller in stallers:
            staller.kill()
            staller.wait()
    log = web_log(web)
    assert "forged line" in log  # the client's text, escaped on one line
    assert not re.search(r"^audit-web: INFO forged line", log, re.MULTILINE)
    records = [json.loads(p.read_text()) for p in (web.workdir / "spool").glob("aw-*")]
    assert records and all(r["client_addr"].isprintable() for r in records)


def test_anonymous_requests_leave_no_session_and_expired_ones_go(
    web: WebBastion,
) -> None:
    before = session_files(web)
    for _ in range(20):
        status, _ = WebClient(web.web_url).request("/sign-in")
        assert status == 200
    assert set(session_files(web)) <= set(before)  # none new (old ones may go)
    client = WebClient(web.web_url)
    assert client.sign_in(web.person.name, web.person.password) == 302
    signed_in = set(session_files(web)) - set(before)
    assert len(signed_in) == 1
    # Nobody comes back: the file goes once the session has expired.
    harness.wait_for(
        lambda: not signed_in & set(session_files(web)), timeout=IDLE_S * 4
    )


def test_sign_in_is_no_password_oracle_for_ungranted_accounts(web: WebBastion) -> None:
    # target_user is a real account with that password, but no grant names it.
    client = WebClient(web.web_url)
    assert client.sign_in(web.target_user.name, web.target_user.password) == 403
    assert WebClient(web.web_url).sign_in("root", "wrong") == 403
    # With own_sessions a person's login account may; root, nobody never.
    assert login_account(web.target_user.name)
    assert not login_account("root") and not login_account("nobody")


def test_a_failed_name_reaches_the_log_escaped_and_a_password_never(
    web: WebBastion,
) -> None:
    client = WebClient(web.web_url)
    secret = "hunter2-correct-horse"  # a password typed into the name field
    assert client.sign_in(secret, "x") == 403
    assert client.sign_in("x\naudit-web: INFO: forged", "x") == 403
    log = web_log(web)
    assert secret not in log
    assert not re.search(r"^audit-web: INFO: forged", log, re.MULTILINE)
    assert client.sign_in(web.person.name, "wrong") == 403
    assert f"sign-in failed for '{web.person.name}'" in web_log(web)


def test_failures_count_per_user_and_client(web: WebBastion) -> None:
    """Last: it leaves the person throttled for the failure window."""
    for _ in range(6):
        WebClient(web.web_url).sign_in(web.target_user.name, "wrong")
    # Someone else's failures from the same address lock nobody else out.
    assert WebClient(web.web_url).sign_in(web.person.name, web.person.password) == 302
    for _ in range(5):
        WebClient(web.web_url).sign_in(web.person.name, "wrong")
    assert WebClient(web.web_url).sign_in(web.person.name, web.person.password) == 429
