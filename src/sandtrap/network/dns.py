"""DNS for the sinkhole: parse one query, answer it (RFC 1035); pure, standard library only.

Every name exists: A points at the sinkhole, other types get plausible records or an empty
answer. What to log is the service's business (`service.py`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
         33: "SRV", 65: "HTTPS", 255: "ANY"}  # fmt: skip
MAX_NAME = 253
TTL = 300


@dataclass(frozen=True)
class Query:
    ident: int
    flags: int
    name: str  # dotted, lower-case, without the final dot; labels escaped as \DDD when odd
    qtype: int
    qclass: int
    question: bytes  # the raw question section (name, type, class), echoed in the answer

    @property
    def type_name(self) -> str:
        return TYPES.get(self.qtype, f"TYPE{self.qtype}")


def _label_text(raw: bytes) -> str:
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw
    ).lower()


def parse_query(data: bytes) -> Query | None:
    """The first question of a standard query, or None for anything else (never raises)."""
    if len(data) < 12 or len(data) > 4096:
        return None
    ident, flags, qdcount = struct.unpack_from("!HHH", data)
    if flags & 0x8000 or (flags >> 11) & 0xF != 0 or qdcount < 1:
        return None  # a response, not a standard query, or no question
    labels: list[str] = []
    pos, length = 12, 0
    while True:
        if pos >= len(data):
            return None
        size = data[pos]
        if size & 0xC0:
            return None  # compression pointers have no place in a query's first name
        pos += 1
        if size == 0:
            break
        raw = data[pos : pos + size]
        if len(raw) != size:
            return None
        length += size + 1
        if length > MAX_NAME + 1:
            return None
        labels.append(_label_text(raw))
        pos += size
    if pos + 4 > len(data):
        return None
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    return Query(ident, flags, ".".join(labels), qtype, qclass, data[12 : pos + 4])


def _name(text: str) -> bytes:
    out = b""
    for label in text.split("."):
        raw = label.encode("ascii", "replace")[:63]
        if raw:
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _record(rtype: int, rdata: bytes) -> bytes:
    # The owner is the question's name: a pointer to offset 12.
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, TTL, len(rdata)) + rdata


def _records(query: Query, address: str) -> list[bytes]:
    name = query.name or "localhost"
    if query.qtype in (1, 255):
        return [_record(1, ipaddress.IPv4Address(address).packed)]
    if query.qtype == 15:
        return [_record(15, struct.pack("!H", 10) + _name(f"mail.{name}"))]
    if query.qtype == 2:
        return [_record(2, _name(f"ns1.{name}")), _record(2, _name(f"ns2.{name}"))]
    if query.qtype == 16:
        text = b"v=spf1 -all"
        return [_record(16, bytes([len(text)]) + text)]
    if query.qtype == 12:
        return [_record(12, _name("host.unassigned.invalid"))]
    # AAAA and the rest: the name exists but has no such record (sandboxes have no IPv6 route).
    return []


def answer(query: Query, address: str) -> bytes:
    """The response: NOERROR, recursion available, the query's question and the records."""
    flags = 0x8000 | 0x0080 | (query.flags & 0x0100)  # QR, RA, RD copied
    if query.qclass not in (1, 255):
        records: list[bytes] = []
        flags |= 4  # NOTIMP for classes other than IN
    else:
        records = _records(query, address)
    head = struct.pack("!HHHHHH", query.ident, flags, 1, len(records), 0, 0)
    return head + query.question + b"".join(records)


def query_bytes(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    """A standard recursive query (for tests and the verifier)."""
    head = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    return head + _name(name) + struct.pack("!HH", qtype, 1)
