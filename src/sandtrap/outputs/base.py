"""What every output shares: the `Sink` protocol, alerts as items, filters, backoff; pure.

An output is a `Sink` (formats items into JSON-ready records and sends batches of them) driven by
an `OutputRunner` (outputs/runner.py: its queue, retries and spool). The sinks are the modules
next to this one; which are built is outputs/hub.py's.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sandtrap.events import Event, rfc3339, utcnow
from sandtrap.events.base import to_record

Record = dict[str, Any]


class OutputError(Exception):
    """A sink could not deliver a batch (the runner retries it or spools it)."""


class OutputRejected(OutputError):
    """The receiver refused the batch for good (e.g. HTTP 400): retrying cannot help, so the
    runner counts it as dropped and logs why."""


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A real-time alert raised by a rule (outputs/alerts.py), or a digest of suppressed ones.

    `text` is one line for people (attacker strings in it are made safe by alerts.py); `event` is
    the record that raised it (None for a digest); `count` is how many matches it stands for.
    """

    rule: str
    text: str
    severity: str = "warning"
    count: int = 1
    event: Record | None = None
    digest: bool = False
    timestamp: datetime = field(default_factory=utcnow)


Item = Event | Alert


def alert_record(alert: Alert, sensor: str) -> Record:
    """An alert as a record of our own schema (eventid `alert` or `alert.digest`)."""
    return {
        "timestamp": rfc3339(alert.timestamp),
        "eventid": "alert.digest" if alert.digest else "alert",
        "sensor": sensor,
        "session": (alert.event or {}).get("session"),
        "src_ip": (alert.event or {}).get("src_ip"),
        "rule": alert.rule,
        "severity": alert.severity,
        "message": alert.text,
        "count": alert.count,
        "event": alert.event,
    }


def sandtrap_record(item: Item, sensor: str) -> Record:
    """Our own record of an item: the event log's line, or the alert's."""
    return alert_record(item, sensor) if isinstance(item, Alert) else to_record(item, sensor)


class Sink(Protocol):
    """One output type: formatting (pure, in the runner's task) and delivery of batches.

    `send` raises OutputError when the batch did not arrive (it is then retried or spooled, so it
    must be safe to send again); it may hang, the runner bounds it with `timeout_seconds`.
    `close` releases connections and files; it is called once, at shutdown.
    """

    batch_max_events: int
    batch_max_seconds: float
    timeout_seconds: float

    def format(self, item: Item) -> list[Record]: ...

    async def send(self, records: list[Record]) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class EventFilter:
    """Which events an output takes: eventid globs to include, then to exclude. Alerts always."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    _include_re: re.Pattern[str] | None = field(init=False, default=None, compare=False)
    _exclude_re: re.Pattern[str] | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include_re", _globs(self.include))
        object.__setattr__(self, "_exclude_re", _globs(self.exclude))

    def accepts(self, item: Item) -> bool:
        if isinstance(item, Alert):
            return True
        return self.matches(item.eventid)

    def matches(self, eventid: str) -> bool:
        if self._include_re is None or not self._include_re.match(eventid):
            return False
        return self._exclude_re is None or not self._exclude_re.match(eventid)


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass
class Backoff:
    """Exponential backoff between retries: initial, doubling, capped; reset on success."""

    initial_seconds: float
    max_seconds: float
    _next: float = 0.0

    def failed(self) -> float:
        """The delay before the next attempt (and double the one after)."""
        delay = self._next or self.initial_seconds
        self._next = min(delay * 2, self.max_seconds)
        return min(delay, self.max_seconds)

    def succeeded(self) -> None:
        self._next = 0.0


@dataclass(frozen=True)
class OutputStatistics:
    """One output's counters (for metrics, health and tests)."""

    name: str
    type: str
    queued: int
    delivered: int
    dropped: int
    failures: int
    spooled: int
    spool_bytes: int
    connected: bool


__all__ = [
    "Alert",
    "Backoff",
    "EventFilter",
    "Item",
    "OutputError",
    "OutputRejected",
    "OutputStatistics",
    "Record",
    "Sink",
    "alert_record",
    "sandtrap_record",
]
