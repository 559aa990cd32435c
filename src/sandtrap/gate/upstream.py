"""The gate's side towards the engine: one connection per request, relays, bounded answers.

Owns connecting to the engine, the gate's own small JSON requests (inspect, list, info), and
forwarding a checked request: its head is written by the gate (never copied from the client),
the answer is relayed as it comes, and a hijacked exec stream is relayed byte for byte with
half-close. What may be forwarded is decided before this module is called (gate/policy.py,
gate/bodies.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlparse

# Reader buffers pause the transport at twice this: it bounds what one relay holds in memory.
STREAM_LIMIT = 16 * 1024
READ_SIZE = 64 * 1024
_ANSWER_LIMIT = 16 * 1024 * 1024
_ANSWER_TIMEOUT = 60.0


class Upstream:
    """The engine at `url` (unix://path or tcp://host:port). Constructing it does no I/O."""

    def __init__(self, url: str, api_version: str) -> None:
        self.url = url
        self.api_version = api_version

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parsed = urlparse(self.url)
        if parsed.scheme in ("unix", ""):
            return await asyncio.open_unix_connection(
                parsed.path or "/var/run/docker.sock", limit=STREAM_LIMIT
            )
        return await asyncio.open_connection(
            parsed.hostname, parsed.port or 2375, limit=STREAM_LIMIT
        )

    async def json(self, path: str, method: str = "GET") -> tuple[int, Any]:
        """The gate's own request (HTTP/1.0: no chunking, the engine closes after the body).

        Returns (status, decoded JSON or None); 502 for an answer that is not HTTP or too large.
        """
        reader, writer = await self.open()
        try:
            writer.write(
                f"{method} /{self.api_version}/{path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode()
            )
            await writer.drain()
            chunks: list[bytes] = []
            size = 0
            async with asyncio.timeout(_ANSWER_TIMEOUT):
                while data := await reader.read(READ_SIZE):
                    size += len(data)
                    if size > _ANSWER_LIMIT:
                        return 502, None
                    chunks.append(data)
        finally:
            writer.close()
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
            return status, json.loads(body) if body else None
        except (IndexError, ValueError, RecursionError):
            return 502, None

    async def forward(
        self,
        method: str,
        path: str,
        body: bytes,
        upgrade: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Send the checked request and relay the answer to the client.

        Raises:
            OSError: the engine cannot be reached (nothing was sent to the client yet).
        """
        up_reader, up_writer = await self.open()
        try:
            head = [f"{method} {path} HTTP/1.1", "Host: docker"]
            if body:
                head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += ["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"]
            up_writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await up_writer.drain()
            if upgrade:
                await _relay_upgraded(reader, writer, up_reader, up_writer)
            else:
                await pump(up_reader, writer)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await up_writer.wait_closed()


async def _relay_upgraded(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """After the engine's 101, bytes both ways as they come; EOF from either side is passed on
    as a half-close, and the relay ends when the engine ends the stream."""
    async with asyncio.timeout(_ANSWER_TIMEOUT):
        head = await up_reader.readuntil(b"\r\n\r\n")
    writer.write(head)
    await writer.drain()
    if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
        await pump(up_reader, writer)
        return

    async def client_to_engine() -> None:
        await pump(reader, up_writer)
        with contextlib.suppress(OSError, RuntimeError):
            if up_writer.can_write_eof():
                up_writer.write_eof()

    upward = asyncio.create_task(client_to_engine(), name="gate-stdin")
    try:
        await pump(up_reader, writer)
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
    finally:
        upward.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
            await upward


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until EOF on `source`; a sink that went away ends the copy quietly."""
    while data := await source.read(READ_SIZE):
        try:
            sink.write(data)
            await sink.drain()
        except (ConnectionError, OSError):
            return
