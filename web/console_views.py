"""The console's pages: sessions, one session, command search, live, the access log.

Each page checks the viewer (web/console.py) first, has the agent log the
access, then reads the store (web/console_store.py, or the fleet's,
web/console_fleet.py, where a session's pages are /bastions/B/sessions/ID).
A session that is not the viewer's to see is a 403, whether or not it
exists. Terminate is a POST with a required reason, under the CSRF check
like every form; the agent cuts the session (agent/daemon/cuts.py) and logs
it itself, so only this bastion's sessions can be terminated here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from agent.access_log import AccessEntry, Action
from agent.control import REASON_MAX_CHARS, ControlError
from agent.fleet_config import BASTION_RE
from agent.records import Command, Session, SessionStatus
from web.console import (
    Viewer,
    client_of,
    console,
    log_refusal,
    logged,
    params,
    path_of,
    session_name,
    session_path,
    viewer_of,
)
from web.console_store import (
    Hit,
    Search,
    SearchError,
    SessionFilter,
    offset_s,
)
from web.text import inert_text

PAGE_SIZE = 50
FEED_MAX = 500  # commands per answer of a live page's feed
SEEK_LEAD_S = 1.0  # a command's moment: this long before its Enter
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.~-]{0,80}")
STATUSES = tuple(s.value for s in SessionStatus)
ORIGINS = ("audit-shell", "web-token", "direct")
RECORDERS = ("strace", "paramiko")
FILTERS = (
    "bastion",
    "bastion_user",
    "remote_user",
    "host",
    "since",
    "until",
    "status",
    "origin",
    "recorder",
    "text",
)


def forbidden(text: str = "not yours to see") -> HttpResponse:
    return HttpResponse(text + "\n", status=403, content_type="text/plain")


def who(request: HttpRequest) -> Viewer | HttpResponse:
    """The viewer, or where to send someone who is not one."""
    viewer = viewer_of(request)
    if viewer is not None:
        return viewer
    if request.session.get("user"):
        return forbidden("the console is for auditors here")
    return HttpResponseRedirect("/sign-in")


def visible_session(
    request: HttpRequest,
    sid: str,
    action: Action = Action.VIEW,
    bastion: str | None = None,
) -> tuple[Viewer, Session] | HttpResponse:
    """The viewer and the session, or the response that refuses them.

    A session that exists but is not the viewer's is logged as refused.
    """
    viewer = who(request)
    if isinstance(viewer, HttpResponse):
        return viewer
    if not SESSION_ID_RE.fullmatch(sid):
        return forbidden()
    if bastion is not None and not BASTION_RE.fullmatch(bastion):
        return forbidden()
    session = console().reader.session(sid, bastion)
    if session is None:
        return forbidden()
    if not viewer.may_see(session):
        log_refusal(request, viewer, action, session_name(session))
        return forbidden()
    return viewer, session


def admitted(
    request: HttpRequest,
    sid: str,
    action: Action,
    detail: str = "",
    bastion: str | None = None,
) -> tuple[Viewer, Session] | HttpResponse:
    """The viewer and the session, the access logged; or the refusal."""
    found = visible_session(request, sid, action, bastion)
    if isinstance(found, HttpResponse):
        return found
    refused = logged(request, found[0], action, session_name(found[1]), detail)
    return refused or found


def logged_viewer(
    request: HttpRequest, action: Action, detail: str = "", auditors_only: bool = False
) -> Viewer | HttpResponse:
    """The viewer, the access logged; or the refusal."""
    viewer = who(request)
    if isinstance(viewer, HttpResponse):
        return viewer
    if auditors_only and not viewer.auditor:
        return forbidden("this is for auditors")
    return logged(request, viewer, action, None, detail) or viewer


def page_offset(request: HttpRequest) -> int:
    try:
        return max(0, min(int(request.GET.get("offset", "0")), 10_000_000))
    except ValueError:
        return 0


def parse_when(text: str) -> float | None:
    """A time from the filter form (datetime-local, UTC) or ISO 8601."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def filter_of(
    request: HttpRequest, viewer: Viewer
) -> tuple[SessionFilter, dict[str, Any]]:
    given = params(request, *FILTERS)
    f = SessionFilter(
        bastion=given["bastion"] if BASTION_RE.fullmatch(given["bastion"]) else "",
        bastion_user=given["bastion_user"],
        remote_user=given["remote_user"],
        host=given["host"],
        since=parse_when(given["since"]),
        until=parse_when(given["until"]),
        status=given["status"] if given["status"] in STATUSES else "",
        origin=given["origin"] if given["origin"] in ORIGINS else "",
        recorder=given["recorder"] if given["recorder"] in RECORDERS else "",
        text=given["text"],
        owner=viewer.owner,
        owner_bastion=viewer.owner_bastion,
    )
    return f, given


def base_context(viewer: Viewer, **more: Any) -> dict[str, Any]:
    fleet = console().reader.fleet
    return {"user": viewer.name, "viewer": viewer, "nav": True, "fleet": fleet, **more}


@never_cache
@require_GET
def sessions(request: HttpRequest) -> HttpResponse:
    viewer = who(request)
    if isinstance(viewer, HttpResponse):
        return viewer
    f, given = filter_of(request, viewer)
    detail = " ".join(f"{k}={v}" for k, v in given.items() if v)
    refused = logged(request, viewer, Action.SEARCH, None, f"sessions {detail}".strip())
    if refused is not None:
        return refused
    offset = page_offset(request)
    page = console().reader.session_page(f, offset, PAGE_SIZE)
    query = urlencode({k: v for k, v in given.items() if v})
    context = base_context(
        viewer,
        page=page,
        rows=[session_row(s) for s in page.items],
        given=given,
        query=query,
        statuses=STATUSES,
        origins=ORIGINS,
        recorders=RECORDERS,
        errors=console().reader.errors,
        live_only=False,
    )
    return render(request, "sessions.html", context)


@never_cache
@require_GET
def live(request: HttpRequest) -> HttpResponse:
    viewer = logged_viewer(request, Action.SEARCH, "live sessions")
    if isinstance(viewer, HttpResponse):
        return viewer
    f = SessionFilter(
        status=SessionStatus.LIVE.value,
        owner=viewer.owner,
        owner_bastion=viewer.owner_bastion,
    )
    page = console().reader.session_page(f, page_offset(request), PAGE_SIZE)
    context = base_context(
        viewer,
        page=page,
        rows=[session_row(s) for s in page.items],
        given={},
        query="",
        errors=console().reader.errors,
        live_only=True,
    )
    return render(request, "sessions.html", context)


def session_row(s: Session) -> dict[str, Any]:
    end = s.ended_at
    return {
        "session": s,
        "url": session_path(s),
        "lasted": (end - s.started_at) if end is not None else None,
        "gaps": len(s.gaps),
    }


def command_rows(session: Session, commands: list[Command]) -> list[dict[str, Any]]:
    rows = []
    for c in commands:
        at = offset_s(c, session)
        rows.append(
            {
                "command": c,
                "offset": at,
                "seek": round(max(0.0, at - SEEK_LEAD_S), 3),
                "risks": console().risks(c.command),
            }
        )
    return rows


@never_cache
@require_GET
def session_page(
    request: HttpRequest, sid: str, bastion: str | None = None
) -> HttpResponse:
    found = admitted(request, sid, Action.VIEW, bastion=bastion)
    if isinstance(found, HttpResponse):
        return found
    viewer, session = found
    rows = command_rows(session, console().reader.session_commands(session))
    base = session_path(session)
    markers = [
        [
            row["offset"],
            f"#{row['command'].seq} {inert_text(row['command'].command)[:60]}",
        ]
        for row in rows
    ]
    live = session.status == SessionStatus.LIVE
    context = base_context(
        viewer,
        session=session,
        base=base,
        rows=rows,
        live=live,
        terminable=live and viewer.auditor and console().may_terminate(session),
        player={
            "cast": f"{base}/cast",
            "live": f"{base}/live",
            "feed": f"{base}/feed",
            "markers": markers,
            "lead": SEEK_LEAD_S,
            "isLive": session.status == SessionStatus.LIVE,
            "last": rows[-1]["command"].seq if rows else 0,
        },
        reason_max=REASON_MAX_CHARS,
        gaps=session.public_fields()["gaps"],
        notice=request.session.pop("notice", ""),
    )
    return render(request, "session.html", context)


@never_cache
@require_GET
def feed(request: HttpRequest, sid: str, bastion: str | None = None) -> HttpResponse:
    """A live session's commands past `after`, for its open page (logged by it)."""
    found = visible_session(request, sid, bastion=bastion)
    if isinstance(found, HttpResponse):
        return found
    _, session = found
    try:
        after = max(0, int(request.GET.get("after", "0")))
    except ValueError:
        after = 0
    reader = console().reader
    rows = command_rows(session, reader.session_commands(session, after)[:FEED_MAX])
    new = [
        {
            "seq": r["command"].seq,
            "time": r["command"].time,
            "offset": round(r["offset"], 3),
            "command": inert_text(r["command"].command),
            "kind": str(r["command"].kind),
            "risks": r["risks"],
        }
        for r in rows
    ]
    current = reader.session(session.id, session.bastion) or session
    return JsonResponse(
        {"commands": new, "status": current.status, "end_reason": current.end_reason}
    )


@never_cache
@require_POST
def terminate(
    request: HttpRequest, sid: str, bastion: str | None = None
) -> HttpResponse:
    found = visible_session(request, sid, bastion=bastion)
    if isinstance(found, HttpResponse):
        return found
    viewer, session = found
    if not viewer.auditor:
        return forbidden("only auditors terminate sessions")
    if not console().may_terminate(session):
        return forbidden(
            f"this session runs on bastion {session.bastion}: terminate it from "
            "that bastion's console"
        )
    reason = request.POST.get("reason", "").strip()[:REASON_MAX_CHARS]
    if not reason:
        return HttpResponse(
            "a reason is required\n", status=400, content_type="text/plain"
        )
    try:
        reply = console().control.terminate(
            session.id, viewer.name, reason, client_of(request)
        )
        message = reply.message
    except ControlError as e:
        message = str(e)
    request.session["notice"] = message[:300]
    return HttpResponseRedirect(session_path(session))


def search_of(request: HttpRequest, viewer: Viewer) -> tuple[Search, dict[str, Any]]:
    given = params(request, "q", "mode", "bastion")
    regex = given["mode"] == "regex"
    bastion = given["bastion"] if BASTION_RE.fullmatch(given["bastion"]) else ""
    search = Search(given["q"], regex, viewer.owner, bastion, viewer.owner_bastion)
    return search, given


@never_cache
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    viewer = who(request)
    if isinstance(viewer, HttpResponse):
        return viewer
    q, given = search_of(request, viewer)
    page = None
    error = ""
    if q.text:
        refused = logged(
            request, viewer, Action.SEARCH, None, f"{given['mode'] or 'text'}: {q.text}"
        )
        if refused is not None:
            return refused
        try:
            page = console().reader.search(q, page_offset(request), PAGE_SIZE)
        except SearchError as e:
            error = str(e)
    context = base_context(
        viewer,
        given=given,
        page=page,
        hits=[hit_row(h) for h in page.items] if page else [],
        error=error,
        query=urlencode({k: v for k, v in given.items() if v}),
    )
    return render(request, "search.html", context)


def hit_row(hit: Hit) -> dict[str, Any]:
    session = hit.session
    at = offset_s(hit.command, session) if session else 0.0
    return {
        "command": hit.command,
        "session": session,
        "url": session_path(session) if session else "",
        "seek": round(max(0.0, at - SEEK_LEAD_S), 3),
        "risks": console().risks(hit.command.command),
    }


@never_cache
@require_GET
def access_log(request: HttpRequest) -> HttpResponse:
    viewer = logged_viewer(request, Action.ACCESS_LOG, auditors_only=True)
    if isinstance(viewer, HttpResponse):
        return viewer
    page = console().reader.access_page(page_offset(request), PAGE_SIZE)
    rows = [{"entry": e, "url": access_target(e)} for e in page.items]
    return render(request, "access.html", base_context(viewer, page=page, rows=rows))


def access_target(entry: AccessEntry) -> str:
    """The page of the session an entry names (BASTION/ID from a fleet console)."""
    if not entry.session:
        return ""
    bastion, _, sid = entry.session.rpartition("/")
    bastion = bastion or entry.bastion or ""
    if not SESSION_ID_RE.fullmatch(sid) or (
        bastion and not BASTION_RE.fullmatch(bastion)
    ):
        return ""
    if console().reader.fleet != bool(bastion):
        return ""  # a session of the other store: this console has no page for it
    return path_of(sid, bastion or None)
