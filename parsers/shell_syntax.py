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
    lexer = Lexer()
    more = False
    for n, part in enumerate(text.split("\n")):
        more = lexer.feed(part, first=n == 0)
    return more


class Lexer:
    """Reads a command one line at a time, carrying its state between lines.

    Each line is lexed once: an open quote, here-document or compound
    command is resumed where the previous line left it, so a command of N
    lines costs O(N) whatever is left open (issue 16: re-lexing every held
    line at each new one was cubic).
    """

    def __init__(self) -> None:
        self.text = ""
        self.i = 0
        self.stack: list[str] = []  # closers we wait for
        self.command_position = True
        self.case_patterns = 0  # inside `case … in`, before `)` of a pattern
        self.heredocs: list[tuple[str, bool]] = []  # (word, strip tabs) pending
        self.last_token = ""
        # A word cut by the end of the text (an open quote, a trailing
        # backslash): its pieces so far, where it began, the quote it is in.
        self.word: list[str] | None = None
        self.word_start = 0
        self.quote: str | None = None
        self.quote_start = 0
        self.continued = False  # the last line ended in an escaping backslash

    def feed(self, line: str, first: bool = False) -> bool:
        """Add one line (without its newline); True while bash would want more."""
        # What is behind the scan is never read again (one character is, for
        # `#`): dropping it keeps appending a line O(line).
        cut = max(0, self.i - 1)
        if cut:
            self.text = self.text[cut:]
            self.i -= cut
            self.word_start -= cut
            self.quote_start -= cut
        self.text += line if first else "\n" + line
        try:
            more = self._run()
        except IndexError:
            more = True
        self.continued = more and self._ends_in_escape()
        return more

    def _ends_in_escape(self) -> bool:
        """A backslash escapes the newline outside single quotes (bash drops both)."""
        if self.quote in ("'", "$'"):
            return False
        stripped = self.text.rstrip("\\")
        return (len(self.text) - len(stripped)) % 2 == 1

    def _run(self) -> bool:
        text = self.text
        if self.word is not None:
            word = self._word()
            if word is None:
                return True
            self._keyword(word)
        while self.i < len(text):
            c = text[self.i]
            if c == "\n":
                if self.heredocs:
                    # Resumed here while a body is still open: read on.
                    self.i += 1
                    if not self._read_heredocs():
                        return True
                else:
                    self.i += 1
                self.command_position = True
                self.last_token = "\n"
                continue
            if c in " \t":
                self.i += 1
                continue
            if c == "\\" and self.i + 1 >= len(text):
                return True  # a trailing backslash continues the line
            if c == "\\":
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
        """The word at `i`, or None (state kept) if the text ends inside it."""
        text = self.text
        if self.word is None:
            self.word = []
            self.word_start = self.i
        out = self.word
        while True:
            if self.quote is not None:
                end = self._close_quote()
                if end < 0:
                    return None
                out.append(text[self.quote_start : end + 1])
                self.i = end + 1
                self.quote = None
                continue
            if self.i >= len(text) or text[self.i] in " \t\n;&|()<>":
                break
            c = text[self.i]
            if c == "'" or c in '"`':
                self.quote, self.quote_start = c, self.i
                self.i += 1
            elif c == "$" and text.startswith("$'", self.i):
                self.quote, self.quote_start = "$'", self.i
                self.i += 2
            elif c == "\\":
                if self.i + 1 >= len(text):
                    return None  # a trailing backslash: the word goes on
                out.append(text[self.i : self.i + 2])
                self.i += 2
            else:
                out.append(c)
                self.i += 1
        self.word = None
        if self.i == self.word_start:
            self.i += 1  # a lone redirection character
            return text[self.word_start]
        return "".join(out)

    def _close_quote(self) -> int:
        """Index of the quote that closes the open one; -1 (resumable) if none yet."""
        text = self.text
        if self.quote == "'":
            end = text.find("'", self.i)
            if end < 0:
                self._word_piece(text[self.quote_start :])
                self.quote_start = self.i = len(text)
            else:
                self.i = end
            return end
        quote = "'" if self.quote == "$'" else self.quote or '"'
        i = self.i
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == quote:
                self.i = i
                return i
            i += 1
        # Keep what the quote holds so far; the scan resumes at the end (past
        # it after a trailing backslash, whose newline it escapes).
        self._word_piece(text[self.quote_start :])
        self.quote_start = len(text)
        self.i = i
        return -1

    def _word_piece(self, piece: str) -> None:
        if self.word is not None:
            self.word.append(piece)

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
