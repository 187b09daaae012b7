"""Django, configured in code from WebConfig: no settings module, no database.

Signed-in state lives in Django's file sessions (server side, so signing out
or expiry really ends it); CSRF tokens live in the session too. Nothing here
needs a model, so there is no database to migrate or secure. Every response
carries a Content-Security-Policy that lets a page run only audit-web's own
scripts (web/assets.py): stored text that got past the escaping still could
not run.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from agent.web_config import WebConfig
from web import WebError
from web.tokens import TokenStore

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
SECRET_KEY_BYTES = 50
# 'wasm-unsafe-eval': the player's terminal emulator is WebAssembly.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
FORM_MAX_BYTES = 64 * 1024


def content_security_policy(get_response: Any) -> Any:
    """Middleware: the policy on every response that has none of its own."""

    def middleware(request: Any) -> Any:
        response = get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return middleware


class StoreUnavailableMiddleware:
    """A page the store cannot answer now is a 503 naming why, in one line."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        from django.http import HttpResponse

        from web.console_store import StoreUnavailable

        if not isinstance(exception, StoreUnavailable):
            return None
        log.error("%s: %s", request.path, exception)
        return HttpResponse(
            f"The store cannot be read now: {exception}\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )


class SiteError(WebError):
    """audit-web's state directory cannot be used."""


def secret_key(state_dir: Path) -> str:
    """The key that signs sessions and CSRF tokens, made once, 0600."""
    path = state_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    except OSError as e:
        raise SiteError(f"cannot create {path}: {e.strerror}") from e
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(SECRET_KEY_BYTES) + "\n")
    return path.read_text().strip()


def wsgi_application(config: WebConfig, tokens: TokenStore) -> Any:
    """Configure Django for this process and return its WSGI application."""
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    from web.console import Console

    web = config.web
    sessions = web.state_dir / "sessions"
    try:
        sessions.mkdir(mode=0o700, exist_ok=True)
        key = secret_key(web.state_dir)
    except OSError as e:
        raise SiteError(f"cannot use {web.state_dir}: {e.strerror}") from e
    settings.configure(
        DEBUG=False,
        SECRET_KEY=key,
        ALLOWED_HOSTS=list(web.allowed_hosts),
        ROOT_URLCONF="web.urls",
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
            "web.site.content_security_policy",
            "web.site.StoreUnavailableMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [str(TEMPLATES_DIR)],
                "OPTIONS": {"context_processors": [], "builtins": ["web.text"]},
            }
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.file",
        SESSION_FILE_PATH=str(sessions),
        SESSION_COOKIE_AGE=int(web.session_idle_s),
        SESSION_SAVE_EVERY_REQUEST=True,  # the age counts from the last request
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=web.secure_cookies,
        SESSION_COOKIE_NAME="audit_web_session",
        CSRF_USE_SESSIONS=True,
        CSRF_COOKIE_SECURE=web.secure_cookies,
        CSRF_TRUSTED_ORIGINS=list(web.trusted_origins),
        # Behind the TLS proxy of the README, which sets this header itself.
        SECURE_PROXY_SSL_HEADER=(
            ("HTTP_X_FORWARDED_PROTO", "https") if web.secure_cookies else None
        ),
        SECURE_REFERRER_POLICY="same-origin",
        X_FRAME_OPTIONS="DENY",
        USE_TZ=True,
        TIME_ZONE="UTC",
        USE_I18N=False,
        LOGGING_CONFIG=None,  # audit-web's own logging stays as it is
        DATA_UPLOAD_MAX_MEMORY_SIZE=FORM_MAX_BYTES,
        BASTION_WEB=config,
        BASTION_TOKENS=tokens,
        BASTION_CONSOLE=Console.from_config(config),
    )
    django.setup()
    from django.contrib.sessions.backends.file import SessionStore

    SessionStore.clear_expired()  # files of sessions that expired while we were down
    return get_wsgi_application()
