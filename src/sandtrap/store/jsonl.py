"""The append-only JSON-lines event log, rotated by size; the source of truth for every event.

Owns the file and its rotation. Each event is one `write()` of one complete line to a file opened
with O_APPEND, so lines are never interleaved or torn by a crash mid-event. Writes are small and
go to the page cache, so they are done inline on the event loop (no queue to lose on a crash).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sandtrap.config import StorageConfig
from sandtrap.events import Event, to_json_line
from sandtrap.paths import DataLayout

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


def open_event_log(storage: StorageConfig, sensor: str, path: Path | None = None) -> EventLog:
    """A JSON-lines log rotated as the configuration says (no I/O yet).

    `path` defaults to the data directory's event log (`DataLayout.events_log`).
    """
    path = path or DataLayout(storage.data_dir).events_log
    return EventLog(path, sensor, storage.log_max_bytes, storage.log_backups)


class EventLog:
    """Writes events to `path` (rotating to path.1 ... path.N) and passes them to listeners.

    `emit` never raises: a failed write is logged and counted in `write_errors`, and the service
    keeps running.
    """

    def __init__(self, path: Path, sensor: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.sensor = sensor
        self.max_bytes = max_bytes
        self.backups = backups
        self.write_errors = 0
        self.written = 0
        self._fd: int | None = None
        self._size = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def emit(self, event: Event) -> None:
        data = to_json_line(event, self.sensor).encode("ascii")
        try:
            fd = self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
                fd = self._open()
            os.write(fd, data)
            self._size += len(data)
            self.written += 1
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot write event %s to %s: %s", event.eventid, self.path, exc)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.eventid)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
