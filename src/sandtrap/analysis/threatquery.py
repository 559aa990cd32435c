"""Read-only questions of the threat-analysis commands over the index: captured artifacts with
their triage (`sandtrap artifacts`). Session queries are analysis/query.py's."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

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


__all__ = ["artifact_detail", "list_artifacts", "resolve_artifact", "technique_counts"]
