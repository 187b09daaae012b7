"""audit-web's settings: the `[web]` table of audit-shell's configuration file.

One file holds the inventory, the grants and both front ends' settings, so
that the web page offers exactly the hosts the login shell would. audit-web
reads it, and so does the web terminal's token login (agent/shell/). The
console reads the agent's own agent.toml (`agent_config`) for where the store
and the control socket are, and for the highlight rules.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.config import DEFAULT_CONFIG_PATH, host_name
from agent.fleet_config import FleetConfig, check_database, check_password_file
from agent.inventory import DEFAULT_SHELL_CONFIG, ShellConfig, load_shell_config
from agent.toml_table import Where, read_toml, table

TOKEN_TTL_S = 300.0
FAILURES_MAX = 5  # failed sign-ins or redemptions per client ...
FAILURE_WINDOW_S = 300.0  # ... in this window, then refused until they age out


class WebConfigError(AgentError):
    """A `[web]` setting that cannot be used."""


@dataclass(frozen=True)
class WebFleet:
    """`[web.fleet]`: the console over the fleet store; off without database.

    A libpq connection string of a role in bastion_audit_auditor (it may only
    read), its password from `password_file` (audit-web's, 0600) or libpq's
    environment (PGPASSWORD, PGPASSFILE, ~/.pgpass), never in the string.
    """

    database: str = ""
    password_file: Path | None = None
    connect_timeout_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.database)

    def fleet_config(self) -> FleetConfig:
        """The settings agent/fleet_db.py connects with."""
        return FleetConfig(
            database=self.database,
            password_file=self.password_file,
            connect_timeout_s=self.connect_timeout_s,
        )


def web_fleet_table(value: Any, where: Where) -> WebFleet:
    return table(
        WebFleet,
        value,
        where,
        limits={"connect_timeout_s": (1.0, 300.0)},
        checks={"database": check_database, "password_file": check_password_file},
    )


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
    # The console (README: the auditors' console).
    agent_config: Path = DEFAULT_CONFIG_PATH  # data_dir, control socket, highlight
    auditor_group: str = "bastion-auditors"  # its members see every session
    own_sessions: bool = True  # others see their own sessions; false: none
    session_max_s: float = 28800.0  # a sign-in lasts at most this, idle or not
    bastion: str = ""  # the name the pages give this bastion; "": the host name
    fleet: WebFleet = WebFleet()  # [web.fleet]: read the fleet store instead

    @property
    def bastion_name(self) -> str:
        return self.bastion or socket.gethostname().split(".")[0]


@dataclass(frozen=True)
class WebConfig:
    shell: ShellConfig
    web: WebSettings


def load_web_config(path: Path = DEFAULT_SHELL_CONFIG) -> WebConfig:
    """The inventory (as audit-shell reads it) and the `[web]` table."""
    shell = load_shell_config(path)
    values = read_toml(path, WebConfigError).get("web", {})
    return WebConfig(shell, parse_web_settings(values, str(path)))


def parse_web_settings(values: Any, source: str) -> WebSettings:
    """The checked `[web]` table (pure); errors name the file and key."""
    where = Where(source, error_class=WebConfigError).at("web")
    return table(
        WebSettings,
        values,
        where,
        limits={"*": (1, 86400)},
        checks={"bastion": host_name, "fleet": web_fleet_table},
    )
