"""Looking like a server from the inside (issue 15), against the real engine and target image.

What a login sees that container- and honeypot-detection tools read: cgroups, PID 1, daemons,
host keys, utmp/wtmp, /proc's view of memory and CPUs.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IMAGE
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


def _docker_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", "sandtrap.test=realism", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_init_runs_a_command_and_exits_with_its_status() -> None:
    assert _docker_run(IMAGE, "sh", "-c", "exit 7").returncode == 7
    missing = _docker_run(IMAGE, "/no/such/command")
    assert missing.returncode == 127 and "/no/such/command" in missing.stderr
    killed = _docker_run(IMAGE, "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + 9
    # PID 1 is still /sbin/init, the command its child; orphans are reaped meanwhile.
    tree = _docker_run(IMAGE, "sh", "-c", "(sleep 0.1 &); sleep 0.3; ps -o pid=,ppid=,stat=,args=")
    assert tree.returncode == 0, tree.stderr
    rows = [line.split(None, 3) for line in tree.stdout.splitlines()]
    assert rows[0][0] == "1" and rows[0][3].startswith("/sbin/init sh -c")
    assert all(stat[0] != "Z" for _, _, stat, _ in rows), tree.stdout


def test_init_passes_a_stop_to_its_command() -> None:
    name = f"realism-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--label", "sandtrap.test=realism",
         "--network", "none", IMAGE, "sleep", "600"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    try:
        began = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True, check=True)
        assert time.monotonic() - began < 10  # not the 20 s kill: sleep got the SIGTERM
        code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert code == str(128 + 15)
    finally:
        subprocess.run(["docker", "rm", "-f", started.stdout.strip()], capture_output=True)


def test_init_without_a_command_ignores_signals_from_inside() -> None:
    done = _docker_run(
        "--entrypoint", "/bin/sh", IMAGE, "-c", "/sbin/init & sleep 0.3; kill -TERM $!; "
        "sleep 0.3; kill -0 $! && echo still-running",
    )  # fmt: skip
    assert "still-running" in done.stdout, done.stderr
