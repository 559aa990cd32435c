"""Command-line rendering helpers: sizes, ages and sandbox records (no terminal involved)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from rich.console import Console

from sandtrap.analysis.render import age, human_size, sandbox_record, sandboxes_table
from sandtrap.sandbox.inventory import SandboxRow


def test_human_size_binary_units() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024**2) == "5.0 MiB"
    assert human_size(3 * 1024**4) == "3072.0 GiB"


def test_age_largest_whole_unit() -> None:
    now = datetime(2026, 3, 4, 12, tzinfo=UTC)
    assert age(None, now) == "?"
    assert age(now - timedelta(seconds=59), now) == "59s"
    assert age(now - timedelta(minutes=5, seconds=3), now) == "5m"
    assert age(now - timedelta(hours=3), now) == "3h"
    assert age(now - timedelta(days=2, hours=23), now) == "2d"
    assert age(now + timedelta(seconds=30), now) == "0s"  # clock skew never goes negative


def test_sandbox_record_and_table_escape_attacker_text() -> None:
    created = datetime(2026, 3, 4, 11, tzinfo=UTC)
    row = SandboxRow(
        container_id="f" * 64,
        name="sandtrap-s-abc-10.0.0.1",
        role="session",
        session_id="abc",
        src_ip="10.0.0.1",
        hostname="web\x1b[31m01",
        image="sandtrap/debian:latest",
        state="exited",
        created=created,
        size_bytes=2048,
    )
    assert sandbox_record(row)["created"] == "2026-03-04T11:00:00+00:00"
    assert sandbox_record(dataclasses.replace(row, created=None))["created"] is None
    console = Console(width=200, record=True)
    console.print(sandboxes_table([row], "sensor-1", created + timedelta(hours=1)))
    text = console.export_text()
    assert "\x1b" not in text
    assert "f" * 12 in text and "1h" in text and "2.0 KiB" in text
