"""The asciicast v2 encoder: pure functions and a small stateful encoder, no I/O.

Owns the file format (https://docs.asciinema.org/manual/asciicast/v2/): the header line and one
JSON array per event. Writing lines to disk is left to recording/recorder.py.

Bytes are decoded late and incrementally (STYLE habit 9): each stream has its own incremental UTF-8
decoder, so a multibyte character split across two reads comes out whole in the second event.
Bytes that are not UTF-8 (binary output) become U+FFFD, and every line is encoded with
`ensure_ascii=True`: whatever a process prints, each event is one valid JSON line of printable
ASCII. The cast is therefore lossy for binary output by design; byte counts are exact in the
`session.channel.closed` event, and the files a session leaves are kept as artifacts.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

VERSION = 2
EventCode = Literal["o", "i"]


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(", ", ": ")) + "\n"


@dataclass(frozen=True)
class Header:
    """The first line of a cast."""

    width: int
    height: int
    timestamp: int
    title: str
    env: Mapping[str, str]

    def line(self) -> str:
        return _line(
            {
                "version": VERSION,
                "width": max(1, self.width),
                "height": max(1, self.height),
                "timestamp": self.timestamp,
                "title": self.title,
                "env": dict(self.env),
            }
        )


class CastEncoder:
    """Turns (elapsed seconds, bytes) into asciicast event lines.

    Times never go backwards in the output (a clock step would otherwise make players stall), and
    a read that ends inside a multibyte character yields no event until the rest arrives.
    """

    def __init__(self) -> None:
        self._decoders = {
            code: codecs.getincrementaldecoder("utf-8")(errors="replace") for code in ("o", "i")
        }
        self._last = 0.0

    def _time(self, elapsed: float) -> float:
        self._last = max(self._last, round(elapsed, 6))
        return self._last

    def data(self, elapsed: float, code: EventCode, data: bytes) -> str | None:
        """An `o` (output) or `i` (input) event line, or None when nothing is decodable yet."""
        text = self._decoders[code].decode(data)
        if not text:
            return None
        return _line([self._time(elapsed), code, text])

    def resize(self, elapsed: float, width: int, height: int) -> str:
        """An `r` event line (`"COLSxROWS"`)."""
        return _line([self._time(elapsed), "r", f"{width}x{height}"])

    def marker(self, elapsed: float, label: str) -> str:
        """An `m` (marker) event line; players show it as a chapter mark."""
        return _line([self._time(elapsed), "m", label])

    def finish(self, elapsed: float) -> list[str]:
        """Lines for bytes still held by the decoders (an unfinished character becomes U+FFFD)."""
        lines = []
        for code in ("o", "i"):
            text = self._decoders[code].decode(b"", final=True)
            if text:
                lines.append(_line([self._time(elapsed), code, text]))
        return lines


__all__ = ["VERSION", "CastEncoder", "EventCode", "Header"]
