"""Who reads a line: the session's shell, or a program it started.

A line accepted while the last command still runs is read by that command
(python, sqlite3, psql, `read`, `cat`), unless the command opened another
shell (`su -`, `ssh host`, `dash`), whose lines are the session's commands
too. The screen alone tells it: the prompt the line was typed at, whether a
line editor drew it with readline's markers, and what the last command was.
"""

from __future__ import annotations

import enum
import re
import shlex

# Commands whose lines are again shell commands: nested shells and hops.
_SHELLS = frozenset(
    {
        "sh",
        "dash",
        "bash",
        "zsh",
        "fish",
        "ksh",
        "mksh",
        "ash",
        "busybox",
        "tcsh",
        "csh",
        "rbash",
        "lksh",
        "yash",
        "su",
        "ssh",
        "tmux",
        "screen",
        "byobu",
        "script",
        "chroot",
        "nsenter",
        "lxc-attach",
        "newgrp",
        "sg",
        "runuser",
        "login",
        "machinectl",
        "telnet",
        "mosh",
    }
)
_SHELL_WITH = {  # …and those that open one only with these options
    "sudo": re.compile(r"(^|\s)-(\w*[is]\w*)\b|(^|\s)(-u\s+\S+\s+)?(ba|z|da|fi)?sh\b"),
    "docker": re.compile(r"\b(exec|run)\b.*\s-\w*i\w*t|\s-\w*t\w*i"),
    "podman": re.compile(r"\b(exec|run)\b.*\s-\w*i\w*t|\s-\w*t\w*i"),
    "kubectl": re.compile(r"\bexec\b.*\s-\w*i\w*t|\s-\w*t\w*i"),
    "exec": re.compile(r"\b(ba|z|da|fi|k)?sh\b"),
}
_MULTIPLEXERS = frozenset({"tmux", "screen", "byobu", "tmate"})
# Programs that read lines from the terminal (REPLs, clients, line readers).
_READERS = frozenset(
    {
        "python",
        "python2",
        "python3",
        "ipython",
        "ipython3",
        "bpython",
        "sqlite3",
        "mysql",
        "mariadb",
        "psql",
        "redis-cli",
        "node",
        "nodejs",
        "irb",
        "pry",
        "gdb",
        "lldb",
        "pdb",
        "ftp",
        "sftp",
        "lftp",
        "bc",
        "dc",
        "lua",
        "luajit",
        "R",
        "php",
        "perl",
        "ghci",
        "erl",
        "iex",
        "scala",
        "mongo",
        "mongosh",
        "cqlsh",
        "clickhouse-client",
        "rlwrap",
        "nc",
        "ncat",
        "socat",
        "cat",
        "tee",
        "read",
        "ed",
        "ex",
        "sqlplus",
        "isql",
        "bash-read",
        "influx",
        "etcdctl",
        "openssl",
        "expect",
        "tclsh",
        "wish",
        "guile",
        "sbcl",
        "ocaml",
        "jshell",
        "julia",
    }
)
_PYTHON_RE = re.compile(r"python[\d.]*$")
# Prompts of the readers above (with readline's markers, python and sqlite3
# look like a shell; their prompt says otherwise).
_READER_PROMPT_RE = re.compile(
    r"(>>> |\.\.\. |sqlite> |   \.\.\.> |mysql> |MariaDB \[[^\]]*\]> |"
    r"    -> |[\w.-]+[=\-(\[][#>] |\S+:\d+(\[\d+\])?> |irb\([^)]*\):\d+:\d+[>*\"'] |"
    r"\[\d+\] pry\([^)]*\)[>*] |\(gdb\) |\(lldb\) |\(Pdb\) |ftp> |sftp> |lftp \S*> |"
    r"iex\(\d+\)> |scala> |jshell> |julia> )\Z"
)
# What a shell prompt ends with, after any colours are gone.
_SHELL_PROMPT_RE = re.compile(r"[$#%>❯➜»λ\]] ?\Z")


# A prompt this long is the shell's also after text a command left on the row
# (`read -s` prints no newline); a shorter one ("$ ") must stand alone.
MIN_TRAILING_PROMPT = 4


class Reader(enum.Enum):
    SHELL = "shell"  # the session's shell reads the line
    PROGRAM = "program"  # the running command reads it
    UNKNOWN = "unknown"  # cannot tell yet (a line typed ahead)


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)[:16]
    except ValueError:  # an open quote: the words as they stand
        return command.split(maxsplit=16)


def program_name(command: str) -> str:
    """The program a command line runs, past `sudo`, `env` and assignments."""
    words = _words(command[:512])
    for index, word in enumerate(words):
        if "=" in word.split("/")[0] or word in ("env", "command", "nohup", "time"):
            continue
        if word == "sudo" and index + 1 < len(words):
            rest = " ".join(words[index + 1 :])
            if _SHELL_WITH["sudo"].search(" " + rest):
                return "sudo"
            continue
        if word.startswith("-"):
            continue
        return word.rsplit("/", 1)[-1]
    return ""


def opens_shell(command: str) -> bool:
    """Whether the command starts a shell whose lines are the session's commands."""
    head = command[:512]
    name = program_name(head)
    if name in _SHELLS:
        return name != "ssh" or _ssh_is_interactive(head)
    pattern = _SHELL_WITH.get(name)
    return pattern is not None and pattern.search(head) is not None


def _ssh_is_interactive(command: str) -> bool:
    """`ssh host` opens a shell; `ssh host uptime` runs one command (-t aside)."""
    words = _words(command)
    try:
        at = next(i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "ssh")
    except StopIteration:
        return False
    rest = words[at + 1 :]
    skip = False
    positional = []
    for word in rest:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word[-1] in "bcDEeFIiJLlmOoPpQRSWw" and len(word) == 2
        else:
            positional.append(word)
    return len(positional) <= 1 or "-t" in rest or "-tt" in rest


def is_multiplexer(command: str) -> bool:
    """tmux or screen: their alternate screen shows shells, not one program."""
    return program_name(command[:512]) in _MULTIPLEXERS


def reads_lines(command: str) -> bool:
    """Whether the command is one that reads lines from the terminal."""
    name = program_name(command[:512])
    if name == "sudo":
        return False
    return bool(_PYTHON_RE.match(name) or name in _READERS)


def is_reader_prompt(prompt: str) -> bool:
    return _READER_PROMPT_RE.search(prompt[-64:]) is not None and prompt.strip() != ""


def looks_like_shell_prompt(prompt: str) -> bool:
    return _SHELL_PROMPT_RE.search(prompt.rstrip("\n")[-8:]) is not None


def _same_prompt(prompt: str, known: str) -> bool:
    """The shell's prompt, also drawn after what a command left on its row."""
    if len(known.strip()) < MIN_TRAILING_PROMPT:
        return prompt == known
    return prompt.endswith(known)


def reader_of(
    prompt: str,
    markers: bool,
    foreground: str | None,
    shell_prompts: tuple[str, ...],
    markers_shell: bool,
) -> Reader:
    """Who reads a line typed at `prompt` while `foreground` was the last command.

    `markers`: readline's markers framed the line; `markers_shell`: the
    shell's own lines come with them.
    """
    if foreground is None:
        return Reader.SHELL
    if prompt.strip() and any(_same_prompt(prompt, known) for known in shell_prompts):
        return Reader.SHELL  # the shell's own prompt again
    if opens_shell(foreground):
        return Reader.SHELL
    if reads_lines(foreground) or is_reader_prompt(prompt):
        return Reader.PROGRAM
    if markers:
        return Reader.SHELL  # readline's line, at a prompt that changed (cd)
    if not prompt.strip():
        # Typed ahead and echoed by the kernel: a shell that draws its own
        # lines will draw it again when it reads it; one that does not (dash)
        # reads it as it stands.
        return Reader.UNKNOWN if markers_shell else Reader.SHELL
    if not looks_like_shell_prompt(prompt):
        return Reader.PROGRAM  # "Name: ", "Continue? [y/N] "
    # A shell's prompt not seen before: back from a nested shell or a host
    # (`exit`), or one that draws its lines without the markers.
    return Reader.SHELL
