"""audit-web's pages: sign in, the hosts you may use, a token for one of them.

Every form is a POST under Django's CSRF check; every page is `no-store`, so
that a token never sits in a shared browser cache. The console's pages are
web/console_views.py; the URLs of both, web/urls.py.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from agent.inventory import Target, groups_of
from agent.locks import refusal
from agent.records import iso
from web.auth import authenticate
from web.console import SIGNED_IN, SIGNED_IN_AT, signed_in, viewer_of, web_config
from web.tokens import TokenStore, Verdict

log = logging.getLogger(__name__)


def _tokens() -> TokenStore:
    tokens: TokenStore = settings.BASTION_TOKENS
    return tokens


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "?")


def _targets(user: str) -> list[Target]:
    """The same hosts and accounts audit-shell's menu would offer `user`."""
    return web_config().shell.targets_for(user, groups_of(user))


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest) -> HttpResponse:
    error = ""
    status = 200
    if request.method == "POST":
        client = _client(request)
        key = f"sign-in {client}"
        user = request.POST.get("username", "")
        if _tokens().throttled(key):
            log.warning("sign-in from %s refused: too many failures", client)
            error, status = Verdict.THROTTLED.value, 429
        elif authenticate(
            web_config().web.pam_service, user, request.POST.get("password", "")
        ):
            request.session.cycle_key()  # no session fixation
            request.session[SIGNED_IN] = user
            request.session[SIGNED_IN_AT] = time.time()
            log.info("%s signed in from %s", user, client)
            return HttpResponseRedirect("/")
        else:
            _tokens().failed(key)
            log.warning("sign-in failed for %r from %s", user[:40], client)
            error, status = "sign-in failed", 403
    return render(request, "sign_in.html", {"error": error}, status=status)


@never_cache
@require_http_methods(["GET"])
def hosts(request: HttpRequest) -> HttpResponse:
    user = signed_in(request)
    if not user:
        return HttpResponseRedirect("/sign-in")
    viewer = viewer_of(request)
    context = {
        "user": user,
        "targets": _targets(user),
        "viewer": viewer,
        "nav": viewer is not None,
    }
    return render(request, "hosts.html", context)


@never_cache
@require_POST
def connect(request: HttpRequest) -> HttpResponse:
    user = signed_in(request)
    if not user:
        return HttpResponseRedirect("/sign-in")
    wanted = request.POST.get("target", "")
    target = next((t for t in _targets(user) if t.label == wanted), None)
    if target is None:
        log.warning("%s asked for %r, which is not theirs", user, wanted[:80])
        return HttpResponse("not a host you may use\n", status=403)
    locked = refusal(web_config().shell.settings.locks_dir, user)
    if locked:
        log.warning("no token for %s: %s", user, locked)
        return HttpResponse(f"{locked}\n", status=403, content_type="text/plain")
    token, expires = _tokens().issue(user, target.host.name, target.account.name)
    log.info("token for %s: %s, expires %s", user, target.label, iso(expires))
    remaining_s = max(0.0, expires - _tokens().clock())
    context = {
        "user": user,
        "bastion": web_config().web.bastion_name,
        "target": target,
        "token": token,
        "expires": iso(expires),
        # The countdown runs from the page's arrival on the browser's monotonic
        # clock: the browser's wall clock may be off, and is never asked.
        "remaining_ms": int(remaining_s * 1000),
        "remaining": f"{int(remaining_s) // 60}:{int(remaining_s) % 60:02d}",
        "terminal_url": web_config().web.terminal_url,
    }
    return render(request, "token.html", context)


@never_cache
@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    if request.session.get(SIGNED_IN):
        log.info("%s signed out", request.session[SIGNED_IN])
    request.session.flush()
    return HttpResponseRedirect("/sign-in")
