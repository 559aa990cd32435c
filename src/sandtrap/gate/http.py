"""The HTTP/1.1 subset the gate speaks to its client: one request head and body, peer credentials.

Owns parsing what the (possibly compromised) client sends, bounded and strict: `parse_head` is
pure and never raises anything but `BadRequest`, whatever the bytes. What is allowed is
gate/policy.py's and gate/bodies.py's, the relay and the byte budgets gate/proxy.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import socket
import struct
from dataclasses import dataclass

# RFC 9110 tokens for methods and header names; request targets in origin form with the
# characters SandTrap's client sends (policy.route narrows the path further).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_TARGET = re.compile(r"/[\x21-\x7e]{0,8191}")
_VALUE = re.compile(r"[\t\x20-\x7e]{0,8192}")
_LENGTH = re.compile(r"[0-9]{1,9}")
MAX_HEADERS = 64
# After an answer, what the client still sends is read and dropped for at most this long.
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    content_length: int
    body: bytes = b""

    @property
    def upgrade(self) -> bool:
        tokens = {item.strip().lower() for item in self.headers.get("connection", "").split(",")}
        return "upgrade" in tokens


class BadRequest(Exception):
    """The client did not speak the HTTP/1.1 subset the gate accepts."""


def parse_head(head: bytes) -> Request:
    """A request head (up to and including the blank line) as a Request without its body.

    Raises:
        BadRequest: a bad request line, header, repeated header, chunked framing or length.
    """
    if not head.endswith(b"\r\n\r\n"):
        raise BadRequest("truncated request head")
    lines = head[:-4].decode("latin-1").split("\r\n")
    if any("\r" in line or "\n" in line or "\x00" in line for line in lines):
        raise BadRequest("bare CR, LF or NUL in the request head")
    parts = lines[0].split(" ")
    if (
        len(parts) != 3
        or not _METHOD.fullmatch(parts[0])
        or not _TARGET.fullmatch(parts[1])
        or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
    ):
        raise BadRequest(f"bad request line {lines[0][:100]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.lower()
        # No whitespace before the colon, no folding (RFC 9112 5.1, 5.2), no repeats.
        if not sep or not _TOKEN.fullmatch(name) or key in headers:
            raise BadRequest(f"bad or repeated header {name[:40]!r}")
        value = value.strip(" \t")
        if not _VALUE.fullmatch(value):
            raise BadRequest(f"bad value of header {name[:40]!r}")
        headers[key] = value
    if "transfer-encoding" in headers:
        raise BadRequest("chunked request bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not _LENGTH.fullmatch(length_text):
        raise BadRequest(f"bad Content-Length {length_text[:20]!r}")
    return Request(parts[0], parts[1], headers, int(length_text))


async def read_head(reader: asyncio.StreamReader) -> Request | None:
    """The next request head; None when the client closed before sending a byte.

    Raises:
        BadRequest: see `parse_head`; also a head beyond the reader's limit or cut short.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("truncated request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    return parse_head(head)


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends, bounded in bytes and time.

    Closing a socket with unread input makes the kernel reset the connection (ECONNRESET at the
    peer, AF_UNIX as TCP), which can destroy the answer just written: a refused body, a
    pipelined second request. Nothing read here is parsed or kept.
    """
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError, OSError, ConnectionError):
        async with asyncio.timeout(LINGER_SECONDS):
            while dropped < LINGER_BYTES and (data := await reader.read(64 * 1024)):
                dropped += len(data)


def answer_head(status: int, phrase: str, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def peer_credentials(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end of a Unix socket, when the kernel says."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None, None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


__all__ = [
    "BadRequest",
    "Request",
    "answer_head",
    "linger",
    "parse_head",
    "peer_credentials",
    "read_head",
]


def trim_heap() -> None:
    """Return freed heap memory to the system (glibc's malloc_trim; a no-op elsewhere).

    A burst of connections leaves CPython's freed buffers in glibc arenas, which it keeps for
    reuse: measured, 95 MiB stayed after 3,000 hostile requests until trimmed.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
