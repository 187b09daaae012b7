"""Alerts of the command rules: a webhook POST and/or a syslog line, retried.

The ingest hands an alert over and goes on (`send` never blocks: a full
queue drops the oldest, counted); the Alerter's own thread posts it, tries
again after 1, 2, 4 ... s (`[alert] webhook_backoff_s`, at most 60 s) up to
`webhook_tries` times, and reports each alert's outcome through
`on_outcome`, which the ingest turns into an action record. The body is
described by schema/alert.schema.json. A receiver that is away costs the
ingest nothing, and the status shows it (`snapshot`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.records import iso
from agent.rules import AlertSettings
from agent.syslog import (
    FACILITIES,
    SEVERITY_NOTICE,
    Sender,
    frame,
    local_format,
    parse_target,
    rfc5424,
)

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
BACKOFF_MAX_S = 60.0
RESPONSE_MAX_BYTES = 4096
USER_AGENT = "bastion-audit-alerts/1"


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule's match, to be sent: `body` is the webhook's JSON document."""

    identity: tuple[int, int]  # the session's ssh (pid, start ticks)
    rule: str
    command_seq: int
    body: dict[str, Any]


@dataclass
class AlertStats:
    sent: int = 0  # alerts every configured receiver took
    failed: int = 0  # given up after every try
    retries: int = 0
    dropped: int = 0  # the queue was full
    pending: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    last_ok_at: float | None = None


@dataclass(frozen=True, slots=True)
class AlertsSnapshot:
    to: str
    stats: dict[str, Any] = field(default_factory=dict)


Outcome = Callable[[Alert, bool, str], None]  # alert, delivered, detail


class Alerter:
    """Owns the alerts thread; a context manager that stops and joins it."""

    def __init__(self, settings: AlertSettings, on_outcome: Outcome) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.stats = AlertStats()
        self._queue: queue.Queue[Alert | None] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._syslog: Sender | None = None
        if settings.syslog:
            self._syslog = Sender(parse_target(settings.syslog))
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        to = []
        if self.settings.webhook:
            to.append(_safe_url(self.settings.webhook))
        if self.settings.syslog:
            to.append(self.settings.syslog)
        return " and ".join(to)

    def __enter__(self) -> Alerter:
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._syslog is not None:
            self._syslog.close()

    def send(self, alert: Alert) -> None:
        """Any thread, never blocks: the oldest alert goes if the queue is full."""
        while True:
            try:
                self._queue.put_nowait(alert)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    with self._lock:
                        self.stats.dropped += 1
        with self._lock:
            self.stats.pending = self._queue.qsize()

    def snapshot(self) -> AlertsSnapshot:
        with self._lock:
            stats = dict(self.stats.__dict__)
        stats["pending"] = self._queue.qsize()
        return AlertsSnapshot(self.description, stats)

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            alert = self._queue.get()
            if alert is None:
                break
            try:
                delivered, detail = self._deliver(alert)
            except Exception as e:  # the boundary of this thread
                log.exception("alert of rule %s failed", alert.rule)
                delivered, detail = False, f"{type(e).__name__}: {e}"
            with self._lock:
                self.stats.pending = self._queue.qsize()
                if delivered:
                    self.stats.sent += 1
                else:
                    self.stats.failed += 1
            self.on_outcome(alert, delivered, detail)

    def _deliver(self, alert: Alert) -> tuple[bool, str]:
        """Every receiver, each tried until it takes it or the tries run out."""
        details = []
        delivered = True
        data = json.dumps(alert.body, ensure_ascii=False).encode()
        if self.settings.syslog:
            ok, detail = self._tries(lambda: self._send_syslog(alert, data))
            delivered &= ok
            details.append(f"syslog {self.settings.syslog}: {detail}")
        if self.settings.webhook:
            ok, detail = self._tries(lambda: self._post(data))
            delivered &= ok
            details.append(f"webhook {_safe_url(self.settings.webhook)}: {detail}")
        return delivered, "; ".join(details)

    def _tries(self, attempt: Callable[[], str]) -> tuple[bool, str]:
        wait = self.settings.webhook_backoff_s
        error = ""
        for n in range(1, self.settings.webhook_tries + 1):
            try:
                result = attempt()
            except (OSError, http.client.HTTPException, _Refused) as e:
                error = str(e) or type(e).__name__
                self._failed(error)
            else:
                with self._lock:
                    self.stats.last_ok_at = time.time()
                return True, f"{result} (try {n})"
            if n == self.settings.webhook_tries or self._stop.wait(wait):
                break
            with self._lock:
                self.stats.retries += 1
            wait = min(wait * 2, BACKOFF_MAX_S)
        return False, f"gave up after {n} tries: {error}"

    def _failed(self, error: str) -> None:
        log.warning("alert not delivered: %s", error)
        with self._lock:
            self.stats.last_error = error[:200]
            self.stats.last_error_at = time.time()

    def _post(self, data: bytes) -> str:
        url = urllib.parse.urlsplit(self.settings.webhook)
        cls = (
            http.client.HTTPSConnection
            if url.scheme == "https"
            else http.client.HTTPConnection
        )
        conn = cls(url.netloc, timeout=self.settings.webhook_timeout_s)
        try:
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            conn.request(
                "POST",
                path,
                body=data,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
            )
            response = conn.getresponse()
            response.read(RESPONSE_MAX_BYTES)
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise _Refused(f"HTTP {response.status} {response.reason}")
        return f"HTTP {response.status}"

    def _send_syslog(self, alert: Alert, data: bytes) -> str:
        assert self._syslog is not None
        pri = FACILITIES[self.settings.syslog_facility] * 8 + SEVERITY_NOTICE
        now = time.time()
        msg = f"rule {alert.rule} matched: ".encode() + data
        if self._syslog.target.scheme == "unix":
            message = local_format(pri, now, os.getpid(), msg)
        else:
            message = rfc5424(
                pri, iso(now), str(alert.body.get("bastion", "-")), os.getpid(),
                "alert", msg,
            )  # fmt: skip
        self._syslog.send(frame(self._syslog.target, message))
        return "sent"


class _Refused(Exception):
    """The receiver answered, but not with a 2xx."""


def _safe_url(url: str) -> str:
    """The URL without its query, which may carry a token."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
