"""Per-channel recording: the asciicast file on disk and the `session.command` events.

Owns one channel's cast file (opened O_APPEND, written in small appends from an in-memory buffer
that a flush task owned by the recorder empties every `FLUSH_INTERVAL_SECONDS`, so a crash loses
less than that) and the command reconstructor of that channel. Encoding is recording/asciicast.py's;
what the lines mean is recording/commands.py's; the byte pump calls in through `PumpTap`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from sandtrap import events as ev
from sandtrap.events import EventSink
from sandtrap.recording.asciicast import CastEncoder, Header
from sandtrap.recording.commands import LineCommands, TerminalCommands

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.5
# The buffer is written at once past this size, so a fast producer never holds much in memory.
FLUSH_BYTES = 64 * 1024
# A cast stops growing here (a marker says so); the byte counts in the events stay exact.
MAX_CAST_BYTES = 256 * 1024 * 1024


def display_size(width: int, height: int) -> tuple[int, int]:
    """The size a terminal is drawn at: a PTY of 0 columns or rows (what `ssh -tt` requests without
    a local terminal) is 80x24 to bash and readline, so the cast and the commands use that."""
    return (width if width > 0 else 80, height if height > 0 else 24)


class ChannelRecorder:
    """Records one channel. Use as `async with`; the taps (`input`, `output`, `resize`) never raise.

    Args:
        path: the cast file, or None to reconstruct commands without a recording.
        header: the cast's header.
        record_input: write `i` events (shells); exec channels record output only.
        commands: the channel's command reconstructor (None: no `session.command` events).

    Cancellation: leaving the block (normally, by an exception or by cancellation) stops the flush
    task, writes what is buffered and closes the file; nothing is left running.
    """

    def __init__(
        self,
        path: Path | None,
        header: Header,
        *,
        events: EventSink,
        peer: ev.Peer,
        channel: int,
        record_input: bool,
        commands: TerminalCommands | LineCommands | None,
    ) -> None:
        self.path = path
        self._header = header
        self._events = events
        self._peer = peer
        self._channel = channel
        self._record_input = record_input
        self._commands = commands
        self._encoder = CastEncoder()
        self._started = time.monotonic()
        self._buffer: list[str] = []
        self._buffered = 0
        self._written = 0
        self._fd: int | None = None
        self._failed = path is None
        self._truncated = False
        self._flusher: asyncio.Task[None] | None = None
        self.commands_seen = 0
        if path is not None:
            self._append(header.line())

    # --- the taps ------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def input(self, data: bytes) -> None:
        if self._record_input:
            self._append(self._encoder.data(self._elapsed(), "i", data))
        if self._commands is not None:
            self._emit_commands(self._commands.input(data))

    def output(self, data: bytes, stream: int) -> None:
        self._append(self._encoder.data(self._elapsed(), "o", data))
        if isinstance(self._commands, TerminalCommands):
            self._emit_commands(self._commands.output(data))

    def resize(self, width: int, height: int) -> None:
        width, height = display_size(width, height)
        self._append(self._encoder.resize(self._elapsed(), width, height))
        if isinstance(self._commands, TerminalCommands):
            self._commands.resize(width, height)

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> ChannelRecorder:
        if self.path is not None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_periodically(), name=f"recorder-{self.path.name}"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            # asyncio.wait never raises the task's CancelledError into us; ours still propagates.
            await asyncio.wait([flusher])
        self.close()

    def close(self) -> None:
        """Final lines (held partial characters, unfinished command), flush, close. Idempotent."""
        if self._commands is not None:
            self._emit_commands(self._commands.finish())
            self._commands = None
        for line in self._encoder.finish(self._elapsed()):
            self._append(line)
        self.flush()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                log.debug("closing %s failed", self.path)
            self._fd = None
        self._failed = True

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self.flush()

    def _emit_commands(self, lines: list[str]) -> None:
        for line in lines:
            self.commands_seen += 1
            self._events.emit(ev.SessionCommand(peer=self._peer, channel=self._channel, input=line))

    def _append(self, line: str | None) -> None:
        if line is None or self._failed or self._truncated:
            return
        if self._written + self._buffered + len(line) > MAX_CAST_BYTES:
            self._truncated = True
            line = self._encoder.marker(self._elapsed(), "sandtrap: recording truncated")
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffer to the file (one append); never raises."""
        if not self._buffer or self.path is None:
            return
        data = "".join(self._buffer).encode("ascii")
        self._buffer.clear()
        self._buffered = 0
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.write(self._fd, data)
            self._written += len(data)
        except OSError as exc:
            log.error("recording %s failed, recording stops: %s", self.path, exc)
            self._failed = True


__all__ = ["FLUSH_INTERVAL_SECONDS", "ChannelRecorder", "display_size"]
