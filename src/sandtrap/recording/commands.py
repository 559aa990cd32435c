"""Command reconstruction: every line the shell reads, in order, as the shell had it.

Owns two pure reconstructors (no I/O, no events). `TerminalCommands` (PTY channels) rebuilds each
line from the keys with a readline-like editor (recording/lineedit.py), one line per Enter, so
pasted and piped scripts come out whole whatever their echo looks like; a line whose keys do not
determine it (tab completion, history recall) is read off a pyte screen fed with the output the
client saw, when the shell echoes its Enter. `LineCommands` splits the input of a shell without a
PTY into lines. Emitting `session.command` events is left to recording/recorder.py.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections import deque
from dataclasses import dataclass

import pyte

from sandtrap.recording.lineedit import LineEditor

log = logging.getLogger(__name__)

# Output while no line is waiting is held back and only its last this-many bytes are fed, when
# the screen is next read (a key, a resize, the end): the tail holds the prompt, and pyte (pure
# Python, ~2 MB/s) would otherwise bound a large `cat` through a PTY.
MAX_FEED_BYTES = 16 * 1024
MAX_COMMAND_CHARS = 8192
# When the line's start was not seen (type-ahead), a prompt is recognised by its usual ending.
_PROMPT_END = re.compile(r"^.{0,120}?[#$%>] ")
_ENTER = frozenset(b"\r\n")


class _Screen(pyte.Screen):
    """A pyte screen that counts how many lines scrolled off the top."""

    scrolled = 0

    def index(self) -> None:
        _top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom:
            self.scrolled += 1
        super().index()


@dataclass
class _Entry:
    """A line the shell will read; `take` (for an inexact line) is the screen reading it awaits."""

    text: str
    take: int | None = None


class TerminalCommands:
    """Reconstructs entered lines of an interactive shell from its input and echoed output.

    `input()` feeds the line editor (one entry per Enter) and notes where a line starts on the
    screen (the cursor when its first key arrives) and counts Enters; `output()` feeds the screen
    and, for each waiting Enter, takes the line off the screen just before the echoed line feed
    moves the cursor away. Lines come out in the order they were entered: an exact line at once,
    an inexact one when its screen reading arrives (or as the editor has it, when the line was
    typed ahead of the prompt and the screen cannot place it).
    """

    def __init__(self, width: int, height: int) -> None:
        self._editor = LineEditor()
        self._queue: deque[_Entry] = deque()
        self._takes = 0
        self._clean = True  # the current line's first key came at a prompt, nothing pending
        self._screen = _Screen(max(width, 2), max(height, 2))
        self._stream = pyte.ByteStream(self._screen)
        self._pending = 0
        self._start: tuple[int, int] | None = None  # (absolute row, column)
        self._prompt = ""
        self._last_enter = 0
        self._deferred = bytearray()  # output not fed yet (no line waiting), trimmed to its tail
        self.broken = False

    def _feed(self, data: bytes) -> None:
        if data:
            self._stream.feed(data)

    def _defer(self, data: bytes) -> None:
        self._deferred += data
        if len(self._deferred) > 2 * MAX_FEED_BYTES:
            del self._deferred[:-MAX_FEED_BYTES]

    def _catch_up(self) -> None:
        """Feed the held-back output (its tail) before the screen is read or changed."""
        if self._deferred:
            data = bytes(self._deferred[-MAX_FEED_BYTES:])
            self._deferred.clear()
            self._feed(data)

    def _failed(self) -> None:
        # pyte is not hardened against every byte sequence (a corrupt screen can make even
        # `display` raise); that must not end the session, only reconstruction on this channel.
        log.warning("terminal emulation failed; no more commands on this channel", exc_info=True)
        self.broken = True

    def resize(self, width: int, height: int) -> None:
        if self.broken:
            return
        try:
            self._catch_up()
            self._screen.resize(max(height, 2), max(width, 2))
        except Exception:
            self._failed()

    def input(self, data: bytes) -> list[str]:
        """Client keystrokes (before the shell echoes them); returns the lines they completed
        that can be told now. Never raises."""
        for byte in data:
            was_started = self._editor.started
            lines = self._editor.feed(bytes((byte,)))
            self._screen_key(byte, starts_line=not was_started and self._editor.started)
            for line in lines:
                entry = _Entry(line.text)
                if not line.exact and self._clean and not self.broken:
                    # Typed at a prompt: the shell echoes it there, and this Enter's screen
                    # reading is the next one due.
                    entry.take = self._takes + self._pending
                self._queue.append(entry)
        return self._ready()

    def _screen_key(self, byte: int, starts_line: bool) -> None:
        """The screen side of one key (`starts_line`: the first key of a line)."""
        if starts_line:
            self._clean = self._pending == 0
        if self.broken:
            return
        try:
            self._input(bytes([byte]))
        except Exception:
            self._failed()

    def _ready(self, final: bool = False) -> list[str]:
        """Lines whose text is known, from the head of the queue, in order."""
        lines: list[str] = []
        while self._queue and (final or self._queue[0].take is None or self.broken):
            text = self._queue.popleft().text.strip()[:MAX_COMMAND_CHARS]
            if text:
                lines.append(text)
        return lines

    def _screen_line(self, text: str) -> None:
        self._takes += 1
        for entry in self._queue:
            if entry.take == self._takes:
                if text:
                    entry.text = text
                entry.take = None

    def output(self, data: bytes) -> list[str]:
        """Output the client saw; returns the lines now known (edited, as the shell had them).

        Never raises: a failure of the emulator ends screen readings for this channel (the line
        editor's text is used from then on).
        """
        if not self.broken:
            try:
                for text in self._output(data):
                    self._screen_line(text)
            except Exception:
                self._failed()
        return self._ready()

    def finish(self) -> list[str]:
        """At channel close: every line entered, echoed or not (the client may have left)."""
        return self._ready(final=True)

    def _input(self, data: bytes) -> None:
        self._catch_up()
        for byte in data:
            if byte in _ENTER:
                # \r\n from one key press counts once.
                if not (byte == 0x0A and self._last_enter == 0x0D):
                    self._pending += 1
                self._last_enter = byte
                continue
            self._last_enter = 0
            if byte == 0x03 and self._pending == 0:
                self._start = None  # ^C: the shell abandons the line and prompts again
                continue
            if self._start is None and self._pending == 0:
                cursor = self._screen.cursor
                self._start = (self._screen.scrolled + cursor.y, cursor.x)
                self._prompt = self._screen.display[cursor.y][: cursor.x]

    def _output(self, data: bytes) -> list[str]:
        lines: list[str] = []
        if self._pending:
            self._catch_up()
        while self._pending and not self.broken:
            head, newline, rest = data.partition(b"\n")
            if not newline:
                break
            self._feed(head)
            if self._start is not None or self._looks_like_prompt_line():
                lines.append(self._take_line())
            # else: type-ahead; this line feed is the previous command's output, not the echo.
            self._feed(newline)
            data = rest
        if self._pending:
            self._feed(data)
        else:
            self._defer(data)
        return lines

    def _take_line(self) -> str:
        self._pending -= 1
        screen = self._screen
        display = screen.display
        end_row = screen.cursor.y
        start = self._start
        self._start = None
        if start is not None:
            row, col = start[0] - screen.scrolled, start[1]
            if row < 0:
                row, col = 0, 0
        else:
            row, col = end_row, 0
        row = min(row, end_row)
        parts = []
        for y in range(row, end_row + 1):
            text = display[y][col:] if y == row else display[y]
            parts.append(
                text
                if len(text.rstrip()) >= screen.columns - (col if y == row else 0)
                else text.rstrip()
            )
        line = "".join(parts).rstrip()
        if start is None:
            line = self._strip_prompt(display[end_row].rstrip())
        elif self._prompt.strip() and self._prompt in line:
            # The shell redrew prompt and line (a completion listing): the last copy counts.
            line = line.rsplit(self._prompt, 1)[1]
        return line.strip()[:MAX_COMMAND_CHARS]

    def _looks_like_prompt_line(self) -> bool:
        text = self._screen.display[self._screen.cursor.y]
        if self._prompt.strip():
            return text.startswith(self._prompt)
        return _PROMPT_END.match(text) is not None

    def _strip_prompt(self, text: str) -> str:
        if self._prompt.strip() and text.startswith(self._prompt):
            return text[len(self._prompt) :]
        match = _PROMPT_END.match(text)
        return text[match.end() :] if match else text


class LineCommands:
    """Lines of a shell without a PTY: what was piped in is what the shell reads."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def input(self, data: bytes) -> list[str]:
        self._buffer += self._decoder.decode(data)
        *complete, self._buffer = self._buffer.split("\n")
        if len(self._buffer) > MAX_COMMAND_CHARS:
            complete.append(self._buffer)
            self._buffer = ""
        return [line.strip()[:MAX_COMMAND_CHARS] for line in complete if line.strip()]

    def finish(self) -> list[str]:
        rest = (self._buffer + self._decoder.decode(b"", final=True)).strip()
        self._buffer = ""
        return [rest[:MAX_COMMAND_CHARS]] if rest else []


__all__ = ["LineCommands", "TerminalCommands"]
