"""What every event is: the connection identity, the base classes, and serialisation in one place.

The event types themselves are in events/catalogue.py; writing events is left to `store/`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-29T14:30:10.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of one SSH connection: the one identity every layer uses.

    `session_id` names the connection everywhere (events, cast files, container names); the
    addresses are the client's as the listener saw it (or as a PROXY header named it).
    """

    session_id: str
    src_ip: str
    src_port: int
    dst_port: int


# Keys every record carries, in this order, after timestamp, eventid and sensor (None where an
# event has no session or no source).
COMMON_KEYS = ("session", "src_ip", "src_port", "dst_port")


@dataclass(frozen=True, kw_only=True)
class Event:
    """The base of every event: sensor-wide events (engine, retention, gate) use it directly.

    `sensor` is added when the event is written.
    """

    eventid: ClassVar[str] = ""
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class SessionEvent(Event):
    """An event of one connection: `peer` fills session, src_ip, src_port and dst_port."""

    peer: Peer


@dataclass(frozen=True, kw_only=True)
class SourceEvent(Event):
    """Refused connections of one source that never became sessions, counted per interval.

    One event per (source, listener port, reason) and `limits.refusal_report_interval_seconds`,
    written when the interval ends (or at shutdown), so a flood of refused sockets is a few lines,
    never one per socket. `src_ip` None counts the refusals of sources beyond
    `limits.refusal_report_max_sources` (`src_port` is None then); otherwise `src_port` is the
    first refused connection's. `first_timestamp`/`last_timestamp` are the first and last refusal.
    """

    src_ip: str | None
    src_port: int | None
    dst_port: int
    reason: str
    count: int
    first_timestamp: str
    last_timestamp: str


def to_record(event: Event, sensor: str) -> dict[str, Any]:
    """The event as a JSON-ready dict: common fields first, then the event's own."""
    record: dict[str, Any] = {
        "timestamp": rfc3339(event.timestamp),
        "eventid": event.eventid,
        "sensor": sensor,
    }
    record.update(dict.fromkeys(COMMON_KEYS))
    peer = getattr(event, "peer", None)
    if isinstance(peer, Peer):
        record.update(
            session=peer.session_id,
            src_ip=peer.src_ip,
            src_port=peer.src_port,
            dst_port=peer.dst_port,
        )
    for item in dataclasses.fields(event):
        if item.name not in ("timestamp", "peer"):
            record[item.name] = getattr(event, item.name)
    return record


def record_keys(event_type: type[Event]) -> list[str]:
    """The keys of an event type's records, in the order `to_record` writes them."""
    own = [item.name for item in dataclasses.fields(event_type)]
    return [
        "timestamp",
        "eventid",
        "sensor",
        *COMMON_KEYS,
        *(name for name in own if name not in ("timestamp", "peer", *COMMON_KEYS)),
    ]


def to_json_line(event: Event, sensor: str) -> str:
    """One line of JSON, newline included.

    Everything outside printable ASCII is escaped by the encoder, so no attacker string can put a
    raw control character, newline or Unicode line separator (U+2028, U+0085) into the log.
    """
    return json.dumps(to_record(event, sensor), ensure_ascii=True, separators=(",", ":")) + "\n"


class EventSink(Protocol):
    """Anything that takes events; `emit` never blocks and never raises."""

    def emit(self, event: Event) -> None: ...
