"""An output's spool: records a remote sink could not take yet, on disk, replayed in order.

One JSON line per record in var/spool/<output>.jsonl, appended with single small writes (as the
event log is), bounded by `max_bytes` (records beyond are dropped and counted, never silently).
Reading back and rewriting run in a worker thread. Only the output's runner task touches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from sandtrap.outputs.base import Record

log = logging.getLogger(__name__)


class Spool:
    """The spool file of one output; `append` is synchronous and cheap, `take`/`keep` threaded."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        self._size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            try:
                self._size = self.path.stat().st_size
            except OSError:
                self._size = 0
        return self._size

    def has_data(self) -> bool:
        return self.size > 0

    def append(self, records: list[Record]) -> int:
        """Write `records` at the end; returns how many were dropped (full spool or disk)."""
        lines = [
            json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
            for record in records
        ]
        kept: list[str] = []
        size = self.size
        for line in lines:
            if size + len(line) > self.max_bytes:
                break
            kept.append(line)
            size += len(line)
        dropped = len(lines) - len(kept)
        if kept:
            data = "".join(kept).encode("ascii")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self._size = size
            except OSError as exc:
                log.error("cannot spool %d records to %s: %s", len(kept), self.path, exc)
                dropped = len(lines)
                self._size = None
        self.dropped += dropped
        return dropped

    async def take(self) -> list[Record]:
        """Every spooled record, oldest first (the file stays until `keep` says what remains)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[Record]:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                # A torn last line after a crash mid-write: nothing else writes here.
                log.warning("skipping an unreadable line in %s", self.path)
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    async def keep(self, records: list[Record]) -> None:
        """Replace the spool's content with `records` (what a replay could not send)."""
        await asyncio.to_thread(self._rewrite, records)

    def _rewrite(self, records: list[Record]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            self._size = 0
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = "".join(
            json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
            for record in records
        )
        tmp.write_text(data, encoding="ascii")
        tmp.replace(self.path)
        self._size = len(data)


__all__ = ["Spool"]
