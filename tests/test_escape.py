"""Each output's escaping of hostile stored text (agent/escape.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from agent.escape import LogFormatter, csv_cell, json_dumps, json_string, printable


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("ls -l", "ls -l"),
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\r=1", "\\r=1"),  # escaped, so no longer a formula
        ("a\x1b[2Kb\x07", "a\\x1b[2Kb\\x07"),
        ("csi\x9b1A del\x7f", "csi\\x9b1A del\\x7f"),
        ("two\nlines\tand tab", "two\nlines\tand tab"),  # as a cell may hold them
        ("été 日本 \u200b", "été 日本 \u200b"),
        ("", ""),
    ],
)
def test_csv_cells_hold_no_control_and_no_formula(text: str, cell: str) -> None:
    assert csv_cell(text) == cell


def test_json_is_exact_and_holds_no_raw_control() -> None:
    text = "a\x1b b\x7f c\x85 d\x9b e\u2028 f\u2029 é 日"
    literal = json_string(text)
    assert json.loads(literal) == text
    assert literal == '"a\\u001b b\\u007f c\\u0085 d\\u009b e\\u2028 f\\u2029 é 日"'
    doc = json_dumps({"k": [text, 1, None]}, separators=(",", ":"))
    assert json.loads(doc) == {"k": [text, 1, None]}
    assert "\x7f" not in doc and "\x9b" not in doc and "\u2028" not in doc


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("ok é") == "ok é"
    assert printable("a\x1b]0;x\x07\x9b\u202e") == "a\\x1b]0;x\\x07\\x9b\\u202e"


def test_a_logged_name_cannot_start_a_line_of_its_own() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogFormatter("agent: %(levelname)s: %(message)s"))
    logger = logging.getLogger("test_escape")
    logger.addHandler(handler)
    try:
        logger.error("removed %s", "x\nagent: INFO: session s1 closed\r")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == (
        "agent: ERROR: removed x\\nagent: INFO: session s1 closed\\r\n"
    )
