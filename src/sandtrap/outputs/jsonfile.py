"""The `cowrie` output's sink: Cowrie's JSON lines appended to a file (T-Pot's `cowrie.json`).

Owns the file: opened with O_APPEND, one write per batch of complete lines (in a worker thread,
so a slow disk never holds the event loop), reopened when logrotate moved it away. The mapping
is cowrie.py's; the queue and retries are the runner's.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid as uuidlib
from pathlib import Path

from sandtrap.events.base import to_record
from sandtrap.outputs.base import Alert, Item, OutputError, Record
from sandtrap.outputs.cowrie import CowrieMapper


def sensor_uuid(path: Path) -> str:
    """The uuid kept in `path`, created (uuid1, as Cowrie does) the first time."""
    try:
        text = path.read_text(encoding="ascii").strip()
        return str(uuidlib.UUID(text))
    except (OSError, ValueError):
        value = str(uuidlib.uuid1())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n", encoding="ascii")
        except OSError:
            pass
        return value


class CowrieFileSink:
    """Appends Cowrie records to `path`; alerts are not Cowrie events and are left out."""

    batch_max_events = 500
    batch_max_seconds = 0.0
    timeout_seconds = 30.0

    def __init__(self, path: Path, sensor: str, mapper: CowrieMapper) -> None:
        self.path = path
        self.sensor = sensor
        self.mapper = mapper
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def format(self, item: Item) -> list[Record]:
        if isinstance(item, Alert):
            return []
        return self.mapper.map(to_record(item, self.sensor))

    async def send(self, records: list[Record]) -> None:
        data = "".join(
            json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
            for record in records
        ).encode("ascii")
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            self._close()
            raise OutputError(f"cannot write {self.path}: {exc}") from None

    def _write(self, data: bytes) -> None:
        fd = self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _open(self) -> int:
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                moved = (st.st_dev, st.st_ino) != self._inode
            except FileNotFoundError:
                moved = True
            if not moved:
                return self._fd
            self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0o644: T-Pot's Logstash and ewsposter read it as another user (docs/deployment.md).
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        st = os.fstat(self._fd)
        self._inode = (st.st_dev, st.st_ino)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def close(self) -> None:
        self._close()


__all__ = ["CowrieFileSink", "sensor_uuid"]
