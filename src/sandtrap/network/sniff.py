"""What the first bytes of a TCP stream say: an HTTP/1.x request head, a TLS ClientHello, or
neither; and the answers the sinkhole gives. Pure, standard library only, bounded everywhere.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
MAX_FIELD = 1024  # each logged header name/value, the URL, Host and User-Agent
_METHOD = re.compile(rb"[A-Z]{3,12} ")
_REQUEST_LINE = re.compile(rb"([A-Z]{3,12}) (\S{1,8192}) (HTTP/1\.[01])")
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def clip(text: str, limit: int = MAX_FIELD) -> str:
    return text if len(text) <= limit else text[:limit]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    version: str
    host: str
    user_agent: str
    headers: tuple[tuple[str, str], ...]
    content_length: int
    head_bytes: int  # bytes of the head, CRLFCRLF included


def looks_like_http(prefix: bytes) -> bool:
    return bool(_METHOD.match(prefix[:13]))


def head_end(data: bytes) -> int:
    """Index just past the blank line ending the head, or -1."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep, 0, MAX_HEAD)
        if at >= 0:
            return at + len(sep)
    return -1


def parse_http_head(data: bytes) -> HttpRequest | None:
    """The request head at the start of `data`, or None when it is not (yet) one."""
    end = head_end(data)
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").replace("\r\n", "\n").split("\n")
    match = _REQUEST_LINE.fullmatch(lines[0].encode("latin-1"))
    if match is None:
        return None
    headers: list[tuple[str, str]] = []
    host = agent = ""
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            continue
        name, value = name.strip(), value.strip()
        lowered = name.lower()
        if lowered == "host" and not host:
            host = clip(value)
        elif lowered == "user-agent" and not agent:
            agent = clip(value)
        elif lowered == "content-length" and value.isdigit():
            length = min(int(value[:12]), 1 << 40)
        if len(headers) < MAX_HEADERS:
            headers.append((clip(name, 128), clip(value)))
    method, target, version = (part.decode("latin-1") for part in match.groups())
    return HttpRequest(method, clip(target), version, host, agent, tuple(headers), length, end)


def full_url(request: HttpRequest, dst_ip: str, dst_port: int, tls: bool = False) -> str:
    """The URL the client asked for: absolute-form kept, origin-form joined to Host."""
    if "://" in request.url[:16]:
        return request.url
    scheme = "https" if tls else "http"
    default = 443 if tls else 80
    host = request.host or (dst_ip if dst_port == default else f"{dst_ip}:{dst_port}")
    return clip(f"{scheme}://{host}{request.url}", 2048)


_TYPES = {".sh": "text/x-sh", ".txt": "text/plain", ".html": "text/html", ".htm": "text/html",
          ".json": "application/json", ".js": "application/javascript"}  # fmt: skip
_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>Welcome to nginx!</title></head>\n<body>\n"
    b"<h1>Welcome to nginx!</h1>\n</body>\n</html>\n"
)


def http_response(request: HttpRequest, date: str) -> bytes:
    """A plausible nginx answer: a page, an empty script, or an octet stream by the URL's end."""
    path = request.url.split("?", 1)[0].lower()
    dot = path.rfind(".")
    ext = path[dot:] if dot > path.rfind("/") else ""
    if request.method == "HEAD" or ext in ("", ".html", ".htm", ".php"):
        ctype, body = "text/html", _PAGE
    elif ext == ".sh":
        ctype, body = _TYPES[ext], b"#!/bin/sh\nexit 0\n"
    else:
        ctype, body = _TYPES.get(ext, "application/octet-stream"), b""
    head = (
        f"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: {date}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + (b"" if request.method == "HEAD" else body)


@dataclass(frozen=True)
class ClientHello:
    sni: str
    ja3: str  # the JA3 string; ja3_hash is its MD5
    alpn: tuple[str, ...]

    @property
    def ja3_hash(self) -> str:
        return hashlib.md5(self.ja3.encode(), usedforsecurity=False).hexdigest()


def tls_record_size(prefix: bytes) -> int | None:
    """Bytes of the first TLS handshake record (header included), or None if not TLS."""
    if len(prefix) < 5 or prefix[0] != 0x16 or prefix[1] != 3:
        return None
    return 5 + int(struct.unpack_from("!H", prefix, 3)[0])


def _u16_list(raw: bytes) -> list[int]:
    return [v for (v,) in struct.iter_unpack("!H", raw[: len(raw) // 2 * 2]) if v not in _GREASE]


def parse_client_hello(data: bytes) -> ClientHello | None:
    """SNI, ALPN and the JA3 string of a ClientHello in one TLS record; None if malformed."""
    try:
        if tls_record_size(data) is None or data[5] != 1:
            return None
        body = data[9 : 9 + int.from_bytes(data[6:9], "big")]
        version = struct.unpack_from("!H", body, 0)[0]
        pos = 34
        pos += 1 + body[pos]  # session id
        size = struct.unpack_from("!H", body, pos)[0]
        ciphers = _u16_list(body[pos + 2 : pos + 2 + size])
        pos += 2 + size
        pos += 1 + body[pos]  # compression methods
        extensions: list[int] = []
        groups: list[int] = []
        formats: list[int] = []
        alpn: list[str] = []
        sni = ""
        if pos + 2 <= len(body):
            end = min(len(body), pos + 2 + struct.unpack_from("!H", body, pos)[0])
            pos += 2
            while pos + 4 <= end:
                kind, size = struct.unpack_from("!HH", body, pos)
                value = body[pos + 4 : pos + 4 + size]
                pos += 4 + size
                if kind in _GREASE:
                    continue
                extensions.append(kind)
                if kind == 0 and len(value) > 5 and value[2] == 0:
                    name_len = struct.unpack_from("!H", value, 3)[0]
                    sni = clip(value[5 : 5 + name_len].decode("latin-1"), 255)
                elif kind == 10:
                    groups = _u16_list(value[2:])
                elif kind == 11:
                    formats = list(value[1:])
                elif kind == 16:
                    at = 2
                    while at < len(value) and len(alpn) < 8:
                        alpn.append(value[at + 1 : at + 1 + value[at]].decode("latin-1")[:32])
                        at += 1 + value[at]
    except (IndexError, struct.error):
        return None
    parts = [str(version)] + ["-".join(map(str, x)) for x in (ciphers, extensions, groups, formats)]
    return ClientHello(sni, ",".join(parts), tuple(alpn))


# handshake_failure (RFC 8446 section 6): what a server that shares no cipher sends.
TLS_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])

# Greetings of services that speak first, by port; silence elsewhere.
BANNERS = {
    21: b"220 (vsFTPd 3.0.3)\r\n",
    22: b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    25: b"220 mail.example.net ESMTP Postfix (Debian/GNU)\r\n",
    110: b"+OK Dovecot (Debian) ready.\r\n",
    143: b"* OK [CAPABILITY IMAP4rev1] Dovecot (Debian) ready.\r\n",
    587: b"220 mail.example.net ESMTP Postfix (Debian/GNU)\r\n",
}
