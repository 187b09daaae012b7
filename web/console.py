"""The console's parts for every request: who is asking, what they may see, the log.

Two roles: an auditor (a member of `auditor_group`, looked up at every
request, so that leaving the group takes effect at once) sees every
session; anyone else signed in sees only the sessions whose bastion user
they are, or nothing (`own_sessions = false`); over the fleet store, only
those of this bastion (its `[fleet] bastion`), where the sign-in vouched
for them. Every view, replay, export, search and read of the access log is
logged by this bastion's agent (agent/control.py) before anything is shown:
when the agent cannot take the entry, nothing is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agent.access_log import Action
from agent.config import ConfigError, load_config
from agent.control import ControlClient, ControlError
from agent.export_record import Stamp
from agent.highlight import HighlightRule, active_rules
from agent.inventory import groups_of
from agent.records import Session
from agent.web_config import WebConfig
from web import WebError
from web.console_store import ConsoleReader, LocalReader

log = logging.getLogger(__name__)

SIGNED_IN = "user"
SIGNED_IN_AT = "since"
AUDITOR, USER = "auditor", "user"


class ConsoleError(WebError):
    """The console cannot start: the agent's configuration is unusable."""


@dataclass(frozen=True)
class Console:
    """What the console's views share: the store, the agent, the rules.

    `home`: this bastion's id in the fleet, when the console reads the
    fleet store (`[web.fleet]`); None when it reads this bastion's own.
    """

    reader: ConsoleReader
    control: ControlClient
    rules: tuple[HighlightRule, ...]
    data_dir: Path
    stamp: Stamp  # every record's bastion and risk, as the agent's config says
    home: str | None = None

    @classmethod
    def from_config(cls, config: WebConfig) -> Console:
        path = config.web.agent_config
        try:
            # No agent.toml (a bastion with the defaults): the default data_dir.
            agent = load_config(path if path.exists() else None)
        except ConfigError as e:
            raise ConsoleError(str(e)) from e
        fleet = config.web.fleet
        reader: ConsoleReader = LocalReader(agent.data_dir)
        if fleet.enabled:
            from web.console_fleet import FleetConsole  # psycopg, only if asked

            reader = FleetConsole(fleet)
            if not agent.fleet.enabled:
                log.warning(
                    "the console reads the fleet store, but the agent (%s) ships "
                    "nothing to it: this console's access log stays on this bastion",
                    path,
                )
        return cls(
            reader=reader,
            control=ControlClient(agent.control_path),
            rules=active_rules(agent.highlight, agent.highlight_builtin),
            data_dir=agent.data_dir,
            stamp=Stamp.of(agent),
            home=agent.fleet.bastion_id if fleet.enabled else None,
        )

    def risks(self, command: str) -> list[str]:
        return list(self.stamp.risk(command))

    def may_terminate(self, session: Session) -> bool:
        """This bastion's agent can cut it: a session of this bastion."""
        return self.home is None or session.bastion == self.home


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    auditor: bool
    home: str | None = None  # the fleet's: a non-auditor's sessions are here

    @property
    def role(self) -> str:
        return AUDITOR if self.auditor else USER

    @property
    def owner(self) -> str | None:
        """Whose sessions this viewer is limited to (None: everyone's)."""
        return None if self.auditor else self.name

    @property
    def owner_bastion(self) -> str | None:
        """On which bastion (fleet store; None: this bastion's own store)."""
        return None if self.auditor else self.home

    def may_see(self, session: Session) -> bool:
        if self.auditor:
            return True
        return session.bastion_user == self.name and (
            self.home is None or session.bastion == self.home
        )


def session_path(session: Session) -> str:
    """The session's pages: /sessions/ID, or /bastions/B/sessions/ID (fleet)."""
    return path_of(session.id, session.bastion)


def path_of(sid: str, bastion: str | None) -> str:
    path = "/sessions/" + quote(sid, safe="")
    return path if bastion is None else "/bastions/" + quote(bastion, safe="") + path


def session_name(session: Session) -> str:
    """The session as the access log names it: ID, or BASTION/ID (fleet)."""
    return f"{session.bastion}/{session.id}" if session.bastion else session.id


def web_config() -> WebConfig:
    config: WebConfig = settings.BASTION_WEB
    return config


def console() -> Console:
    value: Console = settings.BASTION_CONSOLE
    return value


def signed_in(request: HttpRequest) -> str | None:
    """The signed-in user, unless the sign-in is older than session_max_s."""
    user = request.session.get(SIGNED_IN)
    since = request.session.get(SIGNED_IN_AT)
    if not user or not isinstance(since, (int, float)):
        return None
    if time.time() - since > web_config().web.session_max_s:
        request.session.flush()
        return None
    return str(user)


def viewer_of(request: HttpRequest) -> Viewer | None:
    """Who is asking, and in which role; None if they may not use the console."""
    user = signed_in(request)
    if user is None:
        return None
    web = web_config().web
    home = console().home
    if web.auditor_group in groups_of(user):
        return Viewer(user, True, home)
    return Viewer(user, False, home) if web.own_sessions else None


def client_of(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "?")


def logged(
    request: HttpRequest,
    viewer: Viewer,
    action: Action,
    session: str | None = None,
    detail: str = "",
) -> HttpResponse | None:
    """Have the agent log this access; a 503 page if it cannot (nothing shown)."""
    try:
        reply = console().control.access(
            viewer.name, viewer.role, action.value, session, detail, client_of(request)
        )
    except ControlError as e:
        log.error("access log: %s", e)
        reply = None
    if reply is not None and reply.ok:
        return None
    why = reply.message if reply is not None else "the agent cannot be reached"
    log.error("access by %s not logged: %s", viewer.name, why)
    return HttpResponse(
        "The access log cannot take this entry now (" + why + "), so nothing is "
        "shown. Is the agent running?\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )


def log_refusal(
    request: HttpRequest, viewer: Viewer, action: Action, session: str
) -> None:
    """Log an attempt on a session that is not the viewer's (the 403 stands)."""
    try:
        console().control.access(
            viewer.name,
            viewer.role,
            action.value,
            session,
            "refused: not theirs to see",
            client_of(request),
            ok=False,
        )
    except ControlError as e:
        log.error("access log: %s", e)


def params(request: HttpRequest, *names: str) -> dict[str, Any]:
    """The query parameters asked for, as one-line text of bounded length."""
    return {n: request.GET.get(n, "").strip()[:200] for n in names}
