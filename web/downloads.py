"""What the console hands out: recordings, commands as JSON or CSV, search results.

Each download is logged (an export; the recording played in the page is a
replay) before a byte goes out, is an attachment with `nosniff`, and a CSV
cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
leading `'`, so that a spreadsheet shows a stored command instead of running
it as a formula (OWASP's CSV injection advice).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agent.access_log import Action
from agent.casts import CastError
from agent.export_record import FIELDS, flat_record
from agent.records import Session
from web.console import console, logged
from web.console_store import SearchError
from web.console_views import admitted, search_of, who

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SEARCH_CSV_MAX_ROWS = 100_000


def formula_safe(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text (README: the console's downloads)."""
    text = "" if value is None else str(value)
    if isinstance(value, list):  # risk: the rules' names, as audit-export's CSV
        text = " ".join(str(v) for v in value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(rows: Iterable[dict[str, Any]], fields: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(fields)
    for row in rows:
        writer.writerow([formula_safe(row.get(f)) for f in fields])
    return out.getvalue()


def attachment(body: str | bytes, name: str, content_type: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def file_name(session: Session) -> str:
    """ID, or BASTION-ID (fleet): letters, digits and . _ ~ - only (both are)."""
    return f"{session.bastion}-{session.id}" if session.bastion else session.id


@never_cache
@require_GET
def cast(request: HttpRequest, sid: str, bastion: str | None = None) -> HttpResponse:
    """The recording: for the player (a replay) or, with ?download=1, a file."""
    download = request.GET.get("download") == "1"
    action = Action.EXPORT if download else Action.REPLAY
    found = admitted(request, sid, action, "cast", bastion)
    if isinstance(found, HttpResponse):
        return found
    _, session = found
    try:
        data = console().reader.recording(session)
    except CastError as e:
        return HttpResponse(f"{e}\n", status=404, content_type="text/plain")
    if download:
        name = f"{file_name(session)}.cast"
        return attachment(data, name, "application/x-asciicast")
    return HttpResponse(data, content_type="application/x-asciicast")


@never_cache
@require_GET
def commands(
    request: HttpRequest, sid: str, fmt: str, bastion: str | None = None
) -> HttpResponse:
    found = admitted(request, sid, Action.EXPORT, f"commands.{fmt}", bastion)
    if isinstance(found, HttpResponse):
        return found
    _, session = found
    stamp = console().stamp
    stored = console().reader.session_commands(session)
    records = [flat_record(c, session, stamp) for c in stored]
    name = file_name(session)
    if fmt == "json":
        body = json.dumps(records, ensure_ascii=False, indent=1)
        return attachment(body, f"{name}.json", "application/json")
    return attachment(csv_text(records, FIELDS), f"{name}.csv", "text/csv")


@never_cache
@require_GET
def search_csv(request: HttpRequest) -> HttpResponse:
    viewer = who(request)
    if isinstance(viewer, HttpResponse):
        return viewer
    q, given = search_of(request, viewer)
    refused = logged(
        request,
        viewer,
        Action.EXPORT,
        None,
        f"search.csv {given['mode'] or 'text'}: {q.text}",
    )
    if refused is not None:
        return refused
    try:
        page = console().reader.search(q, 0, SEARCH_CSV_MAX_ROWS)
    except SearchError as e:
        return HttpResponse(f"{e}\n", status=400, content_type="text/plain")
    stamp = console().stamp
    rows = [flat_record(h.command, h.session, stamp) for h in page.items]
    response = attachment(csv_text(rows, FIELDS), "search.csv", "text/csv")
    if page.stopped:
        response["X-Search-Stopped"] = "deadline"  # the rows found in time
    return response
