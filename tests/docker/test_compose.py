"""docker-compose.yml end to end: the gate holds the socket, the SSH front does not, and evidence
survives `down` (stopped session sandboxes on the engine, recordings and events on the volume)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.service import SSH_OPTS, remove_sensor_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

ROOT = Path(__file__).resolve().parents[2]
APP_IMAGE = "sandtrap/sandtrap:latest"


def _compose_tools() -> list[list[str]]:
    tools = []
    if shutil.which("docker-compose"):
        tools.append(["docker-compose"])
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        tools.append(["docker", "compose"])
    return tools or [["docker-compose"]]  # fails below with a clear message when missing


@pytest.fixture(scope="module")
def app_image() -> str:
    """The SandTrap image from this tree (cached layers make a rebuild take seconds)."""
    subprocess.run(
        [str(ROOT / "scripts" / "build_images.sh"), "--app-only", "--tag", APP_IMAGE],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=900,
    )
    return APP_IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    def __init__(self, tool: list[str], image: str) -> None:
        self.tool = tool
        self.project = f"sttest{uuid.uuid4().hex[:8]}"
        self.sensor = f"compose-{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.env = {
            **os.environ,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "SANDTRAP_IMAGE": image,
            "SANDTRAP_BIND": "127.0.0.1",
            "SANDTRAP_PORT": str(self.port),
            "SANDTRAP_SENSOR": self.sensor,
        }

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [*self.tool, "-p", self.project, "-f", str(ROOT / "docker-compose.yml"), *args]
        return subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def ssh(self, command: str) -> subprocess.CompletedProcess[bytes]:
        argv = ["sshpass", "-p", "123456", "ssh", "-p", str(self.port), *SSH_OPTS]
        return subprocess.run(
            [*argv, "root@127.0.0.1", command], capture_output=True, timeout=60, check=False
        )

    def volume_file(self, path: str) -> str:
        """Read a file from the data volume (after `down`) with a throwaway container."""
        return subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "-v",
             f"{self.project}_data:/d:ro", "--entrypoint", "cat", APP_IMAGE, f"/d/{path}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip


@pytest.fixture(params=_compose_tools(), ids=lambda tool: " ".join(tool))
def deployment(request: pytest.FixtureRequest, app_image: str) -> Iterator[Deployment]:
    if not shutil.which(request.param[0]):
        pytest.fail("docker-compose is missing (make test-tools installs it)")
    deployed = Deployment(request.param, app_image)
    try:
        yield deployed
    finally:
        deployed.compose("down", "-v", "--remove-orphans")
        remove_sensor_containers(deployed.sensor)
        subprocess.run(
            ["docker", "volume", "rm", "-f", f"{deployed.project}_data",
             f"{deployed.project}_gate-run"],
            capture_output=True, check=False,
        )  # fmt: skip


def test_compose_up_login_down_keeps_evidence(deployment: Deployment) -> None:
    up = deployment.compose("up", "-d")
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 120
    while True:
        result = deployment.ssh("echo hello-compose; id -u; hostname")
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, (result.stderr, deployment.compose("logs").stdout[-3000:])
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == ["hello-compose", "0"]

    # The SSH front holds no Docker socket: not mounted, not in its environment, not on its disk.
    front = deployment.container("sandtrap")
    details = json.loads(subprocess.check_output(["docker", "inspect", front]))[0]
    sources = {m.get("Source", "") for m in details["Mounts"]}
    targets = {m["Destination"] for m in details["Mounts"]}
    assert not any("docker.sock" in item for item in sources | targets), details["Mounts"]
    assert not any("DOCKER" in item for item in details["Config"]["Env"])
    sockets = subprocess.run(
        ["docker", "exec", front, "find", "/", "-path", "/proc", "-prune", "-o", "-path", "/sys",
         "-prune", "-o", "-type", "s", "-print"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert "/var/run/docker.sock" not in sockets and "/run/docker.sock" not in sockets
    assert "/run/sandtrap/gate.sock" in sockets
    env = subprocess.check_output(["docker", "exec", front, "cat", "/proc/1/environ"])
    assert b"DOCKER_HOST" not in env
    gate = json.loads(subprocess.check_output(["docker", "inspect", deployment.container("gate")]))
    assert any(m["Destination"] == "/var/run/docker.sock" for m in gate[0]["Mounts"])
    # Both services are bounded in memory (no extra swap) and pids (issue 14).
    for host, memory, pids in ((gate[0]["HostConfig"], 512, 64),
                               (details["HostConfig"], 2048, 512)):  # fmt: skip
        assert host["Memory"] == memory * 1024 * 1024 == host["MemorySwap"]
        assert host["PidsLimit"] == pids
    health = subprocess.run(["docker", "exec", front, "sandtrap", "health"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert health.returncode == 0, health.stdout + health.stderr
    assert "engine: unix:///run/sandtrap/gate.sock" in health.stdout
    # The analyst commands in the front's container go through the gate as well.
    listed = subprocess.run(["docker", "exec", front, "sandtrap", "sandboxes", "list", "--json"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    roles = sorted(json.loads(line)["role"] for line in listed.stdout.splitlines())
    assert "session" in roles and "pool" in roles

    down = deployment.compose("down")
    assert down.returncode == 0, down.stderr
    kept = subprocess.check_output(
        ["docker", "ps", "-a", "--filter", f"label=sandtrap.sensor={deployment.sensor}",
         "--format", "{{.Names}} {{.State}}"],
        text=True,
    ).split("\n")  # fmt: skip
    kept = sorted(row for row in kept if row)
    # The session's sandbox, kept for forensics, and the sinkhole (the default network), which
    # the gate stops on its way down (the next `up` starts it again): nothing left running.
    assert len(kept) == 2, kept
    assert kept[0].startswith("sandtrap-s-") and kept[1].startswith("sandtrap-sinkhole-"), kept
    assert all(row.endswith("exited") for row in kept), kept
    events = [json.loads(line) for line in deployment.volume_file("log/events.jsonl").splitlines()]
    closed = [e for e in events if e["eventid"] == "session.closed"]
    assert closed and closed[0]["sensor"] == deployment.sensor
    session = closed[0]["session"]
    shells = [e for e in events if e["eventid"] == "session.exec" and e["session"] == session]
    cast = deployment.volume_file(shells[0]["recording"].removeprefix("/var/lib/sandtrap/"))
    assert "hello-compose" in cast
