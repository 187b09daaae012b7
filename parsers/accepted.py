"""What an accepted line becomes: a command, a program's input, hidden input.

Who read it is parsers/programs.py's call, from the prompt it was typed at
and the last command the shell ran (the foreground). A command with a
history designator (`!!`) waits for the expansion bash prints: that is what
ran, and what was typed is kept beside it. Keys typed and Enter at a shell
prompt that showed nothing are hidden input: a count, never the keys.
"""

from __future__ import annotations

import re
from dataclasses import replace

from parsers.events import Checkpoint, CommandLine, LineKind
from parsers.history_expansion import expansion_prefix, plausible_expansion
from parsers.keys import KeyLine
from parsers.programs import Reader, looks_like_shell_prompt, reader_of

MAX_SHELL_PROMPTS = 8
MAX_PROMPT_CHARS = 256
EXPANSION_BYTES = 8192  # output looked at for the expansion bash prints
_FC_RE = re.compile(
    r"\s*fc(\s+(?!-\w*l)\S.*)?\Z", re.S
)  # fc opens an editor; fc -l lists
_ESCAPES_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)"
)


class AcceptedLines:
    """One session's accepted lines, sorted by who read them."""

    def __init__(
        self,
        foreground: str | None = None,
        shell_prompts: tuple[str, ...] = (),
        readline: bool = False,
    ) -> None:
        self.foreground = foreground  # the last command the shell ran
        self.shell_prompts = shell_prompts  # the prompts its lines came at
        self.readline = readline  # the shell's last line came with the markers
        self.expanding: tuple[CommandLine, bytearray] | None = None
        self.cancelled = False  # Ctrl-C since the last command line
        # Ctrl-X Ctrl-E or `fc`: bash prints the command it runs after the
        # editor; the output until then is collected here.
        self.edited: tuple[Checkpoint, bytearray, CommandLine | None] | None = None

    def reader(self, prompt: str, markers: bool) -> Reader:
        return reader_of(
            prompt, markers, self.foreground, self.shell_prompts, self.readline
        )

    def accept(
        self,
        text: str,
        prompt: str,
        reader: Reader,
        time: float,
        resume: Checkpoint,
        lines: list[CommandLine],
        markers: bool,
    ) -> None:
        if reader is Reader.PROGRAM:
            if text:
                lines.append(
                    CommandLine(
                        time,
                        text,
                        prompt,
                        resume,
                        kind=LineKind.INPUT,
                        program=self.foreground,
                    )
                )
            return
        self.readline = markers
        if prompt.strip() and prompt[-MAX_PROMPT_CHARS:] not in self.shell_prompts:
            known = (*self.shell_prompts, prompt[-MAX_PROMPT_CHARS:])
            self.shell_prompts = known[-MAX_SHELL_PROMPTS:]
        if not text:
            return
        self.foreground = text
        line = CommandLine(time, text, prompt, resume, after_cancel=self.cancelled)
        self.cancelled = False
        if _FC_RE.match(text):
            # bash keeps the edited command in its history, not `fc`: so do
            # we, with `fc` as what was typed.
            self.edited = (resume, bytearray(), line)
            return
        if expansion_prefix(text) is not None:
            self.expanding = (line, bytearray())
        else:
            lines.append(line)

    def unseen(
        self,
        keys: KeyLine,
        prompt: str,
        time: float,
        resume: Checkpoint,
        lines: list[CommandLine],
    ) -> None:
        """Keys typed and Enter, nothing echoed: a secret, or hidden shell input."""
        reader = self.reader(prompt, markers=False)
        if reader is Reader.PROGRAM or not looks_like_shell_prompt(prompt):
            return  # a password prompt: never stored
        lines.append(
            CommandLine(
                time,
                "",
                prompt,
                resume,
                kind=LineKind.HIDDEN_INPUT,
                keys=keys.printable,
            )
        )

    def edit_started(self, resume: Checkpoint) -> None:
        """An editor opens on a command; bash runs what it holds after."""
        self.edited = (resume, bytearray(), None)

    def output(
        self, data: bytes, time: float, lines: list[CommandLine], full_screen: bool
    ) -> None:
        """Output after a line with a designator: bash prints the expansion first.

        After an edit (Ctrl-X Ctrl-E, `fc`), the first line printed once the
        editor is gone (not on its full screen) is the command bash runs.
        """
        if self.expanding is not None:
            self.expanding[1].extend(data[:EXPANSION_BYTES])
            self.expanded(lines, final=False)
        if self.edited is not None and not full_screen:
            self.edited[1].extend(data[:EXPANSION_BYTES])
            self.edit_done(time, lines, final=False)

    def edit_done(self, time: float, lines: list[CommandLine], final: bool) -> None:
        if self.edited is None:
            return
        resume, printed, typed = self.edited
        first, newline, _ = bytes(printed).lstrip(b"\r\n").partition(b"\n")
        if not newline and not final and len(printed) < EXPANSION_BYTES:
            return
        self.edited = None
        text = _printed_line(first)
        if newline and text:
            self.foreground = text
            if typed is None:
                lines.append(CommandLine(time, text, "", resume))
            else:
                lines.append(replace(typed, text=text, typed=typed.text))
        elif typed is not None:
            lines.append(typed)  # nothing ran (the editor left it empty)

    def expanded(self, lines: list[CommandLine], final: bool) -> None:
        """Release a line waiting for its history expansion, once bash printed it."""
        if self.expanding is None:
            return
        line, printed = self.expanding
        first, newline, _ = bytes(printed).lstrip(b"\r\n").partition(b"\n")
        if not newline and not final and len(printed) < EXPANSION_BYTES:
            return
        self.expanding = None
        text = _printed_line(first)
        if newline and plausible_expansion(line.text, text):
            # bash ran the expansion; what was typed is kept beside it.
            line = replace(line, text=text, typed=line.text)
            self.foreground = text
        lines.append(line)


def _printed_line(data: bytes) -> str:
    """A line bash printed, without its escape sequences."""
    text = _ESCAPES_RE.sub("", data.decode("utf-8", "replace")).replace("\r", "")
    return text.rstrip()
