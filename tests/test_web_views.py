"""audit-web's pages through Django's test client, with CSRF checks on.

PAM is replaced here by a stand-in (the end-to-end test signs in through
the real PAM); everything else is the real configuration, tokens and views.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from agent.web_config import load_web_config
from web.site import wsgi_application
from web.tokens import TokenStore, Verdict

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenStore]:
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("web")
    (tmp / "spool").mkdir()
    path = tmp / "shell.toml"
    path.write_text(
        f'[shell]\nintents_dir = "{tmp}/spool"\n'
        f'[web]\nterminal_user = "nobody"\nstate_dir = "{tmp}"\n'
        'allowed_hosts = ["testserver"]\n'
        'bastion = "bastion-eu-1"\n'
        '[[host]]\nname = "web1"\naddress = "127.0.0.1"\n'
        '  [[host.account]]\n  name = "deploy"\n  key_file = "/k"\n'
        '[[host]]\nname = "secret1"\naddress = "127.0.0.1"\n'
        '  [[host.account]]\n  name = "root"\n  key_file = "/k"\n'
        '[[grant]]\nusers = ["alice"]\nhosts = ["web1"]\naccounts = ["*"]\n'
    )
    tokens = TokenStore(tmp / "tokens.sqlite")
    if settings.configured:
        pytest.skip("Django is configured already in this process")
    wsgi_application(load_web_config(path), tokens)
    yield tokens


@pytest.fixture
def client(site: TokenStore, monkeypatch: pytest.MonkeyPatch) -> Any:
    from django.test import Client

    import web.views

    monkeypatch.setattr(
        web.views,
        "authenticate",
        lambda service, user, pw: (user, pw) == ("alice", "pw"),
    )
    return Client(enforce_csrf_checks=True)


def csrf(client: Any, url: str) -> str:
    match = CSRF_RE.search(client.get(url).content.decode())
    assert match is not None
    return match.group(1)


def test_forms_need_the_csrf_token(client: Any) -> None:
    assert client.get("/").headers["Location"] == "/sign-in"
    response = client.post("/sign-in", {"username": "alice", "password": "pw"})
    assert response.status_code == 403


def test_sign_in_hosts_token_sign_out(client: Any, site: TokenStore) -> None:
    token = csrf(client, "/sign-in")
    bad = client.post(
        "/sign-in", {"username": "alice", "password": "x", "csrfmiddlewaretoken": token}
    )
    assert bad.status_code == 403 and b"sign-in failed" in bad.content
    response = client.post(
        "/sign-in",
        {"username": "alice", "password": "pw", "csrfmiddlewaretoken": token},
    )
    assert response.headers["Location"] == "/"
    page = client.get("/").content.decode()
    assert 'value="deploy@web1"' in page and "secret1" not in page

    token = csrf(client, "/")
    shown = client.post(
        "/connect", {"target": "deploy@web1", "csrfmiddlewaretoken": token}
    )
    assert "no-store" in shown.headers["Cache-Control"]
    issued = re.search(r'id="token">([A-Z2-7-]+)<', shown.content.decode())
    assert issued is not None
    page = shown.content.decode()
    assert "This session is recorded." in page
    assert '<b id="bastion">bastion-eu-1</b>' in page
    assert f'<button type="button" id="copy" data-token="{issued.group(1)}">' in page
    remaining = re.search(r'data-remaining-ms="(\d+)">(\d+):(\d\d)<', page)
    assert remaining is not None and 290_000 < int(remaining.group(1)) <= 300_000
    assert remaining.group(2, 3) in {("5", "00"), ("4", "59")}
    script = client.get("/static/token.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert b"navigator.clipboard" in b"".join(script.streaming_content)
    assert "<script>" not in page  # no inline script
    refused = client.post(
        "/connect", {"target": "root@secret1", "csrfmiddlewaretoken": token}
    )
    assert refused.status_code == 403

    client.post("/sign-out", {"csrfmiddlewaretoken": token})
    assert client.get("/").headers["Location"] == "/sign-in"
    redeemed = site.redeem(issued.group(1), "c")
    assert redeemed.verdict is Verdict.OK and redeemed.grant is not None
    assert (redeemed.grant.web_user, redeemed.grant.account) == ("alice", "deploy")
