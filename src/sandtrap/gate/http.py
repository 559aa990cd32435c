"""The HTTP/1.1 subset the gate speaks to its client: one request head and body, peer credentials.

Owns parsing what the (possibly compromised) client sends, bounded and strict; what is allowed
is gate/policy.py's and gate/bodies.py's, the relay gate/proxy.py's.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class BadRequest(Exception):
    """The client did not speak the HTTP/1.1 subset the gate accepts."""


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request head and its Content-Length body; None when the client closed first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("truncated request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        key = name.strip().lower()
        if not sep or key in headers or name != name.strip():
            raise BadRequest(f"bad or repeated header {name[:40]!r}")
        headers[key] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest("chunked request bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or int(length_text) > 4 * 1024 * 1024:
        raise BadRequest("bad Content-Length")
    body = await reader.readexactly(int(length_text)) if int(length_text) else b""
    return Request(parts[0], parts[1], headers, body)


def peer_credentials(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end of a Unix socket, when the kernel says."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None, None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


__all__ = ["BadRequest", "Request", "peer_credentials", "read_request"]
