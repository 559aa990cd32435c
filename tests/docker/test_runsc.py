"""Sessions in gVisor sandboxes (`sandbox.runtime: runsc`, issue 6).

`make test` registers runsc with the engine (scripts/ensure-docker --runsc); elsewhere these skip
when the engine does not list the runtime.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.service import (
    RunningService,
    remove_sensor_containers,
    runsc_registered,
    service_config,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

# Touches 8 MiB at a time until something stops it: under gVisor the host's OOM killer ends the
# whole sandbox (the Sentry is the cgroup's process), and the exec's stream never ends by itself.
MEMORY_BOMB = (
    "python3 -c 'chunks = []\n"
    "while True:\n"
    "    chunk = bytearray(8 << 20)\n"
    "    chunk[::4096] = bytes(len(chunk) // 4096)\n"
    "    chunks.append(chunk)'"
)


@pytest.fixture(scope="module")
def gvisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    if not runsc_registered():
        pytest.skip("runtime runsc is not registered (scripts/ensure-docker --runsc)")
    config = service_config(
        tmp_path_factory.mktemp("runsc") / "var",
        pool={"size": 1},
        sandbox={"runtime": "runsc", "memory_mb": 128, "disk_check_interval_seconds": 0.5},
    )
    running = RunningService(config).start()
    try:
        running.wait_warm(120)
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def test_a_login_gets_a_gvisor_shell(gvisor: RunningService) -> None:
    # Several processes at once: gVisor's host tasks must fit the pids cgroup (hardening.py).
    proc = gvisor.ssh(
        "uname -r; for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo done-$((6*7))"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().split()
    assert lines[0] == "4.4.0"  # gVisor's own kernel version (docs/fingerprinting.md)
    assert lines[-1] == "done-42"
    (allocated,) = [
        event
        for event in gvisor.events("sandbox.allocated")
        if event["session"] == gvisor.events("session.exec")[-1]["session"]
    ]
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .HostConfig}}", allocated["container_id"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    host = json.loads(inspected)
    assert host["Runtime"] == "runsc"
    assert host["PidsLimit"] == 64 + 12 * 100


def test_a_sandbox_killed_under_its_session_ends_the_session(gvisor: RunningService) -> None:
    gvisor.wait_warm(120)
    proc = gvisor.ssh(f"echo before-bomb; {MEMORY_BOMB}; echo never", timeout=90)
    assert b"before-bomb" in proc.stdout
    assert b"never" not in proc.stdout

    async def events() -> None:
        async with asyncio.timeout(30):
            while not gvisor.events("session.closed", session=died["session"]):
                await asyncio.sleep(0.2)

    async def death() -> None:
        # The client may see the channel end before the watcher writes the event (a loaded CI
        # engine once took longer than the ssh's exit): the event must come, not be first.
        async with asyncio.timeout(30):
            while not gvisor.events("sandbox.died"):
                await asyncio.sleep(0.2)

    asyncio.run(death())
    (died,) = gvisor.events("sandbox.died")
    # Killed by the host's OOM killer: the engine flags it, or at least reports the SIGKILL.
    assert died["oom_killed"] is True or died["exit_code"] == 137, died
    asyncio.run(events())
    assert proc.returncode == 255  # as for a machine that went away
    assert not gvisor.events("sandbox.error", session=died["session"])  # reported once, as died
    (released,) = gvisor.events("sandbox.released", session=died["session"])
    assert released["container_id"] == died["container_id"]
    # The recording holds what came before the cut.
    (execed,) = gvisor.events("session.exec", session=died["session"])
    assert "before-bomb" in Path(execed["recording"]).read_text()
