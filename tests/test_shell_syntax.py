"""When bash asks for a continuation line, checked against bash itself."""

from __future__ import annotations

import subprocess

import pytest

from parsers.shell_syntax import needs_more

CASES = [
    ("echo one", False),
    ("", False),
    ("echo one \\", True),
    ("echo one \\\ntwo", False),
    ('echo "open', True),
    ('echo "open\nclosed"', False),
    ("echo 'it''s'", False),
    ("echo 'open", True),
    ("echo $'a\\'b'", False),
    ("echo `date", True),
    ("cat <<EOF", True),
    ("cat <<EOF\nalpha\nbeta", True),
    ("cat <<EOF\nalpha\nEOF", False),
    ("cat <<-'END'\n\tx\n\tEND", False),
    ("cat <<< here-string", False),
    ("for i in 1 2 3", True),
    ("for i in 1 2 3\ndo", True),
    ("for i in 1 2 3\ndo\necho $i\ndone", False),
    ("for i in 1 2; do echo $i; done", False),
    ("echo done", False),
    ("echo for if while", False),
    ("if true; then", True),
    ("if true; then\necho yes\nfi", False),
    ("while read x; do echo $x; done < f", False),
    ("greet() {", True),
    ("greet() {\necho hi\n}", False),
    ("{ echo a; echo b; }", False),
    ("{ echo a", True),
    ("(cd /tmp", True),
    ("(cd /tmp; ls)", False),
    ("echo $(date", True),
    ("echo $(date)", False),
    ("echo $((1 + 2))", False),
    ("ls |", True),
    ("ls | wc -l", False),
    ("true &&", True),
    ("false ||\necho x", False),
    ("case $x in", True),
    ("case $x in a) echo a;; b) echo b;; esac", False),
    ("case $x in\na) echo a;;\nesac", False),
    ("echo # comment with ' quote", False),
    ("echo a#b 'c", True),
    ("ls -d !$", False),
]


@pytest.mark.parametrize(("text", "more"), CASES)
def test_needs_more(text: str, more: bool) -> None:
    assert needs_more(text) is more


@pytest.mark.parametrize(
    ("text", "more"), [c for c in CASES if not c[0].endswith("\\")]
)
def test_agrees_with_bash(text: str, more: bool) -> None:
    """bash -n complains of an early end exactly when it would want more.

    (A trailing backslash is left out: at the end of a script bash drops it.)
    """
    result = subprocess.run(
        ["bash", "-n"], input=text + "\n", capture_output=True, text=True
    )
    early_end = ("unexpected end of file", "unexpected EOF", "here-document")
    assert any(m in result.stderr for m in early_end) is more, result.stderr


def test_a_backslash_ending_a_word_continues_the_line() -> None:
    assert needs_more("echo one\\") is True
    assert needs_more("echo one\\\ntwo") is False


def test_lines_are_lexed_once_with_the_state_carried() -> None:
    from parsers.shell_syntax import Lexer

    lexer = Lexer()
    assert lexer.feed('echo "open', first=True) is True
    for _ in range(1000):
        assert lexer.feed("x" * 70) is True
    assert lexer.feed('closed"') is False
    assert len(lexer.text) < 200  # what is behind the scan is dropped
