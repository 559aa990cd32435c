"""The PostgreSQL store: many sensors' events in one database, and the analyst's view of it.

Owns the schema and its migrations (applied under an advisory lock, so sensors starting together
do not race), idempotent inserts (each record's `uid` is the SHA-256 of its canonical JSON, so a
replayed spool or a re-shipped log never duplicates a row), and `load_index`: the store's events
replayed into an in-memory SQLite index, so every analyst command (`sessions`, `stats`, `replay`,
`export`) runs unchanged over a fleet. psycopg is imported only by the functions using it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sandtrap.store.index import SCHEMA, apply

Record = dict[str, Any]

# (version, statements): applied in order, each once, in one transaction per version.
MIGRATIONS: Sequence[tuple[int, str]] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS events (
            id bigserial PRIMARY KEY,
            uid text NOT NULL UNIQUE,
            sensor text NOT NULL,
            timestamp timestamptz NOT NULL,
            eventid text NOT NULL,
            session text,
            src_ip text,
            line text NOT NULL,
            record jsonb NOT NULL
        );
        CREATE INDEX IF NOT EXISTS events_sensor_time ON events (sensor, timestamp);
        CREATE INDEX IF NOT EXISTS events_session ON events (session);
        CREATE INDEX IF NOT EXISTS events_eventid_time ON events (eventid, timestamp);
        """,
    ),
)
LOCK_KEY = 0x5A17_7A9  # pg_advisory_xact_lock key of SandTrap's migrations
INSERT = (
    "INSERT INTO events (uid, sensor, timestamp, eventid, session, src_ip, line, record) "
    "VALUES (%s, %s, %s::timestamptz, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (uid) DO NOTHING"
)


def canonical(record: Record) -> str:
    """The record as the one JSON text its uid is taken from (sorted keys, ASCII)."""
    return json.dumps(record, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def row(record: Record) -> tuple[Any, ...]:
    """The INSERT parameters of one record; pure."""
    line = canonical(record)
    # jsonb cannot hold U+0000; the exact text stays in `line`, which is what readers use.
    searchable = line.replace("\\u0000", "\\ufffd")
    return (
        hashlib.sha256(line.encode("ascii")).hexdigest(),
        str(record.get("sensor") or ""),
        record.get("timestamp"),
        str(record.get("eventid") or ""),
        record.get("session"),
        record.get("src_ip"),
        line,
        searchable,
    )


async def migrate(connection: Any) -> int:
    """Bring the schema to the newest version; returns it. `connection` is a psycopg
    AsyncConnection (not in a transaction)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS sandtrap_schema (version integer NOT NULL)"
        )
        cursor = await connection.execute("SELECT max(version) FROM sandtrap_schema")
        current = (await cursor.fetchone())[0] or 0
        for version, statements in MIGRATIONS:
            if version > current:
                await connection.execute(statements)
                await connection.execute(
                    "INSERT INTO sandtrap_schema (version) VALUES (%s)", (version,)
                )
                current = version
    return int(current)


async def insert(connection: Any, records: Iterable[Record]) -> None:
    """Insert records (idempotent), in one transaction."""
    rows = [row(record) for record in records]
    if not rows:
        return
    async with connection.transaction(), connection.cursor() as cursor:
        await cursor.executemany(INSERT, rows)


def load_index(url: str, sensor: str | None = None, batch: int = 5000) -> sqlite3.Connection:
    """The store's events (of one sensor, or all) as an in-memory SQLite index.

    Raises:
        psycopg.Error: the store cannot be read (the CLI reports it).
    """
    import psycopg

    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    where, params = ("WHERE sensor = %s", (sensor,)) if sensor else ("", ())
    with (
        psycopg.connect(url) as connection,
        connection.cursor(name="sandtrap_load") as cursor,
    ):
        cursor.itersize = batch
        cursor.execute(f"SELECT line FROM events {where} ORDER BY timestamp, id", params)  # noqa: S608 - a fixed clause, values bound
        pending: list[Record] = []
        for (line,) in cursor:
            pending.append(json.loads(line))
            if len(pending) >= batch:
                apply(db, pending)
                pending = []
        apply(db, pending)
    return db


def session_records(url: str, session: str) -> list[Record]:
    """Every event of one session in the store, in order.

    Raises:
        psycopg.Error: the store cannot be read.
    """
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT line FROM events WHERE session = %s ORDER BY timestamp, id", (session,)
        ).fetchall()
    return [json.loads(line) for (line,) in rows]


__all__ = ["MIGRATIONS", "canonical", "insert", "load_index", "migrate", "row", "session_records"]
