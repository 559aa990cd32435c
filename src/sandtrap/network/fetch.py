"""Fetch-on-behalf: which URLs may be fetched, and the fetch itself (one HTTP/1.1 GET).

Everything here starts from attacker input (a URL and a User-Agent a sandbox sent, relayed by
the sinkhole, which root in a sandbox may have taken over). A URL is fetched only when it is
plain `http://`, its host is a name or an address, and every address it is fetched from is
allowed: private, loopback, link-local, multicast, reserved and unspecified addresses are refused
after resolution unless `allow` names them (with `public: false`, only those are fetched), and
`deny` always wins. The address checked is the
address connected to (no second resolution, so DNS rebinding gets nowhere). Redirects are not
followed: they go back to the sandbox, whose client follows them through the sinkhole, and each
new URL is checked again. The body is bounded by `max_bytes`, the whole exchange by a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from sandtrap.sandboxconfig import FetchConfig

MAX_HEAD = 64 * 1024
MAX_URL = 2048
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.?)*")  # letters, digits, dots, hyphens
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """Not fetched: the URL, its addresses or the answer were refused (the message says why)."""


@dataclass(frozen=True)
class Target:
    url: str
    name: str  # the name or address resolved
    host: str  # as sent in Host:
    port: int
    path: str  # path and query, as sent in the request line


@dataclass(frozen=True)
class Fetched:
    address: str
    port: int
    status: int
    reason: str
    content_type: str
    location: str
    body: bytes


def parse_target(url: str) -> Target:
    """The URL as a fetchable target (pure).

    Raises:
        FetchRefused: not `http://host[:port]/...`, or a host that is neither a name nor an address.
    """
    if len(url) > MAX_URL or _CONTROL.search(url):
        raise FetchRefused("URL too long or with control characters")
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise FetchRefused("URL does not parse") from None
    if parts.scheme != "http":
        raise FetchRefused(f"scheme {parts.scheme!r} is not fetched (http only)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchRefused("URL has no host")
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and (len(host) > 253 or not _HOST.fullmatch(host)):
        raise FetchRefused("host is neither a name nor an address")
    shown = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return Target(
        url=url, name=host, host=shown if port == 80 else f"{shown}:{port}", port=port, path=path
    )


def _plain(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(address: str, config: FetchConfig) -> str | None:
    """Why this address is not fetched from, or None when it may be (pure)."""
    try:
        ip = _plain(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return f"{address!r} is not an address"
    if any(ip in ipaddress.ip_network(net) for net in config.deny):
        return f"{ip} is denied (fetch.deny)"
    if any(ip in ipaddress.ip_network(net) for net in config.allow):
        return None
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is {kind.replace('_', '-')} (not in fetch.allow)"
    if not ip.is_global:
        return f"{ip} is not a global address (not in fetch.allow)"
    if not config.public:
        return f"{ip} is not in fetch.allow (fetch.public is false)"
    return None


async def resolve(host: str, port: int, config: FetchConfig) -> list[str]:
    """The addresses of `host` that may be fetched from, in resolver order.

    Raises:
        FetchRefused: the name does not resolve, or every address it has is refused.
    """
    bare = host
    try:
        ipaddress.ip_address(bare)
        found = [bare]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise FetchRefused(f"{bare} does not resolve: {exc}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in found if refusal(a, config) is None]
    if not allowed:
        reasons = "; ".join(str(refusal(a, config)) for a in found[:4])
        raise FetchRefused(f"no address of {bare} may be fetched from: {reasons}")
    return allowed


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text)[:limit]


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, reason and the (lower-cased, last-wins) headers of a response head (pure).

    Raises:
        FetchRefused: not an HTTP/1.x status line.
    """
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", lines[0])
    if match is None:
        raise FetchRefused("the server's answer is not HTTP/1.x")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), _clean(match.group(2) or "", 64), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, Any], limit: int) -> bytes:
    def check(size: int) -> None:
        if size > limit:
            raise FetchRefused(f"body larger than fetch.max_bytes ({limit})")

    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FetchRefused("bad chunk size") from None
            if size == 0:
                return bytes(body)
            check(len(body) + size)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        try:
            size = int(headers["content-length"])
        except ValueError:
            raise FetchRefused("bad Content-Length") from None
        check(size)
        return await reader.readexactly(size)
    body = bytearray()
    while chunk := await reader.read(65536):
        body += chunk
        check(len(body))
    return bytes(body)


async def _get(target: Target, address: str, user_agent: str, limit: int) -> Fetched:
    reader, writer = await asyncio.open_connection(address, target.port, limit=MAX_HEAD)
    try:
        request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\n"
            f"User-Agent: {_clean(user_agent, 512) or 'Wget/1.21.3'}\r\nAccept: */*\r\n"
            "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1", "replace"))
        await writer.drain()
        try:
            head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
        except asyncio.LimitOverrunError:
            raise FetchRefused("response head too large") from None
        status, reason, headers = parse_head(head)
        body = await _read_body(reader, headers, limit)
        return Fetched(
            address=address, port=target.port, status=status, reason=reason,
            content_type=_clean(headers.get("content-type", ""), 128),
            location=_clean(headers.get("location", ""), MAX_URL), body=body,
        )  # fmt: skip
    finally:
        writer.close()


async def fetch(url: str, user_agent: str, config: FetchConfig) -> Fetched:
    """GET `url` from the first allowed address that answers, within the configured bounds.

    Raises:
        FetchRefused: refused by policy, or the server's answer is unusable, or it failed.
    """
    target = parse_target(url)
    try:
        async with asyncio.timeout(config.timeout_seconds):
            addresses = await resolve(target.name, target.port, config)
            last: Exception | None = None
            for address in addresses[:4]:
                try:
                    return await _get(target, address, user_agent, config.max_bytes)
                except OSError as exc:
                    last = exc
            raise FetchRefused(f"connection failed: {last}")
    except TimeoutError:
        raise FetchRefused(f"no answer within {config.timeout_seconds:g} s") from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise FetchRefused("the server's answer ended early or was malformed") from None
