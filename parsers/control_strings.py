"""Terminal control strings (OSC, DCS, APC, PM, SOS) ended as xterm ends them.

pyte keeps reading an OSC string until BEL or ST, through escape sequences,
so `printf 'x\\e]0'` made it swallow every later prompt (issue 14). xterm ends
such a string at BEL or ST, drops it at CAN or SUB, and any ESC starts a new
sequence. This filter removes the strings from what the emulator is fed
(nothing in them is drawn) with those rules, so no string outlives its ESC,
and drops a CSI whose parameters run past MAX_CSI_BYTES (pyte would turn an
endless digit run into an integer: past 4,300 digits Python refuses), or one
with a private parameter prefix that pyte cannot take: pyte passes
`private=True` to every handler, and most do not accept it (vim's `ESC[?4m`
raised TypeError), while `<`, `=` and `>` sequences are queries, no drawing.
"""

from __future__ import annotations

import re

MAX_CSI_BYTES = 64
# ESC ] (OSC), ESC P (DCS), ESC X (SOS), ESC ^ (PM), ESC _ (APC), their C1
# forms in UTF-8 (U+0090, U+0098, U+009D, U+009E, U+009F), and CSI (ESC [,
# U+009B), whose parameters are checked.
_START_RE = re.compile(rb"\x1b[\]PX^_\[]|\xc2[\x90\x98\x9b\x9d\x9e\x9f]|\x1b\Z")
_STRING_END_RE = re.compile(rb"\x07|\x1b\\|\xc2\x9c|[\x18\x1a]|\x1b")
_CSI_RE = re.compile(rb"[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
_CSI_PARAMS_RE = re.compile(rb"[\x30-\x3f]*[\x20-\x2f]*")
_PRIVATE_FINALS = frozenset(b"hlJKnc")  # pyte's handlers that take `private`


class StringFilter:
    """Output bytes in, the same without control strings out; state across chunks."""

    def __init__(self) -> None:
        self.in_string = False
        self.in_long_csi = False  # dropping a CSI past MAX_CSI_BYTES
        self.held = b""  # an ESC or a CSI cut by the end of a chunk

    def reset(self) -> None:
        """An escape sequence seen elsewhere (a private mode) ends any string."""
        self.in_string = self.in_long_csi = False
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        if self.held:
            data, self.held = self.held + data, b""
        if (
            not self.in_string
            and not self.in_long_csi
            and b"\x1b" not in data
            and b"\xc2" not in data
        ):
            return data
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            if self.in_long_csi:
                end = _CSI_PARAMS_RE.match(data, pos)
                pos = end.end() if end is not None else pos
                if pos < len(data):
                    self.in_long_csi = False
                    if 0x40 <= data[pos] <= 0x7E:
                        pos += 1  # its final byte
                continue
            if self.in_string:
                m = _STRING_END_RE.search(data, pos)
                if m is None:
                    return b"".join(out)  # the string goes on in the next chunk
                self.in_string = False
                pos = m.start() if m.group() == b"\x1b" else m.end()
                continue
            m = _START_RE.search(data, pos)
            if m is None:
                out.append(data[pos:])
                break
            out.append(data[pos : m.start()])
            introducer = m.group()
            if introducer == b"\x1b":
                self.held = introducer  # what follows comes with the next chunk
                break
            if introducer in (b"\x1b[", b"\xc2\x9b"):
                pos = self._csi(data, m, out)
                if pos < 0:
                    break
                continue
            self.in_string = True
            pos = m.end()
        return b"".join(out)

    def _csi(self, data: bytes, m: re.Match[bytes], out: list[bytes]) -> int:
        """Pass a CSI whole, drop one too long; -1 when it is cut by the chunk end."""
        body = _CSI_RE.match(data, m.end())
        if body is None:
            rest = data[m.end() : m.end() + MAX_CSI_BYTES + 1]
            if (
                len(rest) <= MAX_CSI_BYTES
                and m.end() + len(rest) == len(data)
                and _CSI_PARAMS_RE.fullmatch(rest)
            ):
                self.held = data[m.start() :]  # finished by the next chunk
                return -1
            if len(rest) > MAX_CSI_BYTES and _CSI_PARAMS_RE.fullmatch(rest):
                self.in_long_csi = True  # dropped up to its final byte
                return m.end()
            # Not a CSI a terminal would finish: what follows is text again.
            out.append(m.group())
            return m.end()
        if body.end() - m.end() > MAX_CSI_BYTES:
            return body.end()
        first, final = data[m.end()], data[body.end() - 1]
        if first in b"<=>" or (first == 0x3F and final not in _PRIVATE_FINALS):
            return body.end()
        out.append(data[m.start() : body.end()])
        return body.end()
