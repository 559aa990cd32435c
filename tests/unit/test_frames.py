"""The engine's multiplexed exec stream: framing, merging, and broken input."""

from __future__ import annotations

import struct

import pytest

from sandtrap.sandbox.base import STDERR, STDOUT
from sandtrap.sandbox.docker import FrameBuffer, FrameError


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
