"""audit-web's settings: the `[web]` table of audit-shell's configuration file.

One file holds the inventory, the grants and both front ends' settings, so
that the web page offers exactly the hosts the login shell would.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agent.inventory import DEFAULT_SHELL_CONFIG, ShellConfig, load_shell_config
from web import WebError
from web.tokens import FAILURE_WINDOW_S, FAILURES_MAX, TOKEN_TTL_S


class WebConfigError(WebError):
    """A `[web]` setting that cannot be used."""


@dataclass(frozen=True)
class WebSettings:
    listen_host: str = "127.0.0.1"  # behind a TLS reverse proxy (README)
    listen_port: int = 8480
    state_dir: Path = Path("/var/lib/bastion-audit-web")  # tokens, sessions, key
    redeem_socket: Path = Path("/run/bastion-audit-web/redeem.sock")
    terminal_user: str = "bastion-term"  # shellinaboxd's service account
    terminal_url: str = "http://127.0.0.1:4200/"  # shown on the token page
    token_ttl_s: float = TOKEN_TTL_S
    session_idle_s: float = 900.0  # a signed-in page expires after this idle time
    pam_service: str = "audit-web"  # /etc/pam.d/audit-web, else PAM's "other"
    secure_cookies: bool = False  # true behind TLS: cookies only over https
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    trusted_origins: tuple[str, ...] = ()  # e.g. "https://bastion.example.org"
    failures_max: int = FAILURES_MAX  # failed sign-ins or redemptions per client
    failure_window_s: float = FAILURE_WINDOW_S


@dataclass(frozen=True)
class WebConfig:
    shell: ShellConfig
    web: WebSettings


def load_web_config(path: Path = DEFAULT_SHELL_CONFIG) -> WebConfig:
    """The inventory (as audit-shell reads it) and the `[web]` table."""
    shell = load_shell_config(path)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f).get("web", {})
    except (OSError, tomllib.TOMLDecodeError) as e:  # just read it once: a race
        raise WebConfigError(f"cannot read config file {path}: {e}") from e
    return WebConfig(shell, parse_web_settings(values, str(path)))


def parse_web_settings(values: Any, source: str) -> WebSettings:
    """The checked `[web]` table (pure); errors name the file and key."""
    if not isinstance(values, Mapping):
        raise WebConfigError(f"{source}: web must be a table")
    defaults = WebSettings()
    known = {f.name for f in fields(WebSettings)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{source}: web.{key}"
        if key not in known:
            raise WebConfigError(f"{where} is not a known key")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise WebConfigError(f"{where} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise WebConfigError(f"{where} must be a whole number >= 0")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WebConfigError(f"{where} must be a number of seconds")
            if not 1 <= value <= 86400:
                raise WebConfigError(f"{where} must be between 1 and 86400")
            value = float(value)
        elif isinstance(default, Path):
            if not isinstance(value, str) or not Path(value).is_absolute():
                raise WebConfigError(f"{where} must be an absolute path")
            value = Path(value)
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v for v in value
            ):
                raise WebConfigError(f"{where} must be a list of strings")
            value = tuple(value)
        elif not isinstance(value, str) or not value:
            raise WebConfigError(f"{where} must be a non-empty string")
        kwargs[key] = value
    return WebSettings(**kwargs)
