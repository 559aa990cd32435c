"""The network events: what the sinkhole saw a sandbox send (`sandbox.network: sinkhole`).

Registered in the catalogue (events/catalogue.py) and documented in docs/events.md like every
other event; built from the sinkhole's records by network/feed.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sandtrap.events.base import Event


@dataclass(frozen=True, kw_only=True)
class NetworkEvent(Event):
    """One thing a sandbox sent, as the sinkhole saw it.

    `session` and `src_ip` are the session's (the attacker's address), found from the sandbox's
    address (`sandbox_ip`) when the event arrives; both are null for a sandbox that no session
    holds. `dst_ip`/`dst_port` are where the sandbox was going (every one of them is the sinkhole).
    """

    session: str | None
    src_ip: str | None
    src_port: int | None = None
    dst_port: int
    container_id: str | None
    sandbox_ip: str
    dst_ip: str


@dataclass(frozen=True, kw_only=True)
class NetworkDns(NetworkEvent):
    """A DNS query (UDP port 53, to any address): answered, every name exists."""

    eventid: ClassVar[str] = "network.dns"
    query: str
    qtype: str


@dataclass(frozen=True, kw_only=True)
class NetworkConnect(NetworkEvent):
    """A TCP connection accepted by the sinkhole (any address, any port), or an ICMP echo request
    (answered, `dst_port` 0)."""

    eventid: ClassVar[str] = "network.connect"
    proto: str


@dataclass(frozen=True, kw_only=True)
class NetworkHttp(NetworkEvent):
    """An HTTP/1.x request head (and up to 64 KiB of its body) on any port; answered like nginx."""

    eventid: ClassVar[str] = "network.http"
    method: str
    host: str
    url: str
    user_agent: str
    headers: list[list[str]]
    body_bytes: int
    body: str  # base64 of the body's first 512 bytes


@dataclass(frozen=True, kw_only=True)
class NetworkTls(NetworkEvent):
    """A TLS ClientHello: its server name, JA3 (MD5) and ALPN; answered with handshake_failure."""

    eventid: ClassVar[str] = "network.tls"
    sni: str
    ja3: str
    alpn: list[str]


@dataclass(frozen=True, kw_only=True)
class NetworkData(NetworkEvent):
    """The first bytes of a TCP stream that is neither HTTP nor TLS."""

    eventid: ClassVar[str] = "network.data"
    first_bytes: str  # base64 of at most 512 bytes
    bytes: int


@dataclass(frozen=True, kw_only=True)
class NetworkUdp(NetworkEvent):
    """A UDP datagram to a port other than 53 (or a malformed DNS query)."""

    eventid: ClassVar[str] = "network.udp"
    first_bytes: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class NetworkFlood(NetworkEvent):
    """Records of one sandbox over its budget (`sandbox.sinkhole.events_per_second` and
    `events_burst`): `count` of `kind` not written, over `seconds`; one per sandbox and kind per
    `flood_report_interval_seconds`. `dst_ip` is empty and `dst_port` 0."""

    eventid: ClassVar[str] = "network.flood"
    kind: str
    count: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class NetworkDownload(NetworkEvent):
    """Fetch-on-behalf (`sandbox.sinkhole.fetch`): a sandbox's HTTP GET fetched for real from
    `dst_ip`:`dst_port` (the address connected to, after the policy's checks), the answer passed
    back to the sandbox and its body stored as `artifact` (var/artifacts/<sha256>)."""

    eventid: ClassVar[str] = "network.download"
    url: str
    status: int
    content_type: str
    size: int
    sha256: str
    artifact: str


@dataclass(frozen=True, kw_only=True)
class NetworkFetchFailed(NetworkEvent):
    """Fetch-on-behalf refused or failed (a private address, too large, no answer, ...); the
    sandbox got the sinkhole's own answer instead. `dst_ip` is empty when no address was tried.
    Requests over the rate limits are not one event each: `network.flood` of kind `fetch`."""

    eventid: ClassVar[str] = "network.fetch_failed"
    url: str
    reason: str


NETWORK_EVENTS: tuple[type[NetworkEvent], ...] = (
    NetworkDns, NetworkConnect, NetworkHttp, NetworkTls, NetworkData, NetworkUdp, NetworkFlood,
    NetworkDownload, NetworkFetchFailed,
)  # fmt: skip
