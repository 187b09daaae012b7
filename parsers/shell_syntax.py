"""Does this command text need another line before bash will run it?

bash asks for a continuation line (PS2, `> `) when the text so far ends inside
quotes, after a backslash, inside a here-document, inside an unfinished
compound command (`for … do` without `done`, `if` without `fi`, `{` without
`}`, an open `(` or `$(`), or after `|`, `&&` or `||`. This is a small lexer
for exactly that question, not a shell parser: it never decides what a command
means, only whether bash would wait for more.
"""

from __future__ import annotations

import re

_OPENERS = {
    "if": "fi",
    "case": "esac",
    "for": "done",
    "while": "done",
    "until": "done",
    "select": "done",
    "{": "}",
}
_CLOSERS = {"fi", "esac", "done", "}"}
# After these words the next word is again in command position.
_RESTART = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"}
_OPERATORS = ("&&", "||", ";;", "|&", ";&", ";", "&", "|", "(", ")")
_HEREDOC_RE = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z0-9_.-]+)\2")


def needs_more(text: str) -> bool:
    """True when bash would show PS2 after reading `text`."""
    lexer = _Lexer(text)
    try:
        return lexer.run()
    except IndexError:
        return True


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.stack: list[str] = []  # closers we wait for
        self.command_position = True
        self.case_patterns = 0  # inside `case … in`, before `)` of a pattern
        self.heredocs: list[tuple[str, bool]] = []  # (word, strip tabs) pending
        self.last_token = ""

    def run(self) -> bool:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c == "\n":
                self.i += 1
                if self.heredocs and not self._read_heredocs():
                    return True
                self.command_position = True
                self.last_token = "\n"
                continue
            if c in " \t":
                self.i += 1
                continue
            if c == "\\":
                if self.i + 1 >= len(text):
                    return True  # a trailing backslash continues the line
                self.i += 2
                self.command_position = False
                continue
            if c == "#" and (self.i == 0 or text[self.i - 1] in " \t\n;&|()"):
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
                continue
            if text.startswith("<<<", self.i):
                self.i += 3  # a here-string: nothing more to read
                continue
            if text.startswith("<<", self.i):
                m = _HEREDOC_RE.match(text, self.i)
                if m:
                    self.heredocs.append((m.group(3), m.group(1) == "-"))
                    self.i = m.end()
                    continue
            if text.startswith("$(", self.i) and not text.startswith("$((", self.i):
                self.stack.append(")")
                self.i += 2
                self.command_position = True
                continue
            op = next((o for o in _OPERATORS if text.startswith(o, self.i)), None)
            if op is not None:
                self._operator(op)
                continue
            word = self._word()
            if word is None:
                return True  # an unterminated quote
            self._keyword(word)
        if self.heredocs:
            return True
        return bool(self.stack) or self.last_token in ("|", "&&", "||", "|&")

    def _operator(self, op: str) -> None:
        self.i += len(op)
        previous, self.last_token = self.last_token, op
        if op == "(":
            self.stack.append(")")
        elif op == ")":
            if self.case_patterns and self.stack and self.stack[-1] == "esac":
                self.case_patterns -= 1  # the end of a case pattern
            elif self.stack and self.stack[-1] == ")":
                self.stack.pop()
        elif op == ";;" or op == ";&":
            self.case_patterns += 1
        # `name()` is a function definition: its body follows.
        self.command_position = op != ")" or previous == "("

    def _word(self) -> str | None:
        text = self.text
        start = self.i
        out = []
        while self.i < len(text) and text[self.i] not in " \t\n;&|()<>":
            c = text[self.i]
            if c == "'":
                end = text.find("'", self.i + 1)
                if end < 0:
                    return None
                out.append(text[self.i : end + 1])
                self.i = end + 1
            elif c == "$" and text.startswith("$'", self.i):
                end = self._scan_escaped(self.i + 2, "'")
                if end < 0:
                    return None
                out.append(text[self.i : end + 1])
                self.i = end + 1
            elif c in '"`':
                end = self._scan_escaped(self.i + 1, c)
                if end < 0:
                    return None
                out.append(text[self.i : end + 1])
                self.i = end + 1
            elif c == "\\":
                if self.i + 1 >= len(text):
                    out.append(c)
                    self.i += 1
                    break
                out.append(text[self.i : self.i + 2])
                self.i += 2
            else:
                out.append(c)
                self.i += 1
        if self.i == start:
            self.i += 1  # a lone redirection character
            return text[start]
        return "".join(out)

    def _scan_escaped(self, i: int, quote: str) -> int:
        """Index of the closing quote, honouring backslashes; -1 if none."""
        text = self.text
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == quote:
                return i
            i += 1
        return -1

    def _keyword(self, word: str) -> None:
        self.last_token = word
        if (
            self.case_patterns
            and self.stack
            and self.stack[-1] == "esac"
            and word != "esac"
        ):
            self.command_position = False
            return
        if not self.command_position:
            if word == "in" and self.stack and self.stack[-1] == "esac":
                self.case_patterns += 1
            elif word in ("do", "then") and self.stack:
                self.command_position = True  # `for i in 1 2; do`, `if x; then`
            return
        if word in _OPENERS:
            self.stack.append(_OPENERS[word])
            self.command_position = word in _RESTART
            if word in ("for", "select", "case"):
                self.command_position = False
            return
        if word in _CLOSERS and self.stack and self.stack[-1] == word:
            self.stack.pop()
            if word == "esac":
                self.case_patterns = 0
            self.command_position = False
            return
        self.command_position = word in _RESTART or word.endswith("()")

    def _read_heredocs(self) -> bool:
        """Skip the bodies of pending here-documents; False if one is open."""
        while self.heredocs:
            word, strip = self.heredocs[0]
            while True:
                end = self.text.find("\n", self.i)
                line = self.text[self.i : end if end >= 0 else len(self.text)]
                if (line.lstrip("\t") if strip else line) == word:
                    self.i = len(self.text) if end < 0 else end + 1
                    self.heredocs.pop(0)
                    break
                if end < 0:
                    self.i = len(self.text)
                    return False
                self.i = end + 1
        return True
