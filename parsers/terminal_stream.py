"""pyte's byte stream, with whole escape sequences dispatched in one step.

pyte parses everything that is not plain text one character at a time,
through a generator (`Stream._parser_fsm`): `ESC[01;32m` is seven sends
and seven resumptions, and a prompt and the echo of a typed line are mostly
such sequences and line controls (15,080 sends for 400 commands of
bench.tracer's typing sessions). Here, while pyte's parser waits for a new
sequence, a complete CSI of digits and semicolons, a charset designation
(ESC ( B, a no-op in UTF-8, as pyte has it) and the line controls are
dispatched directly, to the same screen methods with the same arguments
pyte would pass; anything else, and any sequence cut by the end of a chunk,
goes to pyte's parser as before. The whole parser takes 0.94 to 0.95 the
CPU time on those typing logs, 0.97 on the corpus (bench/stream_bench.py).
tests/test_terminal_stream.py feeds both streams the same bytes, cut at
every place, and compares the screens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyte
from pyte import control as ctrl

# ESC [ then an optional `?`, decimal parameters and the final byte. pyte
# treats every byte from @ to ~ as final once the parameters are read.
_CSI_RE = re.compile(r"\x1b\[(\?)?([0-9;]*)([@-~])")
_LINE_CONTROLS = (ctrl.BEL, ctrl.BS, ctrl.HT, ctrl.LF, ctrl.VT, ctrl.FF, ctrl.CR)


class TerminalStream(pyte.ByteStream):
    """A pyte.ByteStream for one screen; the same events, fewer steps."""

    def __init__(self, screen: pyte.Screen) -> None:
        super().__init__(screen)
        self._ground = True  # pyte's parser waits for a new sequence
        self._controls: dict[str, Callable[[], Any]] = {
            char: getattr(screen, self.basic[char]) for char in _LINE_CONTROLS
        }
        self._csi: dict[str, Callable[..., Any]] = {
            final: getattr(screen, name) for final, name in self.csi.items()
        }
        self._debug: Callable[..., Any] = screen.debug  # pyte's for the others

    def feed(self, data: bytes) -> None:  # type: ignore[override]
        # ByteStream.feed's decoding; its super().feed would be pyte's loop.
        if self.use_utf8:
            text = self.utf8_decoder.decode(data)
        else:
            text = "".join(map(chr, data))
        self._feed_text(text)

    def _feed_text(self, data: str) -> None:
        assert self.listener is not None
        send = self._send_to_parser
        draw = self.listener.draw
        match_text = self._text_pattern.match
        match_csi = _CSI_RE.match
        controls, csi, debug = self._controls, self._csi, self._debug
        ground = self._ground
        offset, length = 0, len(data)
        while offset < length:
            if ground:
                m = match_text(data, offset)
                if m is not None:
                    offset = m.end()
                    draw(m.group())
                    continue
                char = data[offset]
                control = controls.get(char)
                if control is not None:
                    offset += 1
                    control()
                    continue
                if char == ctrl.ESC:
                    m = match_csi(data, offset)
                    if m is not None:
                        offset = m.end()
                        private, params, final = m.groups()
                        args = [min(int(p or 0), 9999) for p in params.split(";")]
                        handler = csi.get(final, debug)
                        if private:
                            handler(*args, private=True)
                        else:
                            handler(*args)
                        continue
                    if (
                        self.use_utf8
                        and offset + 2 < length
                        and data[offset + 1] in "()"
                    ):
                        offset += 3  # a charset: pyte ignores it in UTF-8
                        continue
            ground = bool(send(data[offset]))
            offset += 1
        self._ground = ground

    def _initialize_parser(self) -> None:
        super()._initialize_parser()
        self._ground = True
