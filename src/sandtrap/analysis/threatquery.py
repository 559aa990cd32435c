"""Read-only questions of the threat-analysis commands over the index: captured artifacts with
their triage (`sandtrap artifacts`). Session queries are analysis/query.py's."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from sandtrap.analysis.cluster import Cluster, SessionTraits
from sandtrap.analysis.query import QueryError
from sandtrap.store.analysis_index import LIST_COLUMNS

_HEX = re.compile(r"^[0-9a-f]{4,64}$")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for column in LIST_COLUMNS:
        if column in row:
            try:
                row[column] = json.loads(row[column]) if row[column] else []
            except ValueError:
                row[column] = []
    return row


def list_artifacts(
    db: sqlite3.Connection, since: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """One row per captured file (by sha256), newest first: where and when seen, its triage."""
    sql = """
        SELECT f.sha256, MIN(f.timestamp) AS first_seen, MAX(f.timestamp) AS last_seen,
               COUNT(DISTINCT f.session) AS sessions, MIN(f.path) AS path, MAX(f.size) AS size,
               a.magic, a.mime, a.elf_arch, a.ssdeep, a.tlsh, a.yara, a.urls, a.ips, a.domains,
               a.error, a.md5, a.sha1, a.timestamp AS analysed
        FROM artifacts f LEFT JOIN analysed a ON a.sha256 = f.sha256
        WHERE (? IS NULL OR f.timestamp >= ?)
        GROUP BY f.sha256 ORDER BY last_seen DESC LIMIT ?
    """
    return [_decode(dict(row)) for row in db.execute(sql, (since, since, limit))]


def resolve_artifact(db: sqlite3.Connection, prefix: str) -> str:
    """The full sha256 for a unique prefix (at least 4 hex characters)."""
    prefix = prefix.strip().lower()
    if not _HEX.match(prefix):
        raise QueryError(f"{prefix!r} is not a sha256 or a prefix of one (4+ hex characters)")
    rows = db.execute(
        "SELECT sha256 FROM artifacts WHERE sha256 LIKE ? UNION "
        "SELECT sha256 FROM analysed WHERE sha256 LIKE ? LIMIT 2",
        (prefix + "%", prefix + "%"),
    ).fetchall()
    if not rows:
        raise QueryError(f"no artifact {prefix!r}")
    if len(rows) > 1:
        raise QueryError(f"artifact prefix {prefix!r} is ambiguous")
    return str(rows[0][0])


def artifact_detail(db: sqlite3.Connection, sha256: str) -> dict[str, Any]:
    """An artifact's triage and every session that left it (path, time, source)."""
    found = db.execute("SELECT * FROM analysed WHERE sha256 = ?", (sha256,)).fetchone()
    analysis = _decode(dict(found)) if found else None
    seen = [
        dict(row)
        for row in db.execute(
            "SELECT f.session, f.timestamp, f.path, f.size, f.artifact, s.src_ip, s.username"
            " FROM artifacts f LEFT JOIN sessions s USING (session)"
            " WHERE f.sha256 = ? ORDER BY f.timestamp",
            (sha256,),
        )
    ]
    return {"sha256": sha256, "analysis": analysis, "seen": seen}


def technique_counts(
    db: sqlite3.Connection, since: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """ATT&CK techniques by sessions that showed them, most first, with an example."""
    sql = """
        SELECT technique, name, tactic, COUNT(DISTINCT session) AS sessions,
               MAX(timestamp) AS last_seen, MIN(evidence) AS example
        FROM attack WHERE (? IS NULL OR timestamp >= ?)
        GROUP BY technique ORDER BY sessions DESC, technique LIMIT ?
    """
    return [dict(row) for row in db.execute(sql, (since, since, limit))]


def list_anomalies(
    db: sqlite3.Connection, since: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Sessions flagged as anomalies, highest score first, with their source and features."""
    sql = """
        SELECT a.session, a.timestamp, a.score, a.threshold, a.features, s.src_ip, s.username,
               s.client_version, s.duration
        FROM anomalies a LEFT JOIN sessions s USING (session)
        WHERE (? IS NULL OR a.timestamp >= ?) ORDER BY a.score DESC LIMIT ?
    """
    rows = []
    for row in db.execute(sql, (since, since, limit)):
        record = dict(row)
        try:
            record["features"] = json.loads(record["features"] or "{}")
        except ValueError:
            record["features"] = {}
        rows.append(record)
    return rows


def session_traits(db: sqlite3.Connection, since: str | None = None) -> list[SessionTraits]:
    """What clustering needs of every session since `since`, read in a few queries."""
    bound = (since, since)
    commands: dict[str, list[str]] = {}
    for session, text in db.execute(
        "SELECT c.session, c.input FROM commands c JOIN sessions s USING (session)"
        " WHERE (? IS NULL OR s.started >= ?) ORDER BY c.id",
        bound,
    ):
        commands.setdefault(session, []).append(str(text or ""))
    attempts: dict[str, list[tuple[str, str]]] = {}
    keys: dict[str, set[str]] = {}
    for session, user, password, fingerprint in db.execute(
        "SELECT a.session, a.username, a.password, a.key_fingerprint FROM auth_attempts a"
        " JOIN sessions s USING (session) WHERE (? IS NULL OR s.started >= ?) ORDER BY a.id",
        bound,
    ):
        if fingerprint:
            keys.setdefault(session, set()).add(str(fingerprint))
        elif password is not None:
            attempts.setdefault(session, []).append((str(user), str(password)))
    artifacts: dict[str, set[str]] = {}
    for session, sha256 in db.execute(
        "SELECT f.session, f.sha256 FROM artifacts f JOIN sessions s USING (session)"
        " WHERE (? IS NULL OR s.started >= ?)",
        bound,
    ):
        artifacts.setdefault(session, set()).add(str(sha256))
    tokens: dict[str, set[str]] = {}
    for session, planted_session, container in db.execute(
        "SELECT session, planted_session, planted_container FROM honeytoken_links"
    ):
        for member in (session, planted_session):
            if member:
                tokens.setdefault(str(member), set()).add(f"planted in {container}")
    rows = db.execute(
        "SELECT session, src_ip, started, hassh, client_version, username, password"
        " FROM sessions s WHERE (? IS NULL OR s.started >= ?)",
        bound,
    ).fetchall()
    return [
        SessionTraits(
            session=str(r[0]),
            src_ip=str(r[1] or ""),
            started=str(r[2] or ""),
            commands=tuple(commands.get(r[0], ())),
            hassh=r[3],
            client_version=r[4],
            username=r[5],
            password=r[6],
            attempts=tuple(attempts.get(r[0], ())),
            artifacts=frozenset(artifacts.get(r[0], ())),
            keys=frozenset(keys.get(r[0], ())),
            tokens=frozenset(tokens.get(r[0], ())),
        )
        for r in rows
    ]


def cluster_record(cluster: Cluster) -> dict[str, Any]:
    """A cluster as the CLI's JSON line."""
    members = cluster.members
    return {
        "id": cluster.id,
        "size": len(members),
        "sources": cluster.sources,
        "first_seen": members[0].started,
        "last_seen": max(m.started for m in members),
        "ties": cluster.ties,
        "members": [
            {"session": m.session, "src_ip": m.src_ip, "started": m.started} for m in members
        ],
    }


__all__ = [
    "artifact_detail",
    "cluster_record",
    "list_anomalies",
    "list_artifacts",
    "resolve_artifact",
    "session_traits",
    "technique_counts",
]
