"""The browsing questions of the web console: filtered pages of sessions, one session with its
event timeline and the event families other tables do not model (network.*, artifact.*), and the
artifacts seen across sessions.

Read-only SQL; only fixed fragments are joined, every value is a bound parameter. Pages are cut
with LIMIT/OFFSET and one row more than asked, so no page counts the whole table.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from sandtrap.analysis.query import QueryError, session_detail

SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_PER_PAGE = 200
# A file many sessions dropped: its page lists the newest sightings and counts the rest.
MAX_SIGHTINGS = 200
MAX_DIGESTS = 50
# A session page shows at most this many events (a bot can run thousands of commands).
MAX_EVENTS = 5000
# network.* and artifact.* events (issues 16, 19) are shown as the log has them; an index range
# over eventid keeps "has network" an index lookup.
NETWORK = ("network.", "network/")
ARTIFACT_EVENTS = ("artifact.", "artifact/")


@dataclass(frozen=True)
class SessionFilter:
    """What the sessions page asks for; None leaves a criterion out."""

    since: str | None = None
    until: str | None = None
    ip: str | None = None
    username: str | None = None
    has_commands: bool | None = None
    has_artifacts: bool | None = None
    has_network: bool | None = None
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    page: int
    per_page: int
    has_next: bool
    filters: dict[str, Any] = field(default_factory=dict)


def _exists(sql: str, wanted: bool | None, where: list[str]) -> None:
    if wanted is not None:
        where.append(("EXISTS " if wanted else "NOT EXISTS ") + sql)


def find_sessions(db: sqlite3.Connection, wanted: SessionFilter) -> Page:
    """One page of sessions, newest first, with command, artifact and network event counts."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for clause, value in (
        ("s.started >= ?", wanted.since),
        ("s.started < ?", wanted.until),
        ("s.src_ip = ?", wanted.ip),
        ("s.username = ?", wanted.username),
    ):
        if value:
            where.append(clause)
            params.append(value)
    _exists("(SELECT 1 FROM commands c WHERE c.session = s.session)", wanted.has_commands, where)
    _exists("(SELECT 1 FROM artifacts a WHERE a.session = s.session)", wanted.has_artifacts, where)
    _exists(
        "(SELECT 1 FROM events e WHERE e.session = s.session AND e.eventid >= ? AND e.eventid < ?)",
        wanted.has_network,
        where,
    )
    if wanted.has_network is not None:
        params.extend(NETWORK)
    per_page = max(1, min(wanted.per_page, MAX_PER_PAGE))
    page = max(1, wanted.page)
    sql = " ".join(
        [
            "SELECT s.session, s.started, s.ended, s.src_ip, s.username, s.password,",
            "s.client_version, s.duration, s.reason, s.bytes_in, s.bytes_out,",
            "(SELECT COUNT(*) FROM commands c WHERE c.session = s.session) AS commands,",
            "(SELECT COUNT(*) FROM artifacts a WHERE a.session = s.session) AS artifacts,",
            "(SELECT COUNT(*) FROM events e WHERE e.session = s.session",
            "AND e.eventid >= ? AND e.eventid < ?) AS network",
            "FROM sessions s WHERE",
            " AND ".join(where),
            "ORDER BY s.started DESC LIMIT ? OFFSET ?",
        ]
    )
    rows = [
        dict(row)
        for row in db.execute(sql, (*NETWORK, *params, per_page + 1, (page - 1) * per_page))
    ]
    return Page(rows[:per_page], page, per_page, len(rows) > per_page)


def _records(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    result = []
    for event_id, text in db.execute(sql, params):
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            record["_id"] = int(event_id)
            result.append(record)
    return result


def session_events(
    db: sqlite3.Connection,
    session: str,
    family: tuple[str, str] | None = None,
    limit: int = MAX_EVENTS,
) -> list[dict[str, Any]]:
    """The session's first `limit` events in order (only one eventid family when given), as the
    log has them."""
    if family is None:
        return _records(
            db,
            "SELECT id, record FROM events WHERE session = ? ORDER BY id LIMIT ?",
            (session, limit),
        )
    return _records(
        db,
        "SELECT id, record FROM events WHERE session = ? AND eventid >= ? AND eventid < ?"
        " ORDER BY id LIMIT ?",
        (session, *family, limit),
    )


def session_page(db: sqlite3.Connection, session: str) -> dict[str, Any]:
    """`session_detail` plus the event timeline, network events and artifact analyses.

    Raises:
        QueryError: no such session.
    """
    detail = session_detail(db, session)
    timeline = session_events(db, session)
    detail["events"] = timeline
    detail["events_cut"] = len(timeline) >= MAX_EVENTS
    detail["network"] = session_events(db, session, NETWORK)
    digests = sorted({str(a["sha256"]) for a in detail["artifacts"] if a.get("sha256")})
    # The session's own artifact.* events, and for each of its files the newest event of each
    # kind recorded elsewhere (a file seen in many sessions is analysed once, or again later).
    own = [r for r in timeline if str(r.get("eventid", "")).startswith("artifact.")]
    known = {(r.get("sha256"), r.get("eventid")) for r in own}
    analyses = {r["_id"]: r for r in own}
    for digest in digests[:MAX_DIGESTS]:
        for record in newest_artifact_events(db, digest):
            if (record.get("sha256"), record.get("eventid")) not in known:
                analyses[record["_id"]] = record
    detail["analyses"] = [analyses[key] for key in sorted(analyses)]
    return detail


def artifact_events(
    db: sqlite3.Connection, sha256: str, limit: int = MAX_SIGHTINGS
) -> list[dict[str, Any]]:
    """The newest `limit` artifact.* events about this digest (any session or none), in order."""
    newest = _records(
        db,
        "SELECT id, record FROM events WHERE eventid >= ? AND eventid < ?"
        " AND json_extract(record, '$.sha256') = ? ORDER BY id DESC LIMIT ?",
        (*ARTIFACT_EVENTS, sha256, limit),
    )
    return newest[::-1]


def newest_artifact_events(db: sqlite3.Connection, sha256: str) -> list[dict[str, Any]]:
    """The newest artifact.* event of each eventid about this digest."""
    return _records(
        db,
        "SELECT id, record FROM events WHERE id IN (SELECT MAX(id) FROM events"
        " WHERE eventid >= ? AND eventid < ? AND json_extract(record, '$.sha256') = ?"
        " GROUP BY eventid) ORDER BY id",
        (*ARTIFACT_EVENTS, sha256),
    )


def list_artifacts(db: sqlite3.Connection, page: int = 1, per_page: int = 50) -> Page:
    """Distinct captured files, most recently seen first."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    rows = [
        dict(row)
        for row in db.execute(
            "SELECT sha256, MAX(size) AS size, MIN(timestamp) AS first_seen,"
            " MAX(timestamp) AS last_seen, COUNT(DISTINCT session) AS sessions,"
            " COUNT(DISTINCT path) AS paths, MIN(path) AS path FROM artifacts"
            " WHERE sha256 IS NOT NULL GROUP BY sha256 ORDER BY last_seen DESC LIMIT ? OFFSET ?",
            (per_page + 1, (page - 1) * per_page),
        )
    ]
    return Page(rows[:per_page], page, per_page, len(rows) > per_page)


def artifact_detail(db: sqlite3.Connection, sha256: str) -> dict[str, Any]:
    """Where and when a file was seen, by which sessions, and what analysis said of it.

    Raises:
        QueryError: not a sha256, or never seen.
    """
    if not SHA256.fullmatch(sha256):
        raise QueryError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    summary = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT session), MAX(size), MIN(timestamp), MAX(timestamp)"
        " FROM artifacts WHERE sha256 = ?",
        (sha256,),
    ).fetchone()
    if not summary[0]:
        raise QueryError(f"no artifact {sha256}")
    sightings = [
        dict(row)
        for row in db.execute(
            "SELECT a.session, a.timestamp, a.path, a.size, a.container_id, s.src_ip, s.username"
            " FROM artifacts a LEFT JOIN sessions s ON s.session = a.session"
            " WHERE a.sha256 = ? ORDER BY a.timestamp DESC LIMIT ?",
            (sha256, MAX_SIGHTINGS),
        )
    ]
    return {
        "sha256": sha256,
        "seen": int(summary[0]),
        "sessions": int(summary[1]),
        "size": int(summary[2] or 0),
        "first_seen": summary[3],
        "last_seen": summary[4],
        "sightings": sightings,
        "analyses": artifact_events(db, sha256),
    }


def session_exists(db: sqlite3.Connection, session: str) -> bool:
    return db.execute("SELECT 1 FROM sessions WHERE session = ?", (session,)).fetchone() is not None
