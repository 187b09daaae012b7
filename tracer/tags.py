"""An ssh client's argv to its session tag and destination.

Pure: argv in, an `SshInvocation` out. It reads argv the way OpenSSH's ssh.c
does: BSD getopt without permutation (OpenSSH ships its own getopt), options
up to the destination, options again right after it, then the remote command;
`--` ends the options.

Tag sources, in precedence order:
- `-Z TAG`: the patched ssh of the original design;
- `SetEnv AUDIT_SESSION=TAG` in a `-o` option (stock OpenSSH >= 7.8), in any
  spelling ssh accepts: `-oSetEnv=...`, `-o "SetEnv AUDIT_SESSION=TAG"`,
  several variables in one SetEnv, quoted values;
- `-P TAG` / `-o Tag=TAG` (OpenSSH >= 9.4).
For `-o`, ssh keeps the first value it reads of an option; so do we.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TAG_ENV = "AUDIT_SESSION"

# ssh.c (9.2p1): "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
# plus Z: from the patched client.
_WITH_ARG = frozenset("bceilmopBDEFIJLOPQRSWwZ")
# Before 9.4, -P was an old flag without an argument (Debian 12 ships 9.2p1):
# `ssh -P foo alice@db1` connects to host foo there.
_WITH_ARG_BEFORE_9_4 = _WITH_ARG - {"P"}
_VERSION_RE = re.compile(rb"OpenSSH_(\d+)\.(\d+)")
# Every tag spelling leaves one of these in the raw NUL-separated argv: an
# option group holding Z or P, or a SetEnv or Tag keyword (ssh lowercases
# keywords; quotes around one leave its letters in place). The rest of argv
# is never decoded.
_MAYBE_TAGGED_RE = re.compile(rb"\x00-[^\x00]*[ZP]|(?i:setenv|tag)")


def tag_option_p(version: str | None) -> bool:
    """Whether -P takes an argument (the tag) in this OpenSSH version.

    Unknown versions get the current meaning, as the issue of -P describes it.
    """
    if not version:
        return True
    m = _VERSION_RE.match(version.encode())
    return m is None or (int(m.group(1)), int(m.group(2))) >= (9, 4)


def may_carry_tag(raw_argv: bytes) -> bool:
    """A cheap first look at /proc/PID/cmdline: False means surely untagged."""
    return _MAYBE_TAGGED_RE.search(raw_argv) is not None


def ssh_version(binary: bytes) -> str | None:
    """The OpenSSH version compiled into an ssh binary, read, never run."""
    m = re.search(rb"OpenSSH_\d+\.\d+(?:p\d+)?", binary)
    return m.group().decode() if m else None


_KEYWORD_RE = re.compile(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)", re.S)


@dataclass(frozen=True, slots=True)
class SshInvocation:
    """What an ssh command line says about the session it opens."""

    tag: str | None  # a valid tag, or None
    tag_source: str | None  # "-Z", "SetEnv", "-P" or "Tag"
    bad_tag: str | None  # a tag value that failed validation, for one log line
    remote_user: str | None
    host: str | None
    port: int | None
    command: tuple[str, ...]  # the remote command, if one was given
    remote_tty: bool = True  # ssh asks the server for a pty (an interactive shell)


def valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


def parse_ssh_argv(
    argv: list[str] | tuple[str, ...], version: str | None = None
) -> SshInvocation:
    """Read an ssh client's argv (argv[0] included) as that ssh version would."""
    with_arg = _WITH_ARG if tag_option_p(version) else _WITH_ARG_BEFORE_9_4
    options: list[tuple[str, str | None]] = []  # ("@", destination) in order
    command: tuple[str, ...] = ()
    have_destination = False
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest = args[i + 1 :]
            if not have_destination and rest:
                options.append(("@", rest[0]))
                rest = rest[1:]
            command = tuple(rest)
            break
        if arg.startswith("-") and len(arg) > 1:
            i = _read_option_group(args, i, options, with_arg)
        elif not have_destination:
            options.append(("@", arg))
            have_destination = True
            i += 1
        else:
            command = tuple(args[i:])
            break

    # ssh keeps the first user and port it reads, in argv order, whether from
    # -l/-p, user@host, ssh://user@host:port or -o User=/Port=.
    seen = _Seen()
    flags = [opt for opt, value in options if value is None]
    for opt, value in options:
        if value is None:
            continue
        if opt == "@":
            seen.destination(value)
        elif opt == "l":
            seen.set_user(value)
        elif opt == "p":
            seen.set_port(value)
        elif opt in ("Z", "P"):
            seen.tags.setdefault("-" + opt, value)
        elif opt == "o":
            seen.config_option(value)

    tag = source = bad = None
    for name in ("-Z", "SetEnv", "-P", "Tag"):
        if name in seen.tags:
            value = seen.tags[name]
            if valid_tag(value):
                tag, source = value, name
                break
            bad = bad or value
    # ssh's rule: -T never, -t (with a command) or RequestTTY yes/force
    # always, otherwise only when no command is given.
    request = seen.request_tty
    if "T" in flags or request == "no":
        remote_tty = False
    elif "t" in flags or request in ("yes", "force"):
        remote_tty = True
    else:
        remote_tty = not command
    return SshInvocation(
        tag,
        source,
        None if tag else bad,
        seen.user,
        seen.host,
        seen.port,
        command,
        remote_tty,
    )


def _read_option_group(
    args: list[str], i: int, out: list[tuple[str, str | None]], with_arg: frozenset[str]
) -> int:
    """Read `-tt`, `-p22`, `-p 22`, `-vvo Opt=x`; return the next index."""
    arg = args[i]
    j = 1
    while j < len(arg):
        opt = arg[j]
        if opt in with_arg:
            value = arg[j + 1 :]
            if value:
                out.append((opt, value))
                return i + 1
            if i + 1 < len(args):
                out.append((opt, args[i + 1]))
                return i + 2
            out.append((opt, None))  # ssh would refuse to run; nothing to learn
            return i + 1
        out.append((opt, None))  # a flag, or one ssh would refuse
        j += 1
    return i + 1


@dataclass
class _Seen:
    """First-wins accumulation of what ssh would use."""

    user: str | None = None
    host: str | None = None
    port: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    request_tty: str | None = None

    def set_user(self, value: str | None) -> None:
        if self.user is None and value:
            self.user = value

    def set_port(self, value: str | int | None) -> None:
        if self.port is None and value is not None:
            self.port = _port(str(value))

    def destination(self, dest: str) -> None:
        if dest.startswith("ssh://"):
            parts = urlsplit(dest)
            self.set_user(parts.username)
            self.host = parts.hostname
            with contextlib.suppress(ValueError):
                self.set_port(parts.port)
            return
        user, at, host = dest.rpartition("@")
        if at:
            self.set_user(user)
            self.host = host
        else:
            self.host = dest

    def config_option(self, text: str) -> None:
        m = _KEYWORD_RE.fullmatch(text)
        if m is None:
            return
        keyword, value = m.group(1).lower(), m.group(2).strip()
        if keyword not in _KEYWORDS or (
            keyword == "setenv" and TAG_ENV not in value and not _QUOTING & set(value)
        ):
            return  # never split what cannot matter (argv is the user's to fill)
        words = argv_split(value)
        if keyword == "setenv":
            for token in words:
                name, eq, val = token.partition("=")
                if eq and name == TAG_ENV:
                    self.tags.setdefault("SetEnv", val)
        elif keyword == "tag" and words:
            self.tags.setdefault("Tag", words[0])
        elif keyword == "user" and words:
            self.set_user(words[0])
        elif keyword == "port" and words:
            self.set_port(words[0])
        elif keyword == "requesttty" and words and self.request_tty is None:
            self.request_tty = words[0].lower()


_KEYWORDS = frozenset({"setenv", "tag", "user", "port", "requesttty"})
_QUOTING = frozenset("'\"\\")  # what can join the letters of a name
_PLAIN_RE = re.compile(r"[^ \t\\'\"]+")
_QUOTED_RE = {"'": re.compile(r"[^\\']+"), '"': re.compile(r'[^\\"]+')}
_BLANKS_RE = re.compile(r"[ \t]*")


def argv_split(s: str) -> list[str]:
    """An option's arguments as OpenSSH's argv_split (misc.c) splits them.

    Blanks separate words; single and double quotes group; a backslash
    escapes a quote, a backslash, or (outside quotes) a space, and is kept
    before anything else; a word starting with # ends the line. Unbalanced
    quotes make ssh refuse the option: no words. Linear: runs of ordinary
    characters are taken at once.
    """
    words: list[str] = []
    i, n = 0, len(s)
    while True:
        i = _BLANKS_RE.match(s, i).end()  # type: ignore[union-attr]
        if i >= n or s[i] == "#":
            return words
        word: list[str] = []
        quote = ""
        while i < n:
            c = s[i]
            if c == "\\":
                escaped = s[i + 1 : i + 2]
                if escaped in ("'", '"', "\\") or (not quote and escaped == " "):
                    word.append(escaped)
                    i += 2
                else:
                    word.append(c)
                    i += 1
            elif not quote and c in " \t":
                break
            elif not quote and c in "'\"":
                quote = c
                i += 1
            elif c == quote:
                quote = ""
                i += 1
            else:
                m = (_QUOTED_RE[quote] if quote else _PLAIN_RE).match(s, i)
                assert m is not None  # c is none of what the pattern leaves out
                word.append(m.group())
                i = m.end()
        if quote:
            return []
        words.append("".join(word))


def _port(value: str) -> int | None:
    value = value.strip()
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return None
