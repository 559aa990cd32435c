"""What a session changed: the sandbox's filesystem diff and the files it left behind.

Owns turning `docker diff` into a `sandbox.diff` event (authorized_keys files flagged, with the
keys they hold) and copying new or modified regular files
out through the archive API into `var/artifacts/<sha256>` (content-addressed, so attacker-chosen
names never become host file names). The sandbox needs no network for any of this.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

from sandtrap.events import EventSink, Peer, SandboxArtifact, SandboxDiff
from sandtrap.pubkeys import is_authorized_keys, parse_authorized_keys
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.hardening import parse_engine_time

log = logging.getLogger(__name__)

KINDS = {0: "modified", 1: "added", 2: "deleted"}
MAX_DIFF_ENTRIES = 2000
MAX_ARTIFACTS = 200
MAX_PATH_CHARS = 4096
# authorized_keys files read for the keys they hold (sshd reads at most a few per user).
FLAG_AUTHORIZED_KEYS = "authorized_keys"
MAX_KEY_FILES = 20
MAX_KEY_FILE_BYTES = 256 * 1024
# Files the engine bind-mounts into every container: their diff entries are the engine's doing,
# and what is written to them does not live in the container's layer anyway.
ENGINE_MANAGED = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})
# Go's os.FileMode type bits (dir, symlink, device, pipe, socket, ...): none set = regular file.
_GO_TYPE_BITS = 0xFFF00000 | (1 << 31)


def is_regular(stat: dict[str, Any]) -> bool:
    return (int(stat.get("mode", 0)) & _GO_TYPE_BITS) == 0


def first_file_in_tar(data: bytes) -> bytes | None:
    """The content of the first regular file in a tar stream, read in memory (never to disk)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    return handle.read() if handle else None
    except (tarfile.TarError, OSError):
        return None
    return None


def stat_key(stat: dict[str, Any] | None) -> tuple[int, int] | None:
    """(size, mtime in whole seconds) of an archive-API stat; None for a missing path."""
    if stat is None:
        return None
    moment = parse_engine_time(str(stat.get("mtime", "")))
    return int(stat.get("size", 0)), int(moment.timestamp()) if moment else 0


def store_artifact(directory: Path, content: bytes) -> tuple[str, Path]:
    """Write content under its sha256 (once); returns (digest, path)."""
    digest = hashlib.sha256(content).hexdigest()
    target = directory / digest
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{digest}.{os.getpid()}.partial"
        partial.write_bytes(content)
        partial.chmod(0o440)
        partial.replace(target)
    return digest, target


async def _planted_keys(
    engine: ContainerEngine, sandbox: ContainerSandbox, changes: list[dict[str, str]]
) -> list[dict[str, str]]:
    """The keys in each authorized_keys file the session created or changed (issue 19).

    Every key in the file is listed, old ones included: a file that changed is the attacker's
    file now, and the image's own files carry no keys.
    """
    planted: list[dict[str, str]] = []
    flagged = [c["path"] for c in changes if c.get("flag") == FLAG_AUTHORIZED_KEYS]
    for path in flagged[:MAX_KEY_FILES]:
        stat = await engine.archive_stat(sandbox.id, path)
        if stat is None or not is_regular(stat):
            continue
        data = await engine.archive(sandbox.id, path, limit=MAX_KEY_FILE_BYTES + 64 * 1024)
        content = first_file_in_tar(data) if data else None
        if content is None:
            continue
        text = content[:MAX_KEY_FILE_BYTES].decode("utf-8", "replace")
        for key in parse_authorized_keys(text):
            planted.append(
                {
                    "path": path,
                    "key_type": key.key_type,
                    "key_fingerprint": key.fingerprint,
                    "key": key.key,
                    "comment": key.comment[:MAX_PATH_CHARS],
                }
            )
    return planted


async def capture_changes(
    engine: ContainerEngine,
    sandbox: ContainerSandbox,
    peer: Peer,
    events: EventSink,
    artifacts_dir: Path,
    max_bytes: int,
) -> None:
    """Emit the session's diff and copy changed regular files out as artifacts."""
    raw = await engine.diff(sandbox.id)
    changes: list[dict[str, str]] = []
    for entry in raw:
        path = str(entry.get("Path", ""))[:MAX_PATH_CHARS]
        kind = KINDS.get(int(entry.get("Kind", 0)), "modified")
        if path in ENGINE_MANAGED:
            continue
        if path in sandbox.baseline:
            after = await engine.archive_stat(sandbox.id, path)
            if sandbox.baseline[path] == stat_key(after):
                continue
        change = {"path": path, "kind": kind}
        if kind != "deleted" and is_authorized_keys(path):
            change["flag"] = FLAG_AUTHORIZED_KEYS
        changes.append(change)
    planted = await _planted_keys(engine, sandbox, changes)
    events.emit(
        SandboxDiff(
            peer=peer,
            container_id=sandbox.id,
            changes=changes[:MAX_DIFF_ENTRIES],
            total=len(changes),
            truncated=len(changes) > MAX_DIFF_ENTRIES,
            authorized_keys=planted,
        )
    )
    if max_bytes <= 0:
        return
    copied = 0
    for change in changes:
        if change["kind"] == "deleted" or copied >= MAX_ARTIFACTS:
            continue
        stat = await engine.archive_stat(sandbox.id, change["path"])
        if stat is None or not is_regular(stat) or int(stat.get("size", 0)) > max_bytes:
            continue
        data = await engine.archive(sandbox.id, change["path"], limit=max_bytes + 64 * 1024)
        content = first_file_in_tar(data) if data else None
        if content is None:
            continue
        digest, target = await asyncio.to_thread(store_artifact, artifacts_dir, content)
        copied += 1
        events.emit(
            SandboxArtifact(
                peer=peer,
                container_id=sandbox.id,
                path=change["path"],
                size=len(content),
                sha256=digest,
                artifact=str(target),
            )
        )
