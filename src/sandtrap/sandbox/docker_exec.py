"""Exec streams on the Docker engine: the hijacked connection and its multiplexed framing.

Owns reading the engine's 8-byte-header frames (merging them for bulk output), half-closing stdin,
and aborting a stream whose sandbox died. Opening the connection is left to `sandbox/docker.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any, Protocol

from sandtrap.errors import EngineError, SandboxGone
from sandtrap.sandbox.base import STDERR, STDOUT, Chunk

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class _ExecControl(Protocol):
    """What a stream needs from its engine after the attach: resize and the exit status."""

    async def exec_resize(self, exec_id: str, width: int, height: int) -> None: ...

    async def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...


class FrameError(Exception):
    """The engine's multiplexed stream broke its framing."""


# The engine writes frames of at most 32 KiB; anything far larger is a broken or hostile stream.
_MAX_FRAME = 1024 * 1024
# Merged output handed on at once: fewer SSH writes and recording events for bulk output.
_MERGE_LIMIT = 256 * 1024


class FrameBuffer:
    """Parses the engine's multiplexed exec stream (8-byte header: stream, 0, 0, 0, size BE).

    `take()` returns the frames already received, consecutive ones of the same stream merged up
    to `_MERGE_LIMIT`, so a bulk transfer costs one chunk per read instead of one per frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def take(self) -> Chunk | None:
        parts: list[bytes] = []
        merged = 0
        kind = -1
        offset = 0
        buffer = self._buffer
        with memoryview(buffer) as view:  # one copy per frame; released before the resize
            while len(buffer) - offset >= 8:
                stream = buffer[offset]
                (size,) = struct.unpack_from(">I", buffer, offset + 4)
                if stream > 2 or size > _MAX_FRAME:
                    raise FrameError(f"frame header stream={stream} size={size}")
                if len(buffer) - offset - 8 < size:
                    break
                if size and parts and (stream != kind or merged + size > _MERGE_LIMIT):
                    break
                if size:
                    parts.append(bytes(view[offset + 8 : offset + 8 + size]))
                    merged += size
                    kind = stream
                offset += 8 + size
        del buffer[:offset]
        if not parts:
            return None
        return Chunk(STDERR if kind == 2 else STDOUT, b"".join(parts))


# What `wait()` reports for an exec whose sandbox died under it: OpenSSH's status for a lost
# connection, since to the client it is a machine that went away.
ABORTED_STATUS = 255


class DockerExecStream:
    """An exec's hijacked connection: raw bytes with a TTY, multiplexed frames without."""

    def __init__(
        self,
        engine: _ExecControl,
        exec_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tty: bool,
    ) -> None:
        self._engine = engine
        self.exec_id = exec_id
        self._reader = reader
        self._writer = writer
        self._tty = tty
        self._stdin_closed = False
        self._closed = False
        self._aborted = False
        self._frames = FrameBuffer()

    async def read(self) -> Chunk | None:
        try:
            if self._tty:
                data = await self._reader.read(READ_SIZE)
                return Chunk(STDOUT, data) if data else None
            while (chunk := self._frames.take()) is None:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    return None  # a partial frame at the end is dropped with the stream
                self._frames.feed(data)
            return chunk
        except FrameError as exc:
            log.warning("exec %s: bad stream from the engine: %s", self.exec_id[:12], exc)
            return None
        except (ConnectionError, OSError):
            return None

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or self._closed:
            return
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("exec %s stdin closed by the engine: %s", self.exec_id[:12], exc)
            self._stdin_closed = True

    async def close_stdin(self) -> None:
        if self._stdin_closed or self._closed:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof():
                self._writer.write_eof()

    async def resize(self, width: int, height: int) -> None:
        if not self._tty:
            return
        with contextlib.suppress(EngineError, SandboxGone):
            await self._engine.exec_resize(self.exec_id, width, height)

    async def wait(self) -> int:
        if self._aborted:
            return ABORTED_STATUS  # the sandbox died: the engine may not know the exec any more
        # The engine records the exit code a moment after the stream ends.
        for _ in range(50):
            info = await self._engine.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await asyncio.sleep(0.02)
        return 255

    def abort(self) -> None:
        """End the stream now because its sandbox died; `wait()` then reports ABORTED_STATUS.

        The transport is dropped, not closed: a dead sandbox's engine may never read the input
        still queued, and a graceful close would wait for it forever.
        """
        self._aborted = True
        self._closed = True
        self._writer.transport.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
