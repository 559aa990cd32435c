"""The SQLite index: event -> rows, one writer with a bounded queue, rebuild, analyst queries."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandtrap import events as ev
from sandtrap.analysis.export import Bundle, write_bundle
from sandtrap.analysis.query import (
    QueryError,
    list_sessions,
    open_index,
    parse_since,
    resolve_session,
    session_detail,
    stats,
)
from sandtrap.analysis.replay import Cast, play, read_cast, schedule
from sandtrap.store.index import EventIndex, rebuild
from sandtrap.store.jsonl import EventLog

SID = "0123456789ab"


def _story() -> list[ev.Event]:
    peer = ev.Peer(SID, "203.0.113.9", 4000, 22)
    return [
        ev.SessionConnect(peer=peer, dst_ip="192.0.2.1"),
        ev.ClientKex(
            peer=peer,
            client_version="SSH-2.0-Go",
            hassh="h",
            hassh_algorithms="a",
            kex_algs=[],
            enc_algs=[],
            mac_algs=[],
            comp_algs=[],
        ),
        ev.AuthFailed(peer=peer, username="admin", method="password", password="admin"),
        ev.AuthSuccess(peer=peer, username="root", method="password", password="123456"),
        ev.SandboxAllocated(peer=peer, container_id="c" * 64, hostname="web", image="i", wait_ms=1),
        ev.SessionShell(
            peer=peer, channel=0, term="xterm", width=80, height=24, recording="r.cast"
        ),
        ev.SessionCommand(peer=peer, channel=0, input="uname -a"),
        ev.SessionCommand(peer=peer, channel=0, input="wget http://x/\x1b[31m"),
        ev.ChannelClosed(peer=peer, channel=0, exit_status=0, bytes_in=9, bytes_out=99, duration=1),
        ev.SessionExec(peer=peer, channel=1, input="uname -a"),
        ev.SandboxDiff(
            peer=peer, container_id="c" * 64, changes=[{"path": "/tmp/x", "kind": "added"}], total=1
        ),
        ev.SandboxArtifact(
            peer=peer, container_id="c" * 64, path="/tmp/x", size=1, sha256="f" * 64, artifact="a"
        ),
        ev.SessionClosed(
            peer=peer,
            duration=3.5,
            reason="closed",
            username="root",
            bytes_in=9,
            bytes_out=99,
            exit_status=0,
        ),
    ]


def _dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    tables = ("sessions", "auth_attempts", "channels", "commands", "diffs", "artifacts")
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}  # noqa: S608
    finally:
        db.close()


async def test_live_index_equals_rebuild_from_rotated_log(tmp_path: Path) -> None:
    log_path = tmp_path / "log" / "events.jsonl"
    log = EventLog(log_path, "sensor-1", max_bytes=1500, backups=20)
    index = EventIndex(tmp_path / "sandtrap.db", "sensor-1")
    log.subscribe(index.offer)
    writer = asyncio.create_task(index.run())
    for event in _story():
        log.emit(event)
    index.stop()
    await writer
    log.close()
    assert len(list(log_path.parent.iterdir())) > 2  # rotated
    assert index.statistics().written == len(_story())
    live = _dump(tmp_path / "sandtrap.db")
    assert live["sessions"][0][:5] == (SID, "sensor-1", "203.0.113.9", 4000, 22)
    assert rebuild(tmp_path / "sandtrap.db", log_path) == len(_story())
    assert _dump(tmp_path / "sandtrap.db") == live

    db = open_index(tmp_path / "sandtrap.db", log_path)
    rows = list_sessions(db, since=None, ip="203.0.113.9", user="root")
    assert [(r["session"], r["commands"], r["auth_attempts"]) for r in rows] == [(SID, 3, 2)]
    assert list_sessions(db, user="nobody") == []
    assert resolve_session(db, SID[:4]) == SID
    with pytest.raises(QueryError):
        resolve_session(db, "zz'")
    detail = session_detail(db, SID)
    assert detail["session"]["password"] == "123456"
    assert detail["session"]["exit_status"] == 0
    assert [c["source"] for c in detail["commands"]] == ["shell", "shell", "exec"]
    assert detail["channels"][0]["recording"] == "r.cast"
    assert detail["diffs"] == [{"path": "/tmp/x", "kind": "added"}]
    top = stats(db, since=None)
    assert top.usernames == [("admin", 1), ("root", 1)]
    assert top.commands[0] == ("uname -a", 2)
    assert top.src_ips == [("203.0.113.9", 1)]


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    index = EventIndex(tmp_path / "db", "s", queue_size=2)
    for event in _story()[:5]:
        index.offer(event)
    assert index.statistics().dropped == 3
    assert index.statistics().queued == 2


def test_open_index_builds_from_the_log_when_missing(tmp_path: Path) -> None:
    log_path = tmp_path / "events.jsonl"
    log_path.write_text("".join(ev.to_json_line(e, "s") for e in _story()) + "not json\n")
    db = open_index(tmp_path / "new.db", log_path)
    assert [r["session"] for r in list_sessions(db)] == [SID]


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("1h", now) == "2026-01-02T11:00:00.000000Z"
    assert parse_since("2d", now) == "2025-12-31T12:00:00.000000Z"
    assert parse_since("2026-01-01T08:00", now) == "2026-01-01T08:00:00.000000Z"
    with pytest.raises(QueryError):
        parse_since("yesterday", now)


def test_replay_caps_pauses_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "x.cast"
    path.write_text(
        '{"version": 2, "width": 80, "height": 24}\n'
        '[0.5, "o", "a"]\n[0.6, "i", "k"]\n[3600, "o", "b\\u20ac"]\n[3601, "o", "c'
    )
    cast = read_cast(path)
    assert len(cast.events) == 3  # the cut last line is ignored
    assert list(schedule(cast.events, speed=2, idle_limit=1)) == [(0.25, "a"), (0.5, "b€")]
    slept: list[float] = []
    out = io.BytesIO()
    play(cast, out, speed=1, idle_limit=None, sleep=slept.append)
    assert out.getvalue() == "ab€".encode()
    assert slept == [0.5, 2.0]
    with pytest.raises(ValueError, match="speed"):
        play(Cast({}, []), out, speed=0)


def test_bundle_names_are_ours_and_manifest_hashes_members(tmp_path: Path) -> None:
    bundle = Bundle(SID)
    bundle.members["files/" + "a" * 64] = b"payload"
    bundle.members["files.json"] = json.dumps([{"path": "../../etc/passwd"}]).encode()
    output = tmp_path / "b.tar.gz"
    manifest = write_bundle(bundle, output, "s")
    with tarfile.open(output) as archive:
        names = archive.getnames()
    assert sorted(names) == sorted(
        f"{SID}/{n}" for n in ("manifest.json", "files.json", "files/" + "a" * 64)
    )
    assert set(manifest["members"]) == {"files.json", "files/" + "a" * 64}


def test_network_events_are_indexed_and_shown(tmp_path: Path) -> None:
    """The sinkhole's events (issue 16) become the session's `network` rows and its detail."""
    from sandtrap.analysis.render import session_view
    from sandtrap.events.network import NetworkDns, NetworkFlood, NetworkHttp
    from sandtrap.store.index import statements

    common = {"session": SID, "src_ip": "203.0.113.9", "container_id": "c" * 64,
              "sandbox_ip": "10.118.0.2"}  # fmt: skip
    log_path = tmp_path / "log" / "events.jsonl"
    log = EventLog(log_path, "sensor-1", max_bytes=100_000, backups=1)
    for event in [
        *_story(),
        NetworkDns(**common, dst_ip="10.118.0.1", dst_port=53, query="c2.example", qtype="A"),
        NetworkHttp(
            **common,
            dst_ip="203.0.113.7",
            dst_port=80,
            method="GET",
            host="h",
            url="http://203.0.113.7/bins.sh",
            user_agent="Wget",
            headers=[],
            body_bytes=0,
            body="",
        ),
        NetworkFlood(**common, dst_ip="", dst_port=0, kind="connect", count=9, seconds=60.0),
        NetworkDns(
            session=None,
            src_ip=None,
            container_id=None,
            sandbox_ip="10.118.0.9",
            dst_ip="10.118.0.1",
            dst_port=53,
            query="pool.example",
            qtype="A",
        ),
    ]:
        log.emit(event)
    log.close()
    assert rebuild(tmp_path / "sandtrap.db", log_path) == len(_story()) + 4
    db = open_index(tmp_path / "sandtrap.db", log_path)
    rows = session_detail(db, SID)["network"]
    assert [r["detail"] for r in rows] == [
        "A c2.example", "GET http://203.0.113.7/bins.sh", "9 connect records over 60.0s",
    ]  # fmt: skip
    assert rows[1]["dst_ip"] == "203.0.113.7" and rows[1]["dst_port"] == 80
    # A record of no session gets its raw row in `events` (the console's), none in `network`.
    unowned = statements({"eventid": "network.dns", "session": None})
    assert [sql.split("(")[0] for sql, _ in unowned] == ["INSERT INTO events "]
    assert session_view(session_detail(db, SID)) is not None
