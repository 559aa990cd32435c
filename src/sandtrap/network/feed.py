"""The sinkhole's records as events: followed from its stdout, validated, tied to sessions.

Everything the sinkhole writes is hostile (root in a sandbox reaches it): a line is parsed only
when it is a bounded JSON object of a known kind with typed, capped fields; anything else is
counted and reported in the log, never raised. A sandbox's address is mapped to the session
that holds it from the engine's listing of this sensor's running sandboxes (their names carry the
session id and the client's address).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandtrap.config import Config
from sandtrap.errors import SandboxError
from sandtrap.events import Event, EventSink
from sandtrap.events.network import (
    NetworkConnect,
    NetworkData,
    NetworkDns,
    NetworkEvent,
    NetworkFlood,
    NetworkHttp,
    NetworkTls,
    NetworkUdp,
)
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import parse_session_name, sandbox_labels
from sandtrap.sandbox.sinknet import container_name, network_name

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024
MAX_TEXT = 1024
MAX_B64 = 700  # base64 of 512 bytes is 684 characters
_PROTOS = frozenset({"tcp", "icmp"})
_OWNER_CHANGES = frozenset(
    {"sandbox.allocated", "sandbox.released", "sandbox.died", "sandbox.pruned"}
)
_KINDS = frozenset({"dns", "connect", "http", "tls", "data", "udp", "flood", "ready"})


@dataclass(frozen=True)
class Owner:
    container_id: str
    session: str | None
    src_ip: str | None


class BadRecord(ValueError):
    """A line the sinkhole wrote that is not a valid record."""


def _text(record: Mapping[str, Any], key: str, limit: int = MAX_TEXT) -> str:
    value = record.get(key, "")
    if not isinstance(value, str):
        raise BadRecord(f"{key} is not a string")
    return value[:limit]


def _int(record: Mapping[str, Any], key: str, high: int) -> int:
    value = record.get(key)
    if type(value) is not int or not 0 <= value <= high:
        raise BadRecord(f"{key} is not an integer in 0..{high}")
    return value


def _ip(value: Any, allow_empty: bool = False) -> str:
    if allow_empty and value == "":
        return ""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise BadRecord("not an IPv4 address") from None


def _b64(record: Mapping[str, Any], key: str) -> str:
    value = _text(record, key, MAX_B64 + 1)
    if len(value) > MAX_B64:
        raise BadRecord(f"{key} too long")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRecord(f"{key} is not base64") from None
    return value


def _strings(value: Any, limit: int, width: int) -> list[str]:
    if not isinstance(value, list) or len(value) > limit:
        raise BadRecord("not a short list")
    if not all(isinstance(item, str) for item in value):
        raise BadRecord("not a list of strings")
    return [item[:width] for item in value]


def parse_record(line: bytes) -> dict[str, Any]:
    """One line as a checked record (kind `k`, source `src`, typed fields); pure.

    Raises:
        BadRecord: anything but a valid record, whatever the bytes.
    """
    if len(line) > MAX_LINE:
        raise BadRecord("line too long")
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        raise BadRecord("not JSON") from None
    if not isinstance(record, dict) or record.get("k") not in _KINDS:
        raise BadRecord("not a record of a known kind")
    kind = record["k"]
    if kind == "ready":
        return {"k": kind, "address": _ip(record.get("address"))}
    if kind == "flood" and record.get("src") == "*":
        out: dict[str, Any] = {"k": kind, "src": "*"}  # the sources beyond the sinkhole's table
    else:
        out = {"k": kind, "src": _ip(record.get("src"))}
    if kind == "flood":
        count = record.get("seconds")
        if not isinstance(count, int | float) or isinstance(count, bool) or not 0 <= count < 1e7:
            raise BadRecord("seconds is not a number")
        out.update(kind=_text(record, "kind", 16), count=_int(record, "count", 1 << 40),
                   seconds=float(count), dst="", dport=0)  # fmt: skip
        return out
    out.update(dst=_ip(record.get("dst"), allow_empty=True), dport=_int(record, "dport", 65535))
    if kind == "dns":
        out.update(query=_text(record, "query", 1024), qtype=_text(record, "qtype", 16))
    elif kind == "connect":
        proto = record.get("proto")
        if proto not in _PROTOS:
            raise BadRecord("unknown proto")
        out["proto"] = proto
    elif kind == "http":
        headers = record.get("headers")
        if not isinstance(headers, list) or len(headers) > 64:
            raise BadRecord("headers is not a short list")
        out.update(
            method=_text(record, "method", 16), host=_text(record, "host"),
            url=_text(record, "url", 2048), user_agent=_text(record, "user_agent"),
            headers=[_strings(pair, 2, MAX_TEXT) for pair in headers],
            body_bytes=_int(record, "body_bytes", 1 << 40), body=_b64(record, "body"),
        )  # fmt: skip
    elif kind == "tls":
        out.update(sni=_text(record, "sni", 255), ja3=_text(record, "ja3", 32),
                   alpn=_strings(record.get("alpn"), 8, 32))  # fmt: skip
    else:  # data, udp
        out.update(first_bytes=_b64(record, "first"), bytes=_int(record, "bytes", 1 << 40))
    return out


_TYPES: dict[str, type[NetworkEvent]] = {
    "dns": NetworkDns, "connect": NetworkConnect, "http": NetworkHttp, "tls": NetworkTls,
    "data": NetworkData, "udp": NetworkUdp, "flood": NetworkFlood,
}  # fmt: skip


def to_event(record: Mapping[str, Any], owner: Owner | None) -> NetworkEvent:
    """The event of a checked record (pure); `owner` None for an address no sandbox holds."""
    fields = {k: v for k, v in record.items() if k not in ("k", "src", "dst", "dport")}
    return _TYPES[record["k"]](
        session=owner.session if owner else None,
        src_ip=owner.src_ip if owner else None,
        container_id=owner.container_id if owner else None,
        sandbox_ip=record["src"],
        dst_ip=record["dst"],
        dst_port=record["dport"],
        **fields,
    )


def owners(listing: list[dict[str, Any]], network: str) -> dict[str, Owner]:
    """Sandbox address -> owner, from `GET /containers/json` of this sensor's sandboxes (pure)."""
    out: dict[str, Owner] = {}
    for item in listing:
        nets = (item.get("NetworkSettings") or {}).get("Networks") or {}
        address = (nets.get(network) or {}).get("IPAddress")
        names = item.get("Names") or [""]
        if not isinstance(address, str) or not address:
            continue
        parsed = parse_session_name(str(names[0]))
        out[address] = Owner(
            container_id=str(item.get("Id", "")),
            session=parsed.session_id if parsed else None,
            src_ip=parsed.src_ip if parsed else None,
        )
    return out


class SinkholeFeed:
    """Follows the sinkhole's stdout and emits its records as events. `run()` lasts until
    cancelled: it reconnects after engine trouble or a sinkhole restart (resuming from the last
    second seen; a record repeated across a reconnect is possible, a lost one is not intended)."""

    def __init__(
        self, config: Config, engine: Engine, events: EventSink,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._config = config
        self._engine = engine
        self._events = events
        self._clock = clock
        self._network = network_name(config.sensor)
        self._owners: dict[str, Owner] = {}
        self._refreshed = 0.0
        self._listing = asyncio.Lock()
        self._stale = False
        self._released: dict[str, tuple[Owner, float]] = {}
        self.emitted = 0
        self.bad = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        since = int(self._clock())
        while True:
            try:
                async for payload in self._engine.follow_logs(
                    container_name(self._config.sensor), since
                ):
                    since = int(self._clock())
                    for line in payload.splitlines():
                        await self.handle(line)
            except SandboxError as exc:
                log.warning("sinkhole records: %s; retrying", exc)
            await asyncio.sleep(2)

    async def handle(self, line: bytes) -> None:
        try:
            record = parse_record(line)
        except BadRecord as exc:
            self.bad += 1
            if self.bad <= 10 or self.bad % 1000 == 0:
                log.warning("sinkhole wrote a bad record (%d so far): %s: %r", self.bad, exc,
                            line[:200])  # fmt: skip
            return
        if record["k"] == "ready":
            log.info("sinkhole ready on %s", record["address"])
            self.ready.set()
            return
        self._events.emit(to_event(record, await self.owner(record["src"])))
        self.emitted += 1

    def offer(self, event: Event) -> None:
        """Event-log subscriber: an allocation or release changes who holds an address."""
        if event.eventid in _OWNER_CHANGES:
            self._stale = True

    async def owner(self, address: str) -> Owner | None:
        """The sandbox that holds `address` now (None when no sandbox of ours does). The feed
        and the fetch broker ask concurrently: one listing at a time, the other waits for it."""
        async with self._listing:
            return await self._lookup(address)

    async def _lookup(self, address: str) -> Owner | None:
        owner = self._owners.get(address)
        now = time.monotonic()
        # A stopped sandbox's address goes to the next one, and a warm sandbox gets its session
        # when it is allocated: the map is listed again after any allocation or release (offer),
        # after 2 s at most, and for an unknown or unallocated address after 0.1 s.
        age = now - self._refreshed
        if self._stale or age >= 2.0 or ((owner is None or owner.session is None) and age >= 0.1):
            self._refreshed = now
            self._stale = False
            try:
                listing = await self._engine.containers(
                    *sandbox_labels(self._config.sensor), all_states=False
                )
            except SandboxError as exc:
                log.warning("sinkhole records: cannot list sandboxes: %s", exc)
            else:
                self._owners = self._keep_released(owners(listing, self._network), now)
            owner = self._owners.get(address)
        return owner

    def _keep_released(self, held: dict[str, Owner], now: float) -> dict[str, Owner]:
        """`held` plus the session owners of addresses no session's sandbox holds any more, for
        a grace period: a sandbox's last records (its flood summary, a record still in the
        engine's log pipe) arrive after it stopped, when the engine may already have given its
        address to a warm sandbox of the refill (which sends nothing: no session has it). Once
        a session holds the address, its records are that session's (`held` wins)."""
        for address, owner in self._owners.items():
            now_held = held.get(address)
            if owner.session is not None and (
                now_held is None or now_held.session != owner.session
            ):
                kept = self._released.get(address)
                if kept is None or kept[0] != owner:  # a kept owner's grace runs from its release
                    self._released[address] = (owner, now)
        grace = max(60.0, 2 * self._config.sandbox.sinkhole.flood_report_interval_seconds)
        for address in list(self._released):
            owner, since = self._released[address]
            holder = held.get(address)
            if (holder is not None and holder.session is not None) or now - since > grace:
                del self._released[address]
            else:
                held[address] = owner
        return held
