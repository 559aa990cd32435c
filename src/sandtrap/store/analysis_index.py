"""The threat-analysis tables of the SQLite index (issue 19): their schema and the pure mapping
from analysis events to SQL, called by store/index.py (which owns the writer and `rebuild`)."""

from __future__ import annotations

import json
from typing import Any

Statement = tuple[str, tuple[Any, ...]]

ANALYSIS_SCHEMA = """
CREATE TABLE IF NOT EXISTS analysed (
    sha256 TEXT PRIMARY KEY, timestamp TEXT, size INTEGER, md5 TEXT, sha1 TEXT, magic TEXT,
    mime TEXT, ssdeep TEXT, tlsh TEXT, elf_arch TEXT, yara TEXT, urls TEXT, ips TEXT,
    domains TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS geo (
    session TEXT PRIMARY KEY, src_ip TEXT, country TEXT, country_name TEXT, asn INTEGER,
    as_org TEXT
);
CREATE TABLE IF NOT EXISTS attack (
    id INTEGER PRIMARY KEY, session TEXT, timestamp TEXT, technique TEXT, name TEXT, tactic TEXT,
    evidence TEXT, source TEXT
);
CREATE INDEX IF NOT EXISTS attack_session ON attack (session);
CREATE INDEX IF NOT EXISTS attack_technique ON attack (technique);
CREATE TABLE IF NOT EXISTS anomalies (
    session TEXT PRIMARY KEY, timestamp TEXT, score REAL, threshold REAL, features TEXT
);
CREATE TABLE IF NOT EXISTS network_counts (session TEXT PRIMARY KEY, events INTEGER);
CREATE TABLE IF NOT EXISTS honeytokens (
    container_id TEXT, timestamp TEXT, kind TEXT, path TEXT, value TEXT, fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS honeytoken_links (
    session TEXT, timestamp TEXT, planted_session TEXT, planted_container TEXT, kind TEXT,
    via TEXT
);
"""
ANALYSIS_TABLES = (
    "analysed",
    "geo",
    "attack",
    "anomalies",
    "network_counts",
    "honeytokens",
    "honeytoken_links",
)

# JSON list columns: stored as JSON text, decoded by analysis/query.py.
LIST_COLUMNS = ("yara", "urls", "ips", "domains")


def _json(value: Any) -> str:
    return json.dumps(value if isinstance(value, list) else [], ensure_ascii=True)


def analysis_statements(record: dict[str, Any]) -> list[Statement] | None:
    """The SQL for an analysis event record; None when the record is no analysis event."""
    eventid = record.get("eventid")
    if eventid == "artifact.analysed":
        sha256 = record.get("sha256")
        if not isinstance(sha256, str):
            return []
        return [
            (
                "INSERT OR REPLACE INTO analysed (sha256, timestamp, size, md5, sha1, magic, mime,"
                " ssdeep, tlsh, elf_arch, yara, urls, ips, domains, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    record.get("timestamp"),
                    record.get("size"),
                    record.get("md5"),
                    record.get("sha1"),
                    record.get("magic"),
                    record.get("mime"),
                    record.get("ssdeep"),
                    record.get("tlsh"),
                    record.get("elf_arch"),
                    *(_json(record.get(column)) for column in LIST_COLUMNS),
                    record.get("error"),
                ),
            )
        ]
    if eventid == "honeytoken.planted":
        return [
            (
                "INSERT INTO honeytokens (container_id, timestamp, kind, path, value, fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.get("container_id"),
                    record.get("timestamp"),
                    token.get("kind"),
                    token.get("path"),
                    token.get("value"),
                    token.get("fingerprint"),
                ),
            )
            for token in record.get("tokens") or []
            if isinstance(token, dict)
        ]
    session = record.get("session")
    if eventid == "honeytoken.triggered" and isinstance(session, str):
        return [
            (
                "INSERT INTO honeytoken_links (session, timestamp, planted_session,"
                " planted_container, kind, via) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session,
                    record.get("timestamp"),
                    record.get("planted_session"),
                    record.get("planted_container"),
                    record.get("kind"),
                    record.get("via"),
                ),
            )
        ]
    if eventid == "session.geo" and isinstance(session, str):
        return [
            (
                "INSERT OR REPLACE INTO geo (session, src_ip, country, country_name, asn, as_org)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session,
                    record.get("src_ip"),
                    record.get("country"),
                    record.get("country_name"),
                    record.get("asn"),
                    record.get("as_org"),
                ),
            )
        ]
    if eventid == "session.attack" and isinstance(session, str):
        return [
            (
                "INSERT INTO attack (session, timestamp, technique, name, tactic, evidence, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    record.get("timestamp"),
                    record.get("technique"),
                    record.get("name"),
                    record.get("tactic"),
                    record.get("evidence"),
                    record.get("source"),
                ),
            )
        ]
    if eventid == "session.anomaly" and isinstance(session, str):
        return [
            (
                "INSERT OR REPLACE INTO anomalies (session, timestamp, score, threshold, features)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    session,
                    record.get("timestamp"),
                    record.get("score"),
                    record.get("threshold"),
                    json.dumps(record.get("features") or {}, ensure_ascii=True),
                ),
            )
        ]
    if isinstance(eventid, str) and eventid.startswith("network.") and isinstance(session, str):
        # The sinkhole's events (issue 16), counted per session for the anomaly features.
        return [
            (
                "INSERT INTO network_counts (session, events) VALUES (?, 1)"
                " ON CONFLICT (session) DO UPDATE SET events = events + 1",
                (session,),
            )
        ]
    return None


__all__ = ["ANALYSIS_SCHEMA", "ANALYSIS_TABLES", "LIST_COLUMNS", "analysis_statements"]
