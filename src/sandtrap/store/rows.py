"""The index's schema and the SQL for one event record: what each event becomes in which table.

Pure, no I/O: `statements(record)` maps one decoded JSON line to the statements that index it
(store/index.py runs them; store/analysis_index.py adds the threat-analysis tables).
"""

from __future__ import annotations

import json
from typing import Any

from sandtrap.store.analysis_index import ANALYSIS_TABLES, analysis_statements

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY, sensor TEXT, src_ip TEXT, src_port INTEGER, dst_port INTEGER,
    started TEXT, ended TEXT, username TEXT, password TEXT, client_version TEXT, hassh TEXT,
    container_id TEXT, hostname TEXT, duration REAL, bytes_in INTEGER, bytes_out INTEGER,
    exit_status INTEGER, reason TEXT
);
CREATE TABLE IF NOT EXISTS auth_attempts (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, src_ip TEXT, username TEXT,
    password TEXT, method TEXT, key_fingerprint TEXT, success INTEGER, reason TEXT
);
CREATE TABLE IF NOT EXISTS channels (
    session TEXT, channel INTEGER, timestamp TEXT, kind TEXT, command TEXT, term TEXT,
    width INTEGER, height INTEGER, recording TEXT, exit_status INTEGER, bytes_in INTEGER,
    bytes_out INTEGER, duration REAL, PRIMARY KEY (session, channel)
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, channel INTEGER, source TEXT,
    input TEXT
);
CREATE TABLE IF NOT EXISTS diffs (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, container_id TEXT, path TEXT,
    kind TEXT
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, container_id TEXT, path TEXT,
    size INTEGER, sha256 TEXT, artifact TEXT
);
CREATE TABLE IF NOT EXISTS network (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, eventid TEXT, dst_ip TEXT,
    dst_port INTEGER, detail TEXT
);
-- Every event as the log has it, for the web console's timelines and for event families other
-- tables do not model (network.*, artifact.*): shown as they are, whatever their fields.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, eventid TEXT, record TEXT
);
CREATE INDEX IF NOT EXISTS events_session ON events (session, eventid);
CREATE INDEX IF NOT EXISTS events_eventid ON events (eventid);
CREATE INDEX IF NOT EXISTS artifacts_sha256 ON artifacts (sha256, timestamp);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started);
CREATE INDEX IF NOT EXISTS sessions_src_ip ON sessions (src_ip);
CREATE INDEX IF NOT EXISTS auth_session ON auth_attempts (session);
CREATE INDEX IF NOT EXISTS auth_timestamp ON auth_attempts (timestamp);
CREATE INDEX IF NOT EXISTS commands_session ON commands (session);
CREATE INDEX IF NOT EXISTS commands_timestamp ON commands (timestamp);
CREATE INDEX IF NOT EXISTS diffs_session ON diffs (session);
CREATE INDEX IF NOT EXISTS artifacts_session ON artifacts (session);
CREATE INDEX IF NOT EXISTS network_session ON network (session);
"""
TABLES = (
    "sessions",
    "auth_attempts",
    "channels",
    "commands",
    "diffs",
    "artifacts",
    "network",
    "events",
)
# The threat-analysis tables (issue 19) are store/analysis_index.py's.
ALL_TABLES = TABLES + ANALYSIS_TABLES


def network_detail(record: dict[str, Any]) -> str:
    """One line saying what a network.* event was (the sinkhole, issue 16); pure."""
    kind = str(record.get("eventid", "")).removeprefix("network.")
    if kind == "dns":
        return f"{record.get('qtype')} {record.get('query')}"
    if kind == "http":
        return f"{record.get('method')} {record.get('url')}"
    if kind == "tls":
        return f"TLS sni={record.get('sni')} ja3={record.get('ja3')}"
    if kind == "flood":
        return f"{record.get('count')} {record.get('kind')} records over {record.get('seconds')}s"
    if kind in ("data", "udp"):
        return f"{kind} {record.get('bytes')} bytes"
    if kind == "download":
        return (
            f"downloaded {record.get('url')} (HTTP {record.get('status')}, "
            f"{record.get('size')} bytes, sha256 {str(record.get('sha256'))[:16]})"
        )
    if kind == "fetch_failed":
        return f"not fetched {record.get('url')}: {record.get('reason')}"
    return str(record.get("proto", kind))


Statement = tuple[str, tuple[Any, ...]]


def _upsert_session(session: str, **values: Any) -> Statement:
    """Insert the session row when missing, then set `values` (NULLs never overwrite)."""
    names = ["session", *values]
    updates = ", ".join(f"{name} = COALESCE(excluded.{name}, {name})" for name in values)
    # Column names are our keyword arguments, never data; values are bound parameters.
    sql = " ".join(
        [
            "INSERT INTO sessions (",
            ", ".join(names),
            ") VALUES (",
            ", ".join("?" * len(names)),
            ") ON CONFLICT (session) DO UPDATE SET",
            updates,
        ]
    )
    return sql, (session, *values.values())


def statements(record: dict[str, Any]) -> list[Statement]:
    """The SQL that indexes one event record (a decoded JSON line); pure, no I/O."""
    return [_event_row(record), *_table_statements(record)]


def _event_row(record: dict[str, Any]) -> Statement:
    session, eventid, when = record.get("session"), record.get("eventid"), record.get("timestamp")
    return (
        "INSERT INTO events (session, timestamp, eventid, record) VALUES (?, ?, ?, ?)",
        (
            session if isinstance(session, str) and session else None,
            when if isinstance(when, str) else None,
            eventid if isinstance(eventid, str) else None,
            json.dumps(record, ensure_ascii=True, separators=(",", ":")),
        ),
    )


def _table_statements(record: dict[str, Any]) -> list[Statement]:
    eventid = record.get("eventid")
    network = isinstance(eventid, str) and eventid.startswith("network.")
    # Analysis rows (store/analysis_index.py); a network.* event also has its own row below.
    analysis = analysis_statements(record)
    if analysis is not None and not network:
        return analysis
    session = record.get("session")
    when = record.get("timestamp")
    if not isinstance(session, str) or not session:
        return analysis or []
    if eventid == "session.connect":
        return [
            _upsert_session(
                session,
                sensor=record.get("sensor"),
                src_ip=record.get("src_ip"),
                src_port=record.get("src_port"),
                dst_port=record.get("dst_port"),
                started=when,
            )
        ]
    if eventid == "session.client.kex":
        return [
            _upsert_session(
                session, client_version=record.get("client_version"), hassh=record.get("hassh")
            )
        ]
    if eventid in ("auth.success", "auth.failed"):
        success = eventid == "auth.success"
        result: list[Statement] = [
            (
                "INSERT INTO auth_attempts (session, timestamp, src_ip, username, password, method,"
                " key_fingerprint, success, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    when,
                    record.get("src_ip"),
                    record.get("username"),
                    record.get("password"),
                    record.get("method"),
                    record.get("key_fingerprint"),
                    int(success),
                    record.get("reason"),
                ),
            )
        ]
        if success:
            result.append(
                _upsert_session(
                    session, username=record.get("username"), password=record.get("password")
                )
            )
        return result
    if eventid == "sandbox.allocated":
        return [
            _upsert_session(
                session, container_id=record.get("container_id"), hostname=record.get("hostname")
            )
        ]
    if eventid in ("session.shell", "session.exec", "session.subsystem"):
        kind = eventid.split(".")[1]
        command = record.get("input") if kind == "exec" else record.get("name")
        opened: list[Statement] = [
            (
                "INSERT OR REPLACE INTO channels (session, channel, timestamp, kind, command, term,"
                " width, height, recording) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    record.get("channel"),
                    when,
                    kind,
                    command,
                    record.get("term"),
                    record.get("width"),
                    record.get("height"),
                    record.get("recording"),
                ),
            )
        ]
        if kind == "exec":
            opened.append(_command(session, when, record.get("channel"), "exec", command))
        return opened
    if eventid == "session.command":
        return [_command(session, when, record.get("channel"), "shell", record.get("input"))]
    if eventid == "session.channel.closed":
        return [
            (
                "UPDATE channels SET exit_status = ?, bytes_in = ?, bytes_out = ?, duration = ?"
                " WHERE session = ? AND channel = ?",
                (
                    record.get("exit_status"),
                    record.get("bytes_in"),
                    record.get("bytes_out"),
                    record.get("duration"),
                    session,
                    record.get("channel"),
                ),
            )
        ]
    if eventid == "sandbox.diff":
        return [
            (
                "INSERT INTO diffs (session, timestamp, container_id, path, kind)"
                " VALUES (?, ?, ?, ?, ?)",
                (session, when, record.get("container_id"), change.get("path"), change.get("kind")),
            )
            for change in record.get("changes") or []
            if isinstance(change, dict)
        ]
    if eventid == "sandbox.artifact":
        return [
            (
                "INSERT INTO artifacts (session, timestamp, container_id, path, size, sha256,"
                " artifact) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    when,
                    record.get("container_id"),
                    record.get("path"),
                    record.get("size"),
                    record.get("sha256"),
                    record.get("artifact"),
                ),
            )
        ]
    if network:
        # A download is an artifact too (its URL as the path): `artifacts list`, the console.
        downloaded = (
            [
                (
                    "INSERT INTO artifacts (session, timestamp, container_id, path, size, sha256,"
                    " artifact) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        session,
                        when,
                        record.get("container_id"),
                        record.get("url"),
                        record.get("size"),
                        record.get("sha256"),
                        record.get("artifact"),
                    ),
                )
            ]
            if eventid == "network.download"
            else []
        )
        return [
            *downloaded,
            (
                "INSERT INTO network (session, timestamp, eventid, dst_ip, dst_port, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session,
                    when,
                    eventid,
                    record.get("dst_ip"),
                    record.get("dst_port"),
                    network_detail(record)[:2048],
                ),
            ),
            *(analysis or []),
        ]
    if eventid == "session.closed":
        return [
            _upsert_session(
                session,
                src_ip=record.get("src_ip"),
                ended=when,
                duration=record.get("duration"),
                reason=record.get("reason"),
                username=record.get("username"),
                container_id=record.get("container_id"),
                bytes_in=record.get("bytes_in"),
                bytes_out=record.get("bytes_out"),
                exit_status=record.get("exit_status"),
            )
        ]
    return []


def _command(session: str, when: Any, channel: Any, source: str, text: Any) -> Statement:
    return (
        "INSERT INTO commands (session, timestamp, channel, source, input) VALUES (?, ?, ?, ?, ?)",
        (session, when, channel, source, text),
    )


__all__ = ["ALL_TABLES", "SCHEMA", "TABLES", "Statement", "network_detail", "statements"]
