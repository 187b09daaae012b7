"""Keeping corpus logs small: bulk output shortened, everything else untouched.

A command's bulk output is only scanned by the parser (for readline and
alternate-screen markers), so a long write can lose its middle without
changing what the parser finds, as long as no marker is in the part dropped.
The capture script checks that the trimmed log gives the same commands.
"""

from __future__ import annotations

import codecs
import re

KEEP_HEAD, KEEP_TAIL = 256, 1024
_WRITE_RE = re.compile(
    rb'^(\S+ write\(\d+<[^>]*>(?:\(deleted\))?, )"(.*)", (\d+)\) = (\d+)$', re.S
)
_MARKERS = re.compile(rb"\x1b\[\?")


def strace_quote(data: bytes) -> bytes:
    """Escape bytes the way strace 6.1 does without -x."""
    out = bytearray()
    special = {
        9: b"\\t",
        10: b"\\n",
        11: b"\\v",
        12: b"\\f",
        13: b"\\r",
        34: b'\\"',
        92: b"\\\\",
    }
    for i, b in enumerate(data):
        if b in special:
            out += special[b]
        elif 0x20 <= b < 0x7F:
            out.append(b)
        else:
            nxt = data[i + 1] if i + 1 < len(data) else None
            digits = nxt is not None and 0x30 <= nxt <= 0x37
            out += (b"\\%03o" if digits else b"\\%o") % b
    return bytes(out)


def trim_line(line: bytes) -> bytes:
    m = _WRITE_RE.match(line)
    if m is None:
        return line
    data = codecs.escape_decode(m.group(2))[0][: int(m.group(4))]
    if len(data) <= KEEP_HEAD + KEEP_TAIL + 64:
        return line
    middle = data[KEEP_HEAD:-KEEP_TAIL]
    if _MARKERS.search(data[KEEP_HEAD - 8 : len(data) - KEEP_TAIL + 8]):
        return line
    short = (
        data[:KEEP_HEAD]
        + b"\r\n[... %d bytes trimmed ...]\r\n" % len(middle)
        + data[-KEEP_TAIL:]
    )
    return (
        m.group(1)
        + b'"'
        + strace_quote(short)
        + b'", %d) = %d' % (len(short), len(short))
    )


def trim_log(log: bytes) -> bytes:
    return b"\n".join(trim_line(line) for line in log.split(b"\n"))
