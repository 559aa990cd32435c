"""PROXY protocol v1 and v2 headers (haproxy.org/download/2.9/doc/proxy-protocol.txt): pure parsing.

Owns recognising and strictly validating the one header a load balancer sends before the SSH
identification string. Reading it from the socket (bounded in time and size) is ssh/accept.py's.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # spec section 2.1: the longest v1 line, CRLF included
# Spec section 2.2 allows up to 16 + 65535 bytes; with TLVs real balancers send well under 1 KiB.
V2_MAX_BYTES = 16 + 2048
MAX_HEADER_BYTES = V2_MAX_BYTES

_V2_ADDRESS_LENGTHS = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header; `source` is None for v2 LOCAL and v1 UNKNOWN (use the socket's peer)."""

    version: int
    length: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def _port(text: bytes) -> int:
    # Spec: ports are decimal without leading zeroes, 0-65535.
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise ProxyHeaderError("bad port in PROXY v1 header")
    return int(text)


def _address(text: bytes, family: bytes) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("bad address in PROXY v1 header") from None
    if address.version != (4 if family == b"TCP4" else 6):
        raise ProxyHeaderError("address does not match the PROXY v1 protocol family")
    return str(address)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(data) >= V1_MAX_BYTES or b"\n" in data:
            raise ProxyHeaderError("PROXY v1 line too long or not ended by CRLF")
        return None
    line = data[:end]
    parts = line.split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(1, end + 2)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    family = parts[1]
    source = (_address(parts[2], family), _port(parts[4]))
    destination = (_address(parts[3], family), _port(parts[5]))
    return ProxyHeader(1, end + 2, source, destination)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version_command, family, length = struct.unpack_from(">BBH", data, 12)
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyHeaderError("unsupported PROXY v2 version or command")
    total = 16 + length
    if total > V2_MAX_BYTES:
        raise ProxyHeaderError("PROXY v2 header too long")
    if len(data) < total:
        return None
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own health check
        return ProxyHeader(2, total)
    if family == 0x00:  # UNSPEC
        return ProxyHeader(2, total)
    needed = _V2_ADDRESS_LENGTHS.get(family)
    if needed is None or family & 0x0F != 0x01:
        raise ProxyHeaderError("PROXY v2 family is not TCP over IPv4/IPv6")
    if length < needed:
        raise ProxyHeaderError("PROXY v2 address block too short")
    body = data[16:total]
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if family == 0x11:
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack_from(">HH", body, 8)
    elif family == 0x21:
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack_from(">HH", body, 32)
    else:
        raise ProxyHeaderError("PROXY v2 family is not TCP over IPv4/IPv6")
    return ProxyHeader(2, total, (str(src), sport), (str(dst), dport))


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse the header at the start of `data`; None while more bytes are needed.

    `ProxyHeader.length` says how many bytes it took; what follows is the SSH stream.

    Raises:
        ProxyHeaderError: not a PROXY header (v1 or v2), or malformed.
    """
    if not data:
        return None
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        return _parse_v2(data) if len(data) >= 12 else None
    if data[:6] == V1_PREFIX[: len(data[:6])] and data[:1] == b"P":
        return _parse_v1(data) if len(data) >= 6 else None
    raise ProxyHeaderError("no PROXY protocol header")


__all__ = [
    "MAX_HEADER_BYTES",
    "ProxyHeader",
    "ProxyHeaderError",
    "parse_proxy_header",
]
