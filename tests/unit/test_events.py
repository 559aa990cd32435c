"""Event serialisation and the JSON-lines log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sandtrap.events import (
    CATALOGUE,
    AuthFailed,
    Peer,
    SessionConnect,
    SessionRefused,
    record_keys,
    to_json_line,
    to_record,
)
from sandtrap.store.jsonl import EventLog

PEER = Peer("abc123abc123", "203.0.113.7", 50000, 22)


def test_record_has_common_fields_first() -> None:
    event = SessionConnect(
        peer=PEER,
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    )
    record = to_record(event, "sensor-1")
    assert list(record)[:3] == ["timestamp", "eventid", "sensor"]
    assert record["timestamp"] == "2026-01-02T03:04:05.000006Z"
    assert record["eventid"] == "session.connect"
    assert record["src_ip"] == "203.0.113.7"


def test_refusal_counts_serialise_with_the_common_keys_once() -> None:
    overflow = SessionRefused(
        src_ip=None,
        src_port=None,
        dst_port=22,
        reason="max_startups",
        limit=100,
        count=7655,
        first_timestamp="2026-01-02T03:04:05.000006Z",
        last_timestamp="2026-01-02T03:04:15.000006Z",
    )
    record = json.loads(to_json_line(overflow, "sensor-1"))
    assert list(record) == record_keys(SessionRefused)
    assert list(record)[3:7] == ["session", "src_ip", "src_port", "dst_port"]
    assert (record["src_ip"], record["src_port"], record["count"]) == (None, None, 7655)


def test_hostile_strings_stay_on_one_line() -> None:
    nasty = 'root\n{"eventid":"fake"}\r\x1b[2J\u2028\u0085\x00\udcff'
    line = to_json_line(
        AuthFailed(peer=PEER, username=nasty, method="password", password=nasty), "s"
    )
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.isascii()
    assert "\x1b" not in line and "\u2028" not in line
    decoded = json.loads(line)
    assert decoded["username"] == nasty
    assert decoded["eventid"] == "auth.failed"


def test_catalogue_ids_are_unique_and_dotted() -> None:
    assert len(CATALOGUE) == len({cls.eventid for cls in CATALOGUE.values()})
    assert all("." in eventid for eventid in CATALOGUE)


def test_event_log_appends_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.jsonl"
    log = EventLog(path, "s", max_bytes=400, backups=2)
    seen = []
    log.subscribe(seen.append)
    for i in range(12):
        log.emit(SessionConnect(peer=Peer(f"{i:012x}", "127.0.0.1", 1, 22)))
    log.close()
    assert len(seen) == 12
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    lines = []
    for name in ("events.jsonl.2", "events.jsonl.1", "events.jsonl"):
        lines += (path.parent / name).read_text().splitlines()
    assert all(json.loads(line)["eventid"] == "session.connect" for line in lines)
    assert all(p.stat().st_size <= 400 for p in path.parent.iterdir())
    # The newest events are kept; the oldest ones rotated out beyond `backups`.
    assert json.loads(lines[-1])["session"] == f"{11:012x}"


def test_event_log_survives_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = EventLog(blocker / "events.jsonl", "s", max_bytes=1000, backups=1)
    log.emit(SessionConnect(peer=PEER))
    assert log.write_errors == 1


def test_listener_failure_does_not_break_emit(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.jsonl", "s", max_bytes=10_000, backups=1)

    def broken(_event: object) -> None:
        raise RuntimeError("boom")

    log.subscribe(broken)
    log.emit(SessionConnect(peer=PEER))
    log.close()
    assert log.written == 1


def test_docs_list_exactly_the_catalogue() -> None:
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    documented = re.findall(r"^## `([a-z_.]+)`$", docs, flags=re.MULTILINE)
    assert sorted(documented) == sorted(CATALOGUE)
    sections = re.split(r"^## ", docs, flags=re.MULTILINE)
    for section in sections[1:]:
        eventid = section.split("`")[1]
        for key in record_keys(CATALOGUE[eventid]):
            assert f'"{key}"' in section, (eventid, key)
