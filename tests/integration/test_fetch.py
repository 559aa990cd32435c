"""Fetch-on-behalf without the engine: the policy (pure), the HTTP client against servers of our
own on 127.0.0.1, and the broker on a real Unix socket fed hostile requests as a compromised
sinkhole would send them. The sinkhole and the sandbox are tests/docker/test_sinkhole.py's."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import parse_config
from sandtrap.events import Event, Peer, SandboxAllocated, SandboxReleased, to_record
from sandtrap.network.broker import FetchBroker
from sandtrap.network.feed import Owner, SinkholeFeed
from sandtrap.network.fetch import FetchRefused, fetch, parse_head, parse_target, refusal
from sandtrap.network.service import _fetch_head
from sandtrap.sandbox.hardening import pool_name, session_name
from sandtrap.sandbox.sinknet import FETCH_MOUNT, network_name, sinkhole_body
from sandtrap.sandboxconfig import FetchConfig

LOCAL = FetchConfig(enabled=True, allow=["127.0.0.1/32"], public=False, timeout_seconds=3)
PAYLOAD = b"#!/bin/sh\necho payload-ran\n"


# --- the policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.17.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0",  # noqa: S104
        "224.0.0.1", "239.1.2.3", "240.0.0.1", "255.255.255.255",
        "192.0.2.1", "198.51.100.9", "203.0.113.7", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(address, FetchConfig(enabled=True)) is not None


def test_public_addresses_allow_and_deny() -> None:
    default = FetchConfig(enabled=True)
    assert refusal("8.8.8.8", default) is None
    assert refusal("2606:4700::1111", default) is None
    assert refusal("8.8.8.8", FetchConfig(enabled=True, public=False)) is not None
    assert refusal("8.8.8.8", FetchConfig(enabled=True, deny=["8.8.0.0/16"])) is not None
    allowed = FetchConfig(enabled=True, allow=["10.9.0.0/16"])
    assert refusal("10.9.1.1", allowed) is None
    assert refusal("10.8.1.1", allowed) is not None
    both = FetchConfig(enabled=True, allow=["10.9.0.0/16"], deny=["10.9.1.0/24"])
    assert refusal("10.9.1.1", both) is not None  # deny wins
    assert refusal("::ffff:10.9.1.1", both) is not None  # a mapped address is its IPv4 one
    assert refusal("not-an-address", default) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/x", "ftp://example.com/x", "file:///etc/passwd", "gopher://h/",
        "http:///nohost", "http://exa mple.com/", "http://ex\r\nample.com/", "http://h:99999/",
        "http://" + "a" * 300 + "/", "http://example.com/" + "x" * 3000, "http://_bad_/",
    ],
)  # fmt: skip
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(FetchRefused):
        parse_target(url)


def test_targets() -> None:
    plain = parse_target("http://Example.COM/bins.sh?a=1 2")
    assert (plain.name, plain.host, plain.port, plain.path) == (
        "example.com", "example.com", 80, "/bins.sh?a=1%202",
    )  # fmt: skip
    assert parse_target("http://10.0.0.1:8080").path == "/"
    assert parse_target("http://10.0.0.1:8080").host == "10.0.0.1:8080"
    six = parse_target("http://[2001:db8::1]:81/x")
    assert (six.name, six.host) == ("2001:db8::1", "[2001:db8::1]:81")
    assert parse_target("http://user:pw@h.example/x").host == "h.example"  # never sent on


def test_response_heads() -> None:
    status, reason, headers = parse_head(b"HTTP/1.1 302 Found\r\nLocation: /y\r\nX: a:b")
    assert (status, reason, headers["location"], headers["x"]) == (302, "Found", "/y", "a:b")
    with pytest.raises(FetchRefused):
        parse_head(b"SSH-2.0-OpenSSH_9.2\r\n")
    head = _fetch_head(200, "OK\r\nX-Evil: 1", "text/plain\r\nSet-Cookie: a", "/n\r\nx", 5)
    assert head.count(b"\r\n") == 8  # status, 5 headers, Connection, the blank line: no more
    assert b"X-Evil: 1" in head and b"\r\nX-Evil" not in head


# --- the client, against servers of ours ---------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _answer(raw: bytes, seen: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(head)
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handle


async def test_content_length_chunked_and_close_delimited_bodies() -> None:
    seen: list[bytes] = []
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/x-sh\r\nContent-Length: %d\r\n\r\n" % len(PAYLOAD)
        + PAYLOAD,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n#!/bi\r\n"
        + b"%x\r\n" % (len(PAYLOAD) - 5) + PAYLOAD[5:] + b"\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n" + PAYLOAD,
    ):  # fmt: skip
        server, port = await _server(_answer(raw, seen))
        async with server:
            got = await fetch(f"http://127.0.0.1:{port}/bins.sh", "evil\r\nX-Injected: 1", LOCAL)
        assert (got.status, got.body, got.address) == (200, PAYLOAD, "127.0.0.1")
    assert seen[0].startswith(b"GET /bins.sh HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Injected" not in seen[0]  # the sandbox's User-Agent cannot add a header


async def test_redirects_go_back_to_the_sandbox_and_limits_hold() -> None:
    server, port = await _server(_answer(b"HTTP/1.1 301 Moved\r\nLocation: http://x/y\r\n\r\n"))
    async with server:
        got = await fetch(f"http://127.0.0.1:{port}/", "", LOCAL)
    assert (got.status, got.location, got.body) == (301, "http://x/y", b"")
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"
    server, port = await _server(_answer(big))
    async with server:
        with pytest.raises(FetchRefused, match="max_bytes"):
            await fetch(f"http://127.0.0.1:{port}/", "", LOCAL)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            writer.close()

    server, port = await _server(silent)
    async with server:
        with pytest.raises(FetchRefused, match="no answer"):
            await fetch(
                f"http://127.0.0.1:{port}/", "", LOCAL.model_copy(update={"timeout_seconds": 0.5})
            )
    with pytest.raises(FetchRefused, match="loopback"):
        await fetch("http://localhost:9/", "", FetchConfig(enabled=True))  # resolved, refused
    with pytest.raises(FetchRefused, match="private"):
        await fetch("http://10.0.0.1:9/", "", LOCAL)


# --- the broker, on its socket -------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.records.append(to_record(event, "s1"))

    def of(self, eventid: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["eventid"] == eventid]


OWNER = Owner(container_id="c" * 64, session="abc123def456", src_ip="203.0.113.45")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[FetchBroker, Events]]:
    config = parse_config(
        {
            "sensor": "s1",
            "storage": {"data_dir": str(tmp_path / "var")},
            "sandbox": {
                "network": "sinkhole",
                "sinkhole": {
                    "subnet": "10.118.0.0/16",
                    "flood_report_interval_seconds": 0.5,
                    "fetch": {
                        "enabled": True, "public": False, "allow": ["127.0.0.1/32"],
                        "per_sandbox_per_minute": 3, "timeout_seconds": 3,
                    },
                },
            },
        }
    )  # fmt: skip

    async def owner(address: str) -> Owner | None:
        return OWNER if address == "10.118.0.2" else None

    events = Events()
    service = FetchBroker(config, events, owner)
    task = asyncio.create_task(service.run())
    for _ in range(100):
        if service.socket_path.exists():
            break
        await asyncio.sleep(0.02)
    yield service, events
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _ask(path: Path, line: bytes) -> tuple[dict[str, Any], bytes]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    head = json.loads(await reader.readline())
    body = await reader.read()
    writer.close()
    return head, body


async def test_the_broker_fetches_stores_and_reports(
    broker: tuple[FetchBroker, Events], tmp_path: Path
) -> None:
    service, events = broker
    assert service.socket_path.stat().st_mode & 0o777 == 0o666
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAYLOAD) + PAYLOAD
    server, port = await _server(_answer(raw))
    url = f"http://127.0.0.1:{port}/bins.sh"
    async with server:
        ask = {"src": "10.118.0.2", "url": url, "ua": "Wget/1.21.3"}
        head, body = await _ask(service.socket_path, json.dumps(ask).encode() + b"\n")
    assert (head["status"], head["size"], body) == (200, len(PAYLOAD), PAYLOAD)
    [download] = events.of("network.download")
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert download["sha256"] == digest and download["url"] == url
    assert (download["session"], download["src_ip"], download["sandbox_ip"]) == (
        OWNER.session, OWNER.src_ip, "10.118.0.2",
    )  # fmt: skip
    assert Path(download["artifact"]).read_bytes() == PAYLOAD
    assert Path(download["artifact"]) == tmp_path / "var" / "artifacts" / digest


async def test_hostile_requests_are_refused_and_counted(
    broker: tuple[FetchBroker, Events],
) -> None:
    service, events = broker
    for line in (
        b"not json\n",
        b'{"src": "8.8.8.8", "url": "http://127.0.0.1:9/", "ua": ""}\n',  # not the subnet
        b'{"src": "10.118.0.2", "url": 5}\n',
        b"[1, 2]\n",
        b"x" * 20000 + b"\n",
    ):
        head, body = await _ask(service.socket_path, line)
        assert (head, body) == ({"status": 0}, b"")
    assert service.bad == 5 and not events.records
    # The policy holds whatever the sinkhole says: loopback's Docker port is not in the allowlist
    # as a name, and a private address is refused after the rate check.
    ask = {"src": "10.118.0.2", "url": "http://10.0.0.1:2375/containers/json", "ua": ""}
    head, _ = await _ask(service.socket_path, json.dumps(ask).encode() + b"\n")
    assert head == {"status": 0}
    [failed] = events.of("network.fetch_failed")
    assert "private" in failed["reason"] and failed["session"] == OWNER.session
    # Over the sandbox's rate (3 a minute): refused without an event each, then one flood.
    for _ in range(6):
        head, _ = await _ask(service.socket_path, json.dumps(ask).encode() + b"\n")
        assert head == {"status": 0}
    assert len(events.of("network.fetch_failed")) == 3
    for _ in range(40):
        if events.of("network.flood"):
            break
        await asyncio.sleep(0.1)
    [flood] = events.of("network.flood")
    assert (flood["kind"], flood["count"], flood["session"]) == ("fetch", 4, OWNER.session)


def test_the_sinkhole_mounts_the_socket_only_when_fetching(tmp_path: Path) -> None:
    created = parse_config({"sensor": "s1"}).sandbox
    off = sinkhole_body(created, "s1", datetime(2026, 1, 1, tzinfo=UTC), tmp_path)
    assert off["HostConfig"]["Mounts"] == [] and "STSINK_FETCH=" in off["Env"]
    on = created.model_copy(
        update={"sinkhole": created.sinkhole.model_copy(update={"fetch": LOCAL})}
    )
    body = sinkhole_body(on, "s1", datetime(2026, 1, 1, tzinfo=UTC), tmp_path)
    assert body["HostConfig"]["Mounts"] == [
        {"Type": "bind", "Source": str(tmp_path), "Target": FETCH_MOUNT, "ReadOnly": True}
    ]
    assert f"STSINK_FETCH={FETCH_MOUNT}/fetch.sock" in body["Env"]


# --- who holds an address: the feed's owner map ------------------------------------------------


class _Listing:
    """The engine's container listing only (the map's one input); `name` changes on allocation."""

    def __init__(self, network: str) -> None:
        self.network = network
        self.name = "/" + pool_name()
        self.calls = 0

    async def containers(self, *labels: str, all_states: bool = True) -> list[dict[str, Any]]:
        self.calls += 1
        nets = {self.network: {"IPAddress": "10.118.0.2"}}
        return [{"Id": "c" * 64, "Names": [self.name], "NetworkSettings": {"Networks": nets}}]


async def test_an_allocated_sandbox_is_known_at_once() -> None:
    """A warm sandbox's address has no session; once it is allocated (renamed), the next record
    must carry the session at once, not a second later (a flood of wgets right after login lost
    its session on 24 records of 50 that way)."""
    config = parse_config({"sensor": "s1", "sandbox": {"network": "sinkhole"}})
    listing = _Listing(network_name("s1"))
    feed = SinkholeFeed(config, listing, Events())  # type: ignore[arg-type]
    warm = await feed.owner("10.118.0.2")
    assert warm is not None and warm.session is None
    listing.name = "/" + session_name("abc123def456", "203.0.113.45")
    peer = Peer("abc123def456", "203.0.113.45", 40000, 22)
    feed.offer(SandboxAllocated(peer=peer, container_id="c" * 64, image="i", hostname="h",
                                wait_ms=1.0))  # fmt: skip
    owner = await feed.owner("10.118.0.2")
    assert owner is not None and (owner.session, owner.src_ip) == ("abc123def456", "203.0.113.45")
    calls = listing.calls
    await feed.owner("10.118.0.2")  # known: no listing per record
    assert listing.calls == calls
    assert await feed.owner("10.118.0.99") is None  # unknown: listed again at most every 0.1 s


async def test_a_stopped_sandboxs_late_records_keep_its_session() -> None:
    """Its flood summary comes an interval after the sandbox stopped; the address's next holder
    takes it over at once."""
    config = parse_config({"sensor": "s1", "sandbox": {"network": "sinkhole"}})
    listing = _Listing(network_name("s1"))
    listing.name = "/" + session_name("abc123def456", "203.0.113.45")
    feed = SinkholeFeed(config, listing, Events())  # type: ignore[arg-type]
    assert (await feed.owner("10.118.0.2")).session == "abc123def456"  # type: ignore[union-attr]
    listing.network = "gone"  # the sandbox stopped: no running sandbox holds the address
    feed.offer(SandboxReleased(peer=Peer("abc123def456", "203.0.113.45", 1, 22),
                               container_id="c" * 64, stopped=True))  # fmt: skip
    late = await feed.owner("10.118.0.2")
    assert late is not None and late.session == "abc123def456"
    listing.network = network_name("s1")
    listing.name = "/" + pool_name()  # the refill's warm sandbox got the address: it sends nothing
    feed.offer(SandboxReleased(peer=Peer("abc123def456", "203.0.113.45", 1, 22),
                               container_id="c" * 64, stopped=True))  # fmt: skip
    late = await feed.owner("10.118.0.2")
    assert late is not None and late.session == "abc123def456"
    listing.network = network_name("s1")
    listing.name = "/" + session_name("fedcba987654", "198.51.100.7")
    peer = Peer("fedcba987654", "198.51.100.7", 1, 22)
    feed.offer(
        SandboxAllocated(peer=peer, container_id="c" * 64, image="i", hostname="h", wait_ms=1.0)
    )
    after = await feed.owner("10.118.0.2")
    assert after is not None and after.session == "fedcba987654"
