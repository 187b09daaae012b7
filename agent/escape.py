"""Stored text is hostile: how each output writes it.

A command, a remote command, a host or a user name is what a bastion user
typed or put in ssh's argv (`ssh host $'\\e]0;x\\a\\u009b…'`), and reaches an
operator's terminal, a spreadsheet, a JSON consumer or a log. Each output has
one function here:

- printable(): a terminal (audit-tail, audit-sessions, status) and log lines:
  every unprintable character as its Python escape (`\\x1b`, `\\u200b`).
- json_text(), json_string(), json_dumps(): JSON and JSON Lines stay exact,
  with DEL, the C1 controls and U+2028/U+2029 escaped as well (json escapes
  only C0): a raw U+009B is a CSI to a terminal that `cat`s the file, and
  U+0085, U+2028 and U+2029 end lines for readers that split on them.
- csv_cell(): CSV, written to be shown: C0 controls but tab and newline, DEL
  and C1 as Python escapes, and a cell a spreadsheet would take for a formula
  (`=`, `+`, `-`, `@`, tab first) with a `'` in front.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

_JSON_EXTRA = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")
_CSV_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
FORMULA_START = frozenset("=+-@\t")  # OWASP's list; CR is escaped before
_encode_basestring = json.encoder.encode_basestring  # C, with ensure_ascii off


def printable(text: str) -> str:
    """Escape unprintable characters, so that stored text cannot drive a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def json_text(text: str) -> str:
    """JSON text (json.dumps with ensure_ascii off) with DEL, C1, U+2028/9 escaped.

    Outside strings JSON text is ASCII without DEL, so these characters are
    all inside strings, where `\\u009b` means what a raw U+009B does.
    """
    if text.isascii():
        return text.translate(_JSON_EXTRA) if "\x7f" in text else text
    return text.translate(_JSON_EXTRA) if _JSON_UNSAFE.search(text) else text


def json_string(text: str) -> str:
    """`text` as a JSON string literal, quotes included."""
    return json_text(_encode_basestring(text))


def json_dumps(value: Any, **options: Any) -> str:
    """json.dumps, UTF-8 kept, no raw control character (json_text)."""
    return json_text(json.dumps(value, ensure_ascii=False, **options))


def csv_cell(text: str) -> str:
    """One CSV cell's text: controls escaped, a formula defused."""
    if not text.isprintable() and _CSV_UNSAFE.search(text):
        text = _CSV_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)
    if text[:1] in FORMULA_START:
        return "'" + text
    return text


class LogFormatter(logging.Formatter):
    """One line per message: what a message quotes cannot start another line.

    A spool file named `x\\naudit-agent: INFO: session … closed` would
    otherwise forge a line of the agent's log. Tracebacks are left as they are.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = printable(record.message)
        return super().formatMessage(record)
