"""The overview's questions over the index: stat cards against the previous period, the timeline,
top-N lists, the hour-by-weekday heatmap, and the events after a given one (the live feed).

Read-only SQL with bound parameters only; presentation (SVG, HTML) is the web console's.
Timestamps in the index are RFC 3339 UTC with a fixed width, so string ranges are time ranges.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandtrap.events import rfc3339

PERIODS: dict[str, int | None] = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}
# Timeline buckets per period, in hours.
_BUCKET_HOURS = {"24h": 1, "7d": 6, "30d": 24, "all": 24}
_MAX_BUCKETS = 400


@dataclass(frozen=True)
class Period:
    """[start, end) and the same length before it; `start` None means since the beginning."""

    name: str
    start: str | None
    end: str
    previous_start: str | None
    bucket_hours: int


def period(name: str, now: datetime | None = None) -> Period:
    """The named period ending now (`24h`, `7d`, `30d` or `all`).

    Raises:
        KeyError: an unknown name.
    """
    seconds = PERIODS[name]
    now = now or datetime.now(UTC)
    if seconds is None:
        return Period(name, None, rfc3339(now), None, _BUCKET_HOURS[name])
    start = now - timedelta(seconds=seconds)
    previous = start - timedelta(seconds=seconds)
    return Period(name, rfc3339(start), rfc3339(now), rfc3339(previous), _BUCKET_HOURS[name])


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    value: int
    previous: int | None

    @property
    def change_percent(self) -> float | None:
        """Change against the previous period in percent; None when there is nothing to compare."""
        if self.previous is None or self.previous == 0:
            return None
        return 100.0 * (self.value - self.previous) / self.previous


# Index use: a range of a day or two is a small share of the rows, read best through the time
# index; a longer one is a large share of the table, read faster by a plain scan (SQLite cannot
# tell, so a unary + keeps it off the index), and "all" needs no condition at all. `{t}` below is
# replaced by one of these fixed fragments on the table's time column, never by data.
INDEXED_RANGE_SECONDS = 2 * 86400


def _range(column: str, low: str | None, high: str | None, seconds: int | None) -> Condition:
    use = column if seconds is not None and seconds <= INDEXED_RANGE_SECONDS else f"+{column}"
    parts, params = [], []
    if low is not None:
        parts.append(f"{use} >= ?")
        params.append(low)
    if high is not None:
        parts.append(f"{use} < ?")
        params.append(high)
    return Condition(" AND ".join(parts) or "1 = 1", tuple(params))


@dataclass(frozen=True)
class Condition:
    sql: str
    params: tuple[Any, ...]


def _run(db: sqlite3.Connection, template: str, where: Condition, *extra: Any) -> list[Any]:
    sql = template.replace("{t}", where.sql)
    return list(db.execute(sql, (*where.params, *extra)))


_CARDS: list[tuple[str, str, str, str]] = [
    ("connections", "Connections", "started", "SELECT COUNT(*) FROM sessions WHERE {t}"),
    (
        "logins",
        "Logins",
        "timestamp",
        "SELECT COUNT(*) FROM auth_attempts WHERE success = 1 AND {t}",
    ),
    (
        "sessions",
        "Sessions with a shell or command",
        "timestamp",
        "SELECT COUNT(DISTINCT session) FROM channels WHERE {t}",
    ),
    (
        "sources",
        "Unique sources",
        "started",
        "SELECT COUNT(DISTINCT src_ip) FROM sessions WHERE {t}",
    ),
    (
        "artifacts",
        "New artifacts",
        "first",
        "SELECT COUNT(*) FROM (SELECT MIN(timestamp) AS first FROM artifacts GROUP BY sha256)"
        " WHERE {t}",
    ),
]


def cards(db: sqlite3.Connection, span: Period) -> list[Card]:
    """The five stat cards of the period, each with the previous period's figure."""
    seconds = PERIODS[span.name]
    result = []
    for key, label, column, sql in _CARDS:
        value = int(_run(db, sql, _range(column, span.start, None, seconds))[0][0])
        previous = None
        if span.start is not None and span.previous_start is not None:
            before = _range(column, span.previous_start, span.start, seconds)
            previous = int(_run(db, sql, before)[0][0])
        result.append(Card(key, label, value, previous))
    return result


@dataclass(frozen=True)
class Bucket:
    start: datetime
    connections: int
    logins: int


def _hours(db: sqlite3.Connection, sql: str, where: Condition) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in _run(db, sql, where) if row[0]}


@dataclass(frozen=True)
class Hourly:
    """Connections and logins per UTC hour ('YYYY-MM-DDTHH'): the timeline and heatmap source."""

    connections: dict[str, int]
    logins: dict[str, int]


def hourly(db: sqlite3.Connection, span: Period) -> Hourly:
    seconds = PERIODS[span.name]
    return Hourly(
        _hours(
            db,
            "SELECT substr(started, 1, 13), COUNT(*) FROM sessions WHERE {t} GROUP BY 1",
            _range("started", span.start, None, seconds),
        ),
        _hours(
            db,
            "SELECT substr(timestamp, 1, 13), COUNT(*) FROM auth_attempts"
            " WHERE success = 1 AND {t} GROUP BY 1",
            _range("timestamp", span.start, None, seconds),
        ),
    )


def timeline(db: sqlite3.Connection, span: Period, counts: Hourly | None = None) -> list[Bucket]:
    """Connections and logins per bucket (1 h, 6 h or a day), oldest first, empty ones included."""
    counts = counts or hourly(db, span)
    connections, logins = counts.connections, counts.logins
    end = _parse(span.end)
    if span.start is not None:
        first = _parse(span.start)
    else:
        keys = sorted(set(connections) | set(logins))
        first = _hour(keys[0]) if keys else end - timedelta(days=1)
    step = timedelta(hours=span.bucket_hours)
    while (end - first) / step > _MAX_BUCKETS:
        step *= 2
    origin = first.replace(minute=0, second=0, microsecond=0)
    count = int((end - origin) / step) + 1
    conn_sums, login_sums = [0] * count, [0] * count
    for sums, hours in ((conn_sums, connections), (login_sums, logins)):
        for key, value in hours.items():
            slot = int((_hour(key) - origin) / step)
            if 0 <= slot < count:
                sums[slot] += value
    return [Bucket(origin + i * step, conn_sums[i], login_sums[i]) for i in range(count)]


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _hour(key: str) -> datetime:
    """'YYYY-MM-DDTHH' -> that hour in UTC."""
    return datetime.fromisoformat(key + ":00:00+00:00")


# (key, label, time column, SQL). A unary + on a grouped column keeps SQLite from walking that
# column's own index (sessions_src_ip) instead of the time range.
TOP_LISTS: list[tuple[str, str, str, str]] = [
    (
        "usernames",
        "Usernames",
        "timestamp",
        "SELECT username, COUNT(*) AS n FROM auth_attempts WHERE {t}"
        " AND username IS NOT NULL GROUP BY username ORDER BY n DESC, username LIMIT ?",
    ),
    (
        "passwords",
        "Passwords",
        "timestamp",
        "SELECT password, COUNT(*) AS n FROM auth_attempts WHERE {t}"
        " AND password IS NOT NULL GROUP BY password ORDER BY n DESC, password LIMIT ?",
    ),
    (
        "commands",
        "Commands",
        "timestamp",
        "SELECT input, COUNT(*) AS n FROM commands WHERE {t}"
        " AND input IS NOT NULL GROUP BY input ORDER BY n DESC, input LIMIT ?",
    ),
    (
        "sources",
        "Sources",
        "started",
        "SELECT src_ip, COUNT(*) AS n FROM sessions WHERE {t}"
        " AND +src_ip IS NOT NULL GROUP BY +src_ip ORDER BY n DESC, src_ip LIMIT ?",
    ),
    (
        "client_versions",
        "Client versions",
        "started",
        "SELECT client_version, COUNT(*) AS n FROM sessions WHERE {t}"
        " AND client_version IS NOT NULL GROUP BY client_version ORDER BY n DESC, client_version"
        " LIMIT ?",
    ),
    (
        "hassh",
        "HASSH",
        "started",
        "SELECT hassh, COUNT(*) AS n FROM sessions WHERE {t}"
        " AND hassh IS NOT NULL GROUP BY hassh ORDER BY n DESC, hassh LIMIT ?",
    ),
]


def top(db: sqlite3.Connection, span: Period, limit: int = 10) -> dict[str, list[tuple[str, int]]]:
    """The top-N lists of the period, keyed as `TOP_LISTS`."""
    seconds = PERIODS[span.name]
    return {
        key: [
            (str(row[0]), int(row[1]))
            for row in _run(db, sql, _range(column, span.start, None, seconds), limit)
        ]
        for key, _label, column, sql in TOP_LISTS
    }


def heatmap(db: sqlite3.Connection, span: Period, counts: Hourly | None = None) -> list[list[int]]:
    """Connections per weekday (0 = Monday) and UTC hour: 7 rows of 24."""
    counts = counts or hourly(db, span)
    grid = [[0] * 24 for _ in range(7)]
    for key, count in counts.connections.items():
        try:
            moment = _hour(key)
        except ValueError:
            continue
        grid[moment.weekday()][moment.hour] += count
    return grid


def last_event_id(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])


def events_after(db: sqlite3.Connection, after: int, limit: int = 50) -> list[dict[str, Any]]:
    """Events indexed after id `after`, oldest first, as {id, record}."""
    rows = db.execute(
        "SELECT id, record FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    )
    result = []
    for event_id, text in rows:
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            result.append({"id": int(event_id), "record": record})
    return result
