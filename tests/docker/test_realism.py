"""Looking like a server from the inside (issue 15), against the real engine and target image.

What a login sees that container- and honeypot-detection tools read: cgroups, PID 1, daemons,
host keys, utmp/wtmp, /proc's view of memory and CPUs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.service import remove_sensor_containers
from tests.docker.test_pool import Sink, info, make_config, running_pool
from tests.pool_battery import sh

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture
def sensor() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_sensor_containers(name)


async def test_cgroups_name_no_container(sensor: str, tmp_path: Path) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1})
    async with running_pool(config, Sink()) as pool, asyncio.timeout(90):
        sandbox = await pool.allocate(info())
        for path in ("/proc/1/cgroup", "/proc/self/cgroup"):
            code, out = await sh(sandbox, f"cat {path}")
            assert code == 0 and out.strip(), out
            # Every controller at the namespace's root: no /docker/<id>, no host path.
            assert {line.split(":", 2)[2] for line in out.splitlines()} == {"/"}, out
        # The namespace is the sandbox's own (the host's is not the same inode).
        code, out = await sh(sandbox, "readlink /proc/self/ns/cgroup")
        assert out.strip() != Path("/proc/self/ns/cgroup").readlink().as_posix(), out
