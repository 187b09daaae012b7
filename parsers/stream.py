"""pyte's ByteStream, with the common control sequences taken without its generator.

pyte parses everything that is not plain text one character at a time,
through a generator (pyte/streams.py `_parser_fsm`, "the bottleneck" in its
own words). A typing session's output is mostly short text between such
sequences: a prompt's colours, bracketed paste on and off, CR and LF. With 20
sessions typing, the generator took 43,880 sends for 1,200 commands, a tenth
of the ingest thread (yappi, CPU clock).

Here, when the parser is at rest (where its next character would start a
sequence), a C0 control or a whole CSI made of plain parameters goes straight
to the handler the generator would call, with the same arguments:
each parameter an int (empty: 0) of at most 9999, `private=True` after `?`.
Anything else, and anything cut by the end of the data, goes to pyte's own
parser, which then sees exactly what it would have seen.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyte
from pyte import control as ctrl

# ESC [, an optional `?`, digits and semicolons, and a final byte that pyte
# takes as a final (it dispatches any other character as one too: ":" and
# the rest are left to it). Longer parameters are its business.
_CSI_RE = re.compile("\x1b\\[(\\??)([0-9;]{0,64})([@-~])")
_SHIFTS = frozenset((ctrl.SI, ctrl.SO))


class FastByteStream(pyte.ByteStream):
    """A ByteStream whose listener sees what pyte's would, in fewer steps."""

    def attach(self, screen: Any) -> None:
        super().attach(screen)
        listener = self.listener
        assert listener is not None
        debug = listener.debug
        self._basic_calls: dict[str, Callable[[], None]] = {
            char: getattr(listener, name) for char, name in self.basic.items()
        }
        # Unknown finals go to `debug`, as pyte's dispatcher (a defaultdict) does.
        self._csi_calls: defaultdict[str, Callable[..., None]] = defaultdict(
            lambda: debug,
            {char: getattr(listener, name) for char, name in self.csi.items()},
        )

    def feed(self, data: bytes) -> None:  # type: ignore[override]
        if self.use_utf8:
            text = self.utf8_decoder.decode(data)
        else:
            text = "".join(map(chr, data))
        self._feed_text(text)

    def _feed_text(self, data: str) -> None:
        if self.listener is None:
            raise RuntimeError("Listener is not set")
        send = self._send_to_parser
        draw = self.listener.draw
        match_text = self._text_pattern.match
        match_csi = _CSI_RE.match
        basic, csi = self._basic_calls, self._csi_calls
        at_rest = self._taking_plain_text
        length = len(data)
        offset = 0
        while offset < length:
            if not at_rest:
                at_rest = send(data[offset])
                offset += 1
                continue
            match = match_text(data, offset)
            if match is not None:
                offset = match.end()
                draw(match.group())
                continue
            char = data[offset]
            call = basic.get(char)
            if call is not None:
                offset += 1
                if not (char in _SHIFTS and self.use_utf8):  # as pyte: ignored
                    call()
                continue
            seq = match_csi(data, offset) if char == ctrl.ESC else None
            if seq is None:
                at_rest = send(char)  # pyte's parser takes it from here
                offset += 1
                continue
            offset = seq.end()
            private, params, final = seq.groups()
            args = [min(int(p or 0), 9999) for p in params.split(";")]
            if private:
                csi[final](*args, private=True)
            else:
                csi[final](*args)
        self._taking_plain_text = at_rest
