"""The engine's multiplexed exec stream: framing, merging, and broken input."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import cast

import pytest

from sandtrap.sandbox.base import STDERR, STDOUT
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.docker_exec import (
    ABORTED_STATUS,
    DockerExecStream,
    FrameBuffer,
    FrameError,
)


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def test_frames_split_anywhere_come_out_whole() -> None:
    wire = frame(1, b"hello ") + frame(1, b"world") + frame(2, b"oops")
    frames = FrameBuffer()
    chunks = []
    for index in range(len(wire)):  # one byte at a time: every split point
        frames.feed(wire[index : index + 1])
        while (chunk := frames.take()) is not None:
            chunks.append(chunk)
    assert b"".join(c.data for c in chunks if c.stream == STDOUT) == b"hello world"
    assert b"".join(c.data for c in chunks if c.stream == STDERR) == b"oops"


def test_consecutive_frames_of_one_stream_are_merged_in_order() -> None:
    frames = FrameBuffer()
    frames.feed(frame(1, b"a" * 10) + frame(1, b"") + frame(1, b"b" * 10) + frame(2, b"e"))
    frames.feed(frame(1, b"c"))
    first = frames.take()
    assert first is not None and (first.stream, first.data) == (STDOUT, b"a" * 10 + b"b" * 10)
    second = frames.take()
    assert second is not None and (second.stream, second.data) == (STDERR, b"e")
    third = frames.take()
    assert third is not None and third.data == b"c"
    assert frames.take() is None


def test_merging_stops_at_the_limit() -> None:
    frames = FrameBuffer()
    block = b"x" * 32 * 1024
    frames.feed(frame(1, block) * 20)  # 640 KiB
    sizes = []
    while (chunk := frames.take()) is not None:
        sizes.append(len(chunk.data))
    assert sum(sizes) == 20 * len(block)
    assert max(sizes) <= 256 * 1024 and len(sizes) == 3


@pytest.mark.parametrize("header", [struct.pack(">BxxxI", 7, 1), struct.pack(">BxxxI", 1, 1 << 30)])
def test_a_broken_header_is_an_error_not_a_huge_buffer(header: bytes) -> None:
    frames = FrameBuffer()
    frames.feed(header)
    with pytest.raises(FrameError):
        frames.take()


async def test_abort_ends_a_stream_whose_engine_stopped_reading() -> None:
    """A dead sandbox's engine may never read queued input: abort must not wait for it."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    stream = DockerExecStream(cast(Engine, None), "e" * 64, reader, writer, tty=False)
    try:
        writer.write(b"x" * 8 * 1024 * 1024)  # far more than the socket buffers: stays queued
        reading = asyncio.create_task(stream.read())
        await asyncio.sleep(0.05)
        stream.abort()
        async with asyncio.timeout(2):
            assert await reading is None
            await stream.close()
        assert await stream.wait() == ABORTED_STATUS
    finally:
        theirs.close()
