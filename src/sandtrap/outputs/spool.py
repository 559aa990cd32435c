"""An output's spool: records a remote sink could not take yet, on disk, replayed in order.

One JSON line per record in var/spool/<output>.jsonl, appended with single small writes (as the
event log is), bounded by `max_bytes` (records beyond are dropped and counted, never silently).
Reading back runs in a worker thread; a delivered front is skipped (an offset) and the file
removed once all of it is delivered. Only the output's runner task touches it.
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
        self._offset = 0

    @property
    def size(self) -> int:
        if self._size is None:
            try:
                self._size = self.path.stat().st_size
            except OSError:
                self._size = 0
        return self._size

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

    async def take(self, limit: int) -> tuple[list[Record], list[int]]:
        """Up to `limit` records from the unsent front of the spool, and each one's size in bytes.

        Nothing is removed until `consumed` says how much arrived.
        """
        return await asyncio.to_thread(self._read, limit)

    def _read(self, limit: int) -> tuple[list[Record], list[int]]:
        records: list[Record] = []
        sizes: list[int] = []
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                for line in handle:
                    if len(records) >= limit or not line.endswith(b"\n"):
                        break
                    try:
                        value = json.loads(line)
                    except ValueError:
                        value = None
                    if not isinstance(value, dict):
                        # A torn line after a crash mid-write: nothing else writes here.
                        log.warning("skipping an unreadable line in %s", self.path)
                        self._offset += len(line)
                        continue
                    records.append(value)
                    sizes.append(len(line))
        except FileNotFoundError:
            self._size = 0
        return records, sizes

    def consumed(self, nbytes: int) -> None:
        """`nbytes` from the front were delivered; an emptied spool file is removed.

        The read offset is kept in memory: after a crash mid-replay the delivered front is sent
        again (at least once, never lost).
        """
        self._offset += nbytes
        if self._offset >= self.size:
            self.path.unlink(missing_ok=True)
            self._offset = 0
            self._size = 0

    def has_data(self) -> bool:
        return self.size > self._offset


__all__ = ["Spool"]
