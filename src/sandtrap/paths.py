"""The data layout: every path SandTrap keeps under `storage.data_dir`, named in one place.

Pure: it builds paths and never touches the disk; whoever writes a file creates its directory.
What goes into the files is their owners' (store/, recording/, sandbox/forensics, gate/, health).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

EVENTS_LOG = "events.jsonl"
GATE_LOG = "gate.jsonl"


def cast_file(recordings: Path, session_id: str, channel: int, moment: datetime) -> Path:
    """recordings/YYYY/MM/DD/<session>-<channel>.cast (our identifiers only, never input)."""
    return recordings / f"{moment:%Y/%m/%d}" / f"{session_id}-{channel}.cast"


@dataclass(frozen=True)
class DataLayout:
    """The paths under one data directory (docs/operations.md describes each).

    `DataLayout(config.storage.data_dir)`; `root` is used as given (relative stays relative).
    """

    root: Path

    @property
    def keys(self) -> Path:
        """Host keys, generated on first start and reused."""
        return self.root / "keys"

    @property
    def recordings(self) -> Path:
        """Asciicast files, one per channel, under YYYY/MM/DD/ (see `recording`)."""
        return self.root / "recordings"

    def recording(self, session_id: str, channel: int, moment: datetime) -> Path:
        """The cast file of one channel of a session that started it at `moment`."""
        return cast_file(self.recordings, session_id, channel, moment)

    @property
    def log(self) -> Path:
        """The JSON-lines logs and their rotated files."""
        return self.root / "log"

    @property
    def events_log(self) -> Path:
        """The event log, the source of truth (rotated to events.jsonl.1 ... .N)."""
        return self.log / EVENTS_LOG

    @property
    def gate_log(self) -> Path:
        """The Engine API gate's `gate.refused` events."""
        return self.log / GATE_LOG

    @property
    def index_db(self) -> Path:
        """The SQLite index of the event log (derived; `sandtrap index rebuild` recreates it)."""
        return self.root / "sandtrap.db"

    @property
    def artifacts(self) -> Path:
        """Captured files, content-addressed (see `artifact`)."""
        return self.root / "artifacts"

    def artifact(self, sha256: str) -> Path:
        """Where the file with this (hex) digest is stored."""
        return self.artifacts / sha256

    @property
    def run(self) -> Path:
        """Runtime files of the running service; nothing to back up."""
        return self.root / "run"

    @property
    def gate_socket(self) -> Path:
        """The gate's socket when the service starts it (`sandbox.gate: auto`)."""
        return self.run / "gate.sock"

    @property
    def status_file(self) -> Path:
        """The service's status, rewritten every few seconds for `sandtrap health`."""
        return self.run / "status.json"

    # --- outputs (issue 17) ---------------------------------------------------------------------

    @property
    def spool(self) -> Path:
        """What remote outputs could not send yet, one file per output (replayed when they can)."""
        return self.root / "spool"

    def spool_file(self, output: str) -> Path:
        """The spool of one output (`output` is a configured name, never input)."""
        return self.spool / f"{output}.jsonl"

    @property
    def cowrie_uuid(self) -> Path:
        """The `uuid` the cowrie output writes when none is configured, kept across restarts."""
        return self.root / "cowrie.uuid"


__all__ = ["EVENTS_LOG", "GATE_LOG", "DataLayout", "cast_file"]
