"""A real SandTrap service in a background thread, for tests that drive it with real clients."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sandtrap.config import Config, parse_config
from sandtrap.testing import OPENSSH_CLIENT_OPTIONS, ThreadedService
from tests.conftest import IMAGE

SSH_OPTS = OPENSSH_CLIENT_OPTIONS
# SANDTRAP_TEST_AGENT=1 runs every service test with the in-sandbox agent (issue 15; off by
# default, as shipped).
AGENT_BY_DEFAULT = os.environ.get("SANDTRAP_TEST_AGENT") == "1"


def service_config(data_dir: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "sensor": f"test-{uuid.uuid4().hex[:10]}",
        "ssh": {"listen": ["127.0.0.1:0"], "auth_failure_delay_seconds": 0.1},
        "auth": {
            "credentials": [
                {"username": "root", "password": "123456"},
                {"username": "oracle", "password": "*"},
            ]
        },
        "pool": {"size": 2, "max_sandboxes": 6, "allocate_timeout_seconds": 20},
        # `none` unless a test asks for the sinkhole (tests/docker/test_sinkhole.py): the
        # other tests are about other things, and a sinkhole per service costs a container.
        "sandbox": {"image": IMAGE, "network": "none", "agent": AGENT_BY_DEFAULT},
        "storage": {"data_dir": str(data_dir)},
    }
    for key, value in sections.items():
        # List sections (outputs, alerts) replace; mapping sections merge.
        data[key] = value if isinstance(value, list) else {**data.get(key, {}), **value}
    return parse_config(data)


class RunningService(ThreadedService):
    """The service in a thread, with helpers to read its events and log in with OpenSSH."""

    def events(
        self, eventid: str | None = None, session: str | None = None
    ) -> list[dict[str, Any]]:
        path = self.config.storage.data_dir / "log" / "events.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [
            r
            for r in records
            if (eventid is None or r["eventid"] == eventid)
            and (session is None or r.get("session") == session)
        ]

    def ssh(
        self,
        command: str | None,
        *,
        user: str = "root",
        password: str = "123456",  # noqa: S107 - the honeypot's bait password
        stdin: bytes | None = None,
        extra: list[str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["sshpass", "-p", password, "ssh", "-p", str(self.port), *SSH_OPTS, *(extra or [])]
        argv += [f"{user}@127.0.0.1"]
        if command is not None:
            argv.append(command)
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)


def remove_sensor_containers(sensor: str) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=sandtrap.sensor={sensor}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    # And its sinkhole network, when it had one (the network default is `sinkhole`).
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=sandtrap.sensor={sensor}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True, check=False)


def free_subnet() -> str:
    """A private /16 for a sinkhole network that no network on the engine overlaps (other test
    modules, and other sensors on a shared engine, have theirs)."""
    names = subprocess.run(
        ["docker", "network", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    taken: list[ipaddress.IPv4Network] = []
    if names:
        out = subprocess.run(
            ["docker", "network", "inspect", "-f",
             "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *names],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        for item in out.split():
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(item))
    # Below 10.128.0.0/9, where `sandbox.sinkhole.subnet: auto` picks (sandboxconfig.py), so
    # a test's network never collides with a default-config service started later.
    choices = [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(64, 128)]
    free = [net for net in choices if not any(net.overlaps(other) for other in taken)]
    return str(random.choice(free))


def dockerd_pid() -> int | None:
    """The running dockerd's pid, None when no dockerd runs (the engine-outage tests stop it)."""
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False)
    pids = out.stdout.split()
    return int(pids[0]) if pids else None


@asynccontextmanager
async def dockerd_restart() -> AsyncIterator[None]:
    """dockerd stops (taking its containers down) inside the block and is started again after."""
    pid = dockerd_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(60):
            while dockerd_pid() is not None:
                await asyncio.sleep(0.2)
        yield
    finally:
        script = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker"
        restart = await asyncio.create_subprocess_exec(str(script))
        assert await asyncio.wait_for(restart.wait(), 120) == 0


def runsc_registered() -> bool:
    """Whether the engine lists the gVisor runtime (scripts/ensure-docker --runsc).

    False, not an error, without a docker CLI or an answering engine: it runs at collection.
    """
    try:
        out = subprocess.run(
            ["docker", "info", "--format", "{{json .Runtimes}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return '"runsc"' in out
