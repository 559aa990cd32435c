"""The Docker engine restarted under a live session (issue 6): the session ends cleanly with its
events, its recording is complete up to the cut, and the pool recovers for the next login."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import asyncssh
import pytest

from tests.docker.service import (
    RunningService,
    dockerd_pid,
    dockerd_restart,
    remove_sensor_containers,
    service_config,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]


async def _live_session_through_a_restart(port: int) -> bytes:
    """A PTY shell that has printed a marker when the engine goes away; returns what it saw."""
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", password="123456", known_hosts=None, client_keys=None
    ) as conn:
        process = await conn.create_process(term_type="xterm", encoding=None)
        process.stdin.write(b"echo before-$((6*7))-cut\n")
        seen = b""
        async with asyncio.timeout(30):
            while b"before-42-cut" not in seen:
                seen += await process.stdout.read(4096)
        async with dockerd_restart(), asyncio.timeout(60):
            # The engine took the sandbox down with it: the shell's channel must end.
            while chunk := await process.stdout.read(4096):
                seen += chunk
            await process.wait_closed()
    return seen


def test_engine_restart_under_a_live_session(tmp_path: Path) -> None:
    if os.geteuid() != 0 or dockerd_pid() is None:
        pytest.skip("needs root and a dockerd this test may restart (as in make test)")
    config = service_config(tmp_path / "var", pool={"size": 1, "health_interval_seconds": 0.5})
    running = RunningService(config).start()
    try:
        running.wait_warm()
        seen = asyncio.run(_live_session_through_a_restart(running.port))
        assert b"before-42-cut" in seen

        async def closed() -> None:
            async with asyncio.timeout(60):
                while not running.events("session.closed"):
                    await asyncio.sleep(0.2)

        asyncio.run(closed())
        (shell,) = running.events("session.shell")
        (close,) = running.events("session.closed", session=shell["session"])
        assert close["duration"] > 0
        # The recording is valid JSON lines up to the cut and holds what the client saw.
        lines = Path(shell["recording"]).read_text().splitlines()
        header, frames = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
        assert header["version"] == 2
        assert "before-42-cut" in "".join(f[2] for f in frames if f[1] == "o")
        assert running.events("sandbox.error")  # the outage was reported, not swallowed
        # The pool recovers: a new login gets a working shell from a fresh sandbox.
        running.wait_warm(180)
        proc = running.ssh("echo after-restart")
        assert proc.stdout == b"after-restart\n", proc.stderr
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)
