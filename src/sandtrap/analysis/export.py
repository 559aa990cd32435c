"""`sandtrap export`: one session as a forensic bundle (.tar.gz) with a sha256 manifest.

Owns choosing and naming the members: the session's events, its casts, the kept container's
filesystem diff and the changed files taken out of the container through the archive API (falling
back to the artifact store when the container is gone). Member names are ours only (`files/<sha256>`
plus `files.json` mapping paths to digests): no attacker-chosen path ever becomes a tar name.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandtrap import __version__
from sandtrap.analysis.replay import find_casts
from sandtrap.analysis.summary import session_analysis
from sandtrap.errors import SandTrapError
from sandtrap.paths import DataLayout
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.forensics import first_file_in_tar, is_regular
from sandtrap.store.index import read_records

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024


@dataclass
class Bundle:
    """What goes into the archive: member name -> content, plus the file map."""

    session: str
    members: dict[str, bytes] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def session_events(log_path: Path, session: str) -> list[dict[str, Any]]:
    return [r for r in read_records(log_path) if r.get("session") == session]


def _container_id(records: list[dict[str, Any]]) -> str | None:
    for record in reversed(records):
        value = record.get("container_id")
        if isinstance(value, str) and value:
            return value
    return None


def _session_changes(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    changes: list[dict[str, str]] = []
    for record in records:
        if record.get("eventid") == "sandbox.diff":
            changes += [c for c in record.get("changes") or [] if isinstance(c, dict)]
    return changes


def _add_file(bundle: Bundle, path: str, kind: str, content: bytes, source: str) -> None:
    digest = hashlib.sha256(content).hexdigest()
    bundle.members[f"files/{digest}"] = content
    bundle.files.append(
        {"path": path, "kind": kind, "sha256": digest, "size": len(content), "source": source}
    )


async def _from_container(
    engine: Engine, container_id: str, changes: list[dict[str, str]], bundle: Bundle
) -> bool:
    """Diff and changed files from the kept container; False when it cannot be read."""
    try:
        raw = await engine.diff(container_id)
    except SandTrapError as exc:
        bundle.notes.append(f"container {container_id[:12]} not readable: {exc}")
        return False
    kinds = {0: "modified", 1: "added", 2: "deleted"}
    engine_diff = [
        {"path": str(e.get("Path", "")), "kind": kinds.get(int(e.get("Kind", 0)), "modified")}
        for e in raw
    ]
    bundle.members["diff.json"] = _json(
        {"container_id": container_id, "session_diff": changes, "container_diff": engine_diff}
    )
    total = 0
    for change in changes:
        if change.get("kind") == "deleted":
            continue
        path = str(change.get("path", ""))
        try:
            stat = await engine.archive_stat(container_id, path)
            if stat is None or not is_regular(stat) or int(stat.get("size", 0)) > MAX_FILE_BYTES:
                continue
            data = await engine.archive(container_id, path, limit=MAX_FILE_BYTES + 64 * 1024)
        except SandTrapError as exc:
            bundle.notes.append(f"{path!r}: {exc}")
            continue
        content = first_file_in_tar(data) if data else None
        if content is None or total + len(content) > MAX_TOTAL_BYTES:
            continue
        total += len(content)
        _add_file(bundle, path, str(change.get("kind")), content, "container")
    return True


def _from_artifacts(records: list[dict[str, Any]], layout: DataLayout, bundle: Bundle) -> None:
    bundle.members["diff.json"] = _json(
        {"container_id": _container_id(records), "session_diff": _session_changes(records)}
    )
    for record in records:
        if record.get("eventid") != "sandbox.artifact":
            continue
        digest = str(record.get("sha256", ""))
        stored = layout.artifact(digest)
        if len(digest) == 64 and stored.is_file():
            _add_file(
                bundle,
                str(record.get("path")),
                "added/modified",
                stored.read_bytes(),
                "artifact store",
            )


def _downloads(records: list[dict[str, Any]], layout: DataLayout, bundle: Bundle) -> None:
    """What the sinkhole fetched on the sandbox's behalf (`network.download`), by URL."""
    for record in records:
        digest = str(record.get("sha256", ""))
        stored = layout.artifact(digest)
        if record.get("eventid") == "network.download" and len(digest) == 64 and stored.is_file():
            _add_file(bundle, str(record.get("url")), "downloaded", stored.read_bytes(), "network")


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=True) + "\n").encode("ascii")


async def collect(
    session: str,
    layout: DataLayout,
    engine: Engine | None,
    records: list[dict[str, Any]] | None = None,
) -> Bundle:
    """Gather the bundle's members (reads the log, the casts, and the engine when given).

    `records` are the session's events when they come from elsewhere (a PostgreSQL store);
    otherwise they are read from the local log.
    """
    bundle = Bundle(session)
    if records is None:
        records = session_events(layout.events_log, session)
    bundle.members["events.jsonl"] = b"".join(
        (json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        for r in records
    )
    for cast in find_casts(layout.recordings, session):
        bundle.members[f"recordings/{cast.name}"] = cast.read_bytes()
    container_id = _container_id(records)
    from_engine = False
    if engine is not None and container_id is not None:
        from_engine = await _from_container(engine, container_id, _session_changes(records), bundle)
    if not from_engine:
        _from_artifacts(records, layout, bundle)
    _downloads(records, layout, bundle)
    bundle.members["files.json"] = _json(bundle.files)
    # Threat analysis (issue 19): keys, triage, enrichment, techniques, anomaly score.
    bundle.members["analysis.json"] = _json(session_analysis(records))
    return bundle


def write_bundle(bundle: Bundle, output: Path, sensor: str) -> dict[str, Any]:
    """Write the .tar.gz with manifest.json (sha256 and size of every other member)."""
    manifest = {
        "session": bundle.session,
        "sensor": sensor,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tool": f"sandtrap {__version__}",
        "notes": bundle.notes,
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(bundle.members.items())
        },
    }
    now = time.time()
    with tarfile.open(output, "w:gz") as archive:
        for name, data in [("manifest.json", _json(manifest)), *sorted(bundle.members.items())]:
            info = tarfile.TarInfo(f"{bundle.session}/{name}")
            info.size = len(data)
            info.mtime = int(now)
            info.mode = 0o444
            archive.addfile(info, io.BytesIO(data))
    return manifest
