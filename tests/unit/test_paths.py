"""The data layout: where each file lives, and docs/operations.md describing every path."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandtrap.config import Config
from sandtrap.paths import DataLayout

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_layout_paths_under_the_data_dir() -> None:
    layout = DataLayout(Config().storage.data_dir)
    root = Path("./var")
    assert layout.root == root
    assert layout.keys == root / "keys"
    assert layout.recordings == root / "recordings"
    moment = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    assert layout.recording("abc123", 2, moment) == root / "recordings/2026/03/04/abc123-2.cast"
    assert layout.log == root / "log"
    assert layout.events_log == root / "log/events.jsonl"
    assert layout.gate_log == root / "log/gate.jsonl"
    assert layout.index_db == root / "sandtrap.db"
    assert layout.artifacts == root / "artifacts"
    assert layout.artifact("ab" * 32) == root / "artifacts" / ("ab" * 32)
    assert layout.run == root / "run"
    assert layout.gate_socket == root / "run/gate.sock"
    assert layout.status_file == root / "run/status.json"
    assert layout.spool == root / "spool"
    assert layout.spool_file("chat") == root / "spool/chat.jsonl"
    assert layout.cowrie_uuid == root / "cowrie.uuid"


def test_layout_is_frozen() -> None:
    layout = DataLayout(Path("/srv/sandtrap"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.root = Path("/elsewhere")  # type: ignore[misc]


def _layout_paths(layout: DataLayout) -> dict[str, Path]:
    moment = datetime(2026, 3, 4, tzinfo=UTC)
    found = {
        name: getattr(layout, name)
        for name, member in vars(DataLayout).items()
        if isinstance(member, property)
    }
    found["recording"] = layout.recording("SESSION", 0, moment)
    found["artifact"] = layout.artifact("SHA256")
    return found


def test_operations_doc_names_every_path() -> None:
    """docs/operations.md's data table lists every file and directory of the layout."""
    text = DOCS.read_text(encoding="utf-8")
    for name, path in _layout_paths(DataLayout(Path("var"))).items():
        shown = path.as_posix()
        for ours, documented in (
            ("2026/03/04", "YYYY/MM/DD"),
            ("SESSION-0", "<session>-<channel>"),
            ("SHA256", "<sha256>"),
        ):
            shown = shown.replace(ours, documented)
        # Files under var/run/ are named in the run/ row, not a row of their own.
        if path.parent == Path("var/run"):
            assert f"`{path.name}`" in text, f"docs/operations.md does not mention {name}"
            continue
        if path.suffix == "" and name not in ("artifact",):
            shown += "/"
        assert f"`{shown}" in text, f"docs/operations.md does not describe {name} ({shown})"
