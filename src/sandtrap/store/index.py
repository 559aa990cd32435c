"""The SQLite index (var/sandtrap.db): sessions, auth attempts, channels, commands, diffs, files.

Owns the one writer (`EventIndex`: an EventLog listener feeding a bounded queue that a single worker
thread drains; when the queue is full an event is dropped and counted, the SSH front never waits)
and `rebuild` from the JSON-lines log, which stays the source of truth. The schema and the pure
mapping from one event record to SQL (`statements`) are store/rows.py's; reading is analysis/'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandtrap.events import Event, to_json_line
from sandtrap.store.analysis_index import ANALYSIS_SCHEMA
from sandtrap.store.rows import ALL_TABLES, SCHEMA, TABLES, Statement, network_detail, statements

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
BATCH_SIZE = 500
_POLL_SECONDS = 0.2


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the index in WAL mode with the schema in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    db.executescript(ANALYSIS_SCHEMA)
    return db


def apply(db: sqlite3.Connection, records: Iterable[dict[str, Any]]) -> int:
    """Execute the statements of `records` (no commit); returns how many records were used."""
    used = 0
    for record in records:
        for sql, params in statements(record):
            db.execute(sql, params)
        used += 1
    return used


def log_files(log_path: Path) -> list[Path]:
    """The log and its rotated files, oldest first (events.jsonl.N ... .1, events.jsonl)."""
    rotated = []
    for candidate in log_path.parent.glob(f"{log_path.name}.*"):
        suffix = candidate.name[len(log_path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [path for _, path in sorted(rotated, reverse=True)]
    if log_path.exists():
        files.append(log_path)
    return files


def read_records(log_path: Path) -> Iterator[dict[str, Any]]:
    """Every event record in the log and its rotated files, oldest first; bad lines are skipped
    (a line cut by a crash mid-write cannot happen with O_APPEND writes, but a copied file may)."""
    for path in log_files(log_path):
        with path.open("rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                except ValueError:
                    log.warning("skipping a line of %s that is not JSON", path)
                    continue
                if isinstance(record, dict):
                    yield record


def rebuild(db_path: Path, log_path: Path) -> int:
    """Empty the index and fill it again from the log, in one transaction; returns events read.

    Safe while the service runs: its writer waits for the transaction, then carries on.
    """
    db = connect(db_path)
    try:
        db.execute("BEGIN IMMEDIATE")
        for table in ALL_TABLES:
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - table names are our constants
        count = apply(db, read_records(log_path))
        db.commit()
        return count
    finally:
        db.close()


@dataclass(frozen=True)
class IndexStatistics:
    queued: int
    written: int
    dropped: int
    errors: int


class EventIndex:
    """The index's one writer. `offer` is the EventLog listener; `run` is the service-long task.

    `offer` never blocks: a full queue drops the event and counts it (`sandtrap index rebuild`
    recovers it from the log). `run` drains the queue on a worker thread in batches (one commit per
    batch) until `stop()`; cancelling it also stops the thread within a poll interval.
    """

    def __init__(self, path: Path, sensor: str, queue_size: int = QUEUE_SIZE) -> None:
        self.path = path
        self.sensor = sensor
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._written = 0
        self._dropped = 0
        self._errors = 0

    def offer(self, event: Event) -> None:
        if self._stopping.is_set():
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("index queue full: %d events dropped so far", self._dropped)

    def statistics(self) -> IndexStatistics:
        return IndexStatistics(self._queue.qsize(), self._written, self._dropped, self._errors)

    def stop(self) -> None:
        """Ask the writer to finish: it writes what is queued, then ends."""
        self._stopping.set()

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self._work)
        finally:
            self._stopping.set()

    def _work(self) -> None:
        try:
            db = connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot open the index %s: %s; events go to the log only", self.path, exc)
            self._errors += 1
            self._stopping.wait()
            return
        try:
            while True:
                batch = self._take_batch()
                if batch:
                    self._write(db, batch)
                elif self._stopping.is_set():
                    return
        finally:
            db.close()

    def _take_batch(self) -> list[Event]:
        try:
            batch = [self._queue.get(timeout=_POLL_SECONDS)]
        except queue.Empty:
            return []
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, db: sqlite3.Connection, batch: list[Event]) -> None:
        # The same path as `rebuild`: the record as the log has it, so both give the same rows.
        records = [json.loads(to_json_line(event, self.sensor)) for event in batch]
        try:
            apply(db, records)
            db.commit()
            self._written += len(batch)
        except sqlite3.Error as exc:
            db.rollback()
            self._errors += 1
            log.error("index write failed (%d events lost from the index): %s", len(batch), exc)


__all__ = [
    "ALL_TABLES",
    "SCHEMA",
    "TABLES",
    "EventIndex",
    "IndexStatistics",
    "Statement",
    "apply",
    "connect",
    "log_files",
    "network_detail",
    "read_records",
    "rebuild",
    "statements",
]
