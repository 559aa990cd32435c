"""The frames between the front and the in-sandbox agent (containers/targets/common/agent.c).

Pure: encoding the front's requests and parsing what the agent says, with no I/O. Every frame is
`u32 length | u8 type | u32 channel | payload` (big-endian, length counts type, channel and
payload). The agent is attacker-controlled, so the parser refuses anything the front did not ask
for with `AgentProtocolError`; the link (sandbox/agent.py) decides what is open.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_FRAME = 64 * 1024  # the length field, at most (type + channel + payload)
MAX_DATA = 32 * 1024  # stdin bytes per DATA frame the front sends
HELLO_TEXT = b"sandtrap-agent 1"
_HEAD = struct.Struct(">IBI")

# Front to agent.
HELLO, OPEN, DATA, EOF, RESIZE, SIGNAL, CLOSE = range(1, 8)
# Agent to front.
A_HELLO, A_OPENED, A_STDOUT, A_STDERR, A_EXIT, A_FAILED = range(0x41, 0x47)
_AGENT_TYPES = frozenset(range(0x41, 0x47))


class AgentProtocolError(Exception):
    """The agent broke the protocol: the link to it ends."""


@dataclass(frozen=True)
class Frame:
    """One frame from the agent, checked for shape (not yet for the channel being open)."""

    kind: int
    channel: int
    payload: bytes


def frame(kind: int, channel: int, payload: bytes = b"") -> bytes:
    """One encoded frame."""
    if len(payload) + 5 > MAX_FRAME:
        raise ValueError(f"payload of {len(payload)} bytes is over the frame limit")
    return _HEAD.pack(len(payload) + 5, kind, channel) + payload


def data_frames(channel: int, data: bytes) -> list[bytes]:
    """Stdin bytes as DATA frames of at most MAX_DATA bytes each."""
    return [frame(DATA, channel, data[i : i + MAX_DATA]) for i in range(0, len(data), MAX_DATA)]


def _c_string(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if b"\x00" in raw:
        raise ValueError("a NUL in an exec string")
    return raw + b"\x00"


def open_frame(
    channel: int,
    argv: Sequence[str],
    *,
    user: str,
    tty: bool,
    env: Mapping[str, str] | None,
    workdir: str | None,
    size: tuple[int, int] | None,
) -> bytes:
    """The OPEN request: u8 tty, u16 width, u16 height, u16 argc, u16 envc, then C strings
    (user, workdir, argv..., NAME=value...)."""
    if not argv or len(argv) > 256 or len(env or {}) > 256:
        raise ValueError("argv must have 1 to 256 entries and env at most 256")
    width, height = size if tty and size else (0, 0)
    head = struct.pack(
        ">BHHHH",
        1 if tty else 0,
        min(max(width, 0), 0xFFFF),
        min(max(height, 0), 0xFFFF),
        len(argv),
        len(env or {}),
    )
    strings = [user, workdir or "", *argv, *(f"{k}={v}" for k, v in (env or {}).items())]
    return frame(OPEN, channel, head + b"".join(_c_string(s) for s in strings))


def resize_frame(channel: int, width: int, height: int) -> bytes:
    return frame(
        RESIZE, channel, struct.pack(">HH", min(max(width, 0), 0xFFFF), min(max(height, 0), 0xFFFF))
    )


@dataclass(frozen=True)
class Opened:
    """The agent's answer to OPEN: the command's pid and terminal ("pts/0", "notty")."""

    pid: int
    line: str


def parse_opened(payload: bytes) -> Opened:
    if len(payload) < 4 or len(payload) > 4 + 32:
        raise AgentProtocolError(f"OPENED payload of {len(payload)} bytes")
    (pid,) = struct.unpack_from(">I", payload)
    line = payload[4:].decode("ascii", "replace")
    if not (line == "notty" or (line.startswith("pts/") and line[4:].isdigit())):
        raise AgentProtocolError(f"OPENED names terminal {line!r}")
    return Opened(pid, line)


def parse_exit(payload: bytes) -> int:
    """An EXIT status: 0 to 255, anything else is a lie."""
    if len(payload) != 4:
        raise AgentProtocolError(f"EXIT payload of {len(payload)} bytes")
    status: int = struct.unpack(">I", payload)[0]
    if status > 255:
        raise AgentProtocolError(f"exit status {status}")
    return status


class FrameParser:
    """Splits the agent's byte stream into frames; bounded by one frame.

    `feed()` raises AgentProtocolError for a length outside 5..MAX_FRAME or a type the agent
    does not send; the buffer never holds more than one frame plus one read.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= _HEAD.size:
            length, kind, channel = _HEAD.unpack_from(buffer, offset)
            if length < 5 or length > MAX_FRAME:
                raise AgentProtocolError(f"frame length {length}")
            if kind not in _AGENT_TYPES:
                raise AgentProtocolError(f"frame type {kind:#x}")
            end = offset + 4 + length
            if len(buffer) < end:
                break
            frames.append(Frame(kind, channel, bytes(buffer[offset + _HEAD.size : end])))
            offset = end
        del buffer[:offset]
        return frames

    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)


__all__ = [
    "A_EXIT",
    "A_FAILED",
    "A_HELLO",
    "A_OPENED",
    "A_STDERR",
    "A_STDOUT",
    "CLOSE",
    "DATA",
    "EOF",
    "HELLO",
    "HELLO_TEXT",
    "MAX_DATA",
    "MAX_FRAME",
    "OPEN",
    "RESIZE",
    "SIGNAL",
    "AgentProtocolError",
    "Frame",
    "FrameParser",
    "Opened",
    "data_frames",
    "frame",
    "open_frame",
    "parse_exit",
    "parse_opened",
    "resize_frame",
]
