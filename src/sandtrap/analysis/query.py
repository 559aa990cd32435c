"""Read-only questions over the SQLite index: session lists, one session in full, top-N stats.

Owns the SQL of the analyst commands and the `--since` syntax. The index is rebuilt from the log
when it does not exist yet (store/index.py); rendering is analysis/render.py's.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandtrap.events import rfc3339
from sandtrap.store.index import connect, rebuild

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class QueryError(Exception):
    """A question that cannot be answered (bad --since, unknown or ambiguous session)."""


def parse_since(value: str, now: datetime | None = None) -> str:
    """`1h`, `30m`, `7d`, `2w` (ago) or an ISO date/time -> an RFC 3339 UTC lower bound."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        return rfc3339(now - timedelta(seconds=float(match[1]) * _UNITS[match[2]]))
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"--since {value!r}: use e.g. 30m, 1h, 7d or 2026-11-29T14:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return rfc3339(moment)


def open_index(db_path: Path, log_path: Path) -> sqlite3.Connection:
    """The index, built from the log first when it does not exist."""
    if not db_path.exists():
        rebuild(db_path, log_path)
    db = connect(db_path)
    db.row_factory = sqlite3.Row
    return db


def _rows(db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return [dict(row) for row in db.execute(sql, params)]


def list_sessions(
    db: sqlite3.Connection,
    since: str | None = None,
    ip: str | None = None,
    user: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Sessions newest first, each with its number of commands."""
    where, params = ["1 = 1"], []
    if since:
        where.append("s.started >= ?")
        params.append(since)
    if ip:
        where.append("s.src_ip = ?")
        params.append(ip)
    if user:
        where.append("s.username = ?")
        params.append(user)
    # Only fixed fragments are joined; every value is a bound parameter.
    sql = " ".join(
        [
            "SELECT s.*, (SELECT COUNT(*) FROM commands c WHERE c.session = s.session)",
            "AS commands, (SELECT COUNT(*) FROM auth_attempts a WHERE a.session = s.session)",
            "AS auth_attempts FROM sessions s WHERE",
            " AND ".join(where),
            "ORDER BY s.started DESC LIMIT ?",
        ]
    )
    return _rows(db, sql, (*params, limit))


def resolve_session(db: sqlite3.Connection, prefix: str) -> str:
    """The full session id for an id or a unique prefix of one."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
        raise QueryError(f"{prefix!r} is not a session id (hex)")
    found = [
        row[0]
        for row in db.execute(
            "SELECT session FROM sessions WHERE session LIKE ? LIMIT 2", (prefix + "%",)
        )
    ]
    if not found:
        raise QueryError(f"no session {prefix}")
    if len(found) > 1:
        raise QueryError(f"{prefix} is ambiguous: give more characters")
    return str(found[0])


def session_detail(db: sqlite3.Connection, session: str) -> dict[str, Any]:
    """Everything the index knows about one session."""
    meta = _rows(db, "SELECT * FROM sessions WHERE session = ?", (session,))
    if not meta:
        raise QueryError(f"no session {session}")
    by_session = (session,)
    return {
        "session": meta[0],
        "auth_attempts": _rows(
            db,
            "SELECT timestamp, username, password, method, key_fingerprint, success, reason"
            " FROM auth_attempts WHERE session = ? ORDER BY id",
            by_session,
        ),
        "channels": _rows(
            db, "SELECT * FROM channels WHERE session = ? ORDER BY channel", by_session
        ),
        "commands": _rows(
            db,
            "SELECT timestamp, channel, source, input FROM commands WHERE session = ? ORDER BY id",
            by_session,
        ),
        "diffs": _rows(
            db, "SELECT path, kind FROM diffs WHERE session = ? ORDER BY id", by_session
        ),
        "artifacts": _rows(
            db,
            "SELECT path, size, sha256, artifact FROM artifacts WHERE session = ? ORDER BY id",
            by_session,
        ),
        "network": _rows(
            db,
            "SELECT timestamp, eventid, dst_ip, dst_port, detail FROM network WHERE session = ?"
            " ORDER BY id",
            by_session,
        ),
    }


@dataclass(frozen=True)
class Stats:
    since: str | None
    sessions: int
    auth_attempts: int
    usernames: list[tuple[str, int]]
    passwords: list[tuple[str, int]]
    src_ips: list[tuple[str, int]]
    commands: list[tuple[str, int]]


def _top(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[str, int]]:
    return [(str(row[0]), int(row[1])) for row in db.execute(sql, params)]


def stats(db: sqlite3.Connection, since: str | None, limit: int = 10) -> Stats:
    """Top usernames and passwords (all attempts), source IPs (sessions), commands."""
    bound = since or ""
    auth = "FROM auth_attempts WHERE timestamp >= ?"
    return Stats(
        since=since,
        sessions=int(
            db.execute("SELECT COUNT(*) FROM sessions WHERE started >= ?", (bound,)).fetchone()[0]
        ),
        auth_attempts=int(db.execute(f"SELECT COUNT(*) {auth}", (bound,)).fetchone()[0]),
        usernames=_top(
            db,
            f"SELECT username, COUNT(*) AS n {auth} AND username IS NOT NULL"
            " GROUP BY username ORDER BY n DESC, username LIMIT ?",
            (bound, limit),
        ),
        passwords=_top(
            db,
            f"SELECT password, COUNT(*) AS n {auth} AND password IS NOT NULL"
            " GROUP BY password ORDER BY n DESC, password LIMIT ?",
            (bound, limit),
        ),
        src_ips=_top(
            db,
            "SELECT src_ip, COUNT(*) AS n FROM sessions WHERE started >= ?"
            " AND src_ip IS NOT NULL GROUP BY src_ip ORDER BY n DESC, src_ip LIMIT ?",
            (bound, limit),
        ),
        commands=_top(
            db,
            "SELECT input, COUNT(*) AS n FROM commands WHERE timestamp >= ? AND input IS NOT NULL"
            " GROUP BY input ORDER BY n DESC, input LIMIT ?",
            (bound, limit),
        ),
    )
