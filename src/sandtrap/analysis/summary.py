"""A session's threat analysis in one record, gathered from its events (pure): the public keys it
offered and planted, its artifacts' triage, and (as they are recorded) its enrichment, ATT&CK
techniques and anomaly score. The export bundle's `analysis.json` (analysis/export.py)."""

from __future__ import annotations

from typing import Any

_KEY_FIELDS = ("timestamp", "username", "key_type", "key_fingerprint", "key", "reason")
_TRIAGE_DROP = ("timestamp", "eventid", "sensor", "session", "src_ip", "src_port", "dst_port")


def session_analysis(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The analysis record of one session's events (in log order)."""
    keys: list[dict[str, Any]] = []
    planted: list[dict[str, Any]] = []
    artifacts: dict[str, dict[str, Any]] = {}
    geo: dict[str, Any] | None = None
    techniques: list[dict[str, Any]] = []
    anomaly: dict[str, Any] | None = None
    for record in records:
        eventid = record.get("eventid")
        if eventid in ("auth.failed", "auth.success") and record.get("key_fingerprint"):
            entry = {name: record.get(name) for name in _KEY_FIELDS}
            entry["accepted"] = eventid == "auth.success"
            keys.append(entry)
        elif eventid == "sandbox.diff":
            planted += [k for k in record.get("authorized_keys") or [] if isinstance(k, dict)]
        elif eventid == "artifact.analysed":
            sha256 = str(record.get("sha256"))
            artifacts[sha256] = {k: v for k, v in record.items() if k not in _TRIAGE_DROP}
        elif eventid == "session.geo":
            geo = {k: v for k, v in record.items() if k not in _TRIAGE_DROP}
        elif eventid == "session.attack":
            techniques.append({k: v for k, v in record.items() if k not in _TRIAGE_DROP})
        elif eventid == "session.anomaly":
            anomaly = {k: v for k, v in record.items() if k not in _TRIAGE_DROP}
    return {
        "public_keys": keys,
        "authorized_keys": planted,
        "artifacts": list(artifacts.values()),
        "geo": geo,
        "attack": techniques,
        "anomaly": anomaly,
    }


__all__ = ["session_analysis"]
