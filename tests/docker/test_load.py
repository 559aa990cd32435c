"""Load and faults against a real `sandtrap run` in a subprocess (loopback only, bounded in time).

A flood of failing logins, idle and garbage sockets and malformed packets must not keep a
legitimate login from a shell (2 s), grow the service's memory without bound, crash it, or lose a
completed session's record.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from sandtrap.testing import OPENSSH_CLIENT_OPTIONS
from tests.conftest import IMAGE
from tests.docker.service import remove_sensor_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Subprocess:
    def __init__(self, tmp_path: Path, **limits: Any) -> None:
        self.port = _free_port()
        self.sensor = f"load-{os.getpid()}-{random.randrange(10**6)}"
        self.data_dir = tmp_path / "var"
        config = {
            "sensor": self.sensor,
            "ssh": {"listen": [f"127.0.0.1:{self.port}"], "auth_failure_delay_seconds": 0.0},
            "limits": {
                "max_connections": 2000,
                "max_connections_per_ip": 2000,
                "connections_per_ip_per_minute": 100_000,
                "max_startups": "1000:30:1000",
                **limits,
            },
            # A fixed pool (no growth with arrivals): the figure under test is the front's latency
            # during a flood, not refill CPU competing with it.
            "pool": {
                "size": 3,
                "max_warm": 3,
                "max_sandboxes": 8,
                "allocate_timeout_seconds": 20,
                "create_concurrency": 2,
            },
            "sandbox": {"image": IMAGE, "network": "none"},
            "storage": {"data_dir": str(self.data_dir)},
        }
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = (tmp_path / "service.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandtrap", "run", "-c", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "service exited during start-up"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("service did not start")

    def events(self, eventid: str | None = None) -> list[dict[str, Any]]:
        path = self.data_dir / "log" / "events.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in records if eventid is None or r["eventid"] == eventid]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.log.close()
        remove_sensor_containers(self.sensor)
        return code


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Subprocess]:
    svc = Subprocess(tmp_path)
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


async def _login(port: int, password: str = "123456") -> asyncssh.SSHClientConnection:  # noqa: S107 - bait
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username="root",
        password=password,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        connect_timeout=30,
    )


SSH_OPTS = OPENSSH_CLIENT_OPTIONS


async def _timed_shell(port: int) -> float:
    """OpenSSH in its own process (the flood's clients share this test's event loop)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *("sshpass", "-p", "123456", "ssh", "-p", str(port), *SSH_OPTS, "root@127.0.0.1"),
        "echo hi",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    elapsed = time.monotonic() - started
    assert (proc.returncode, out) == (0, b"hi\n"), err
    return elapsed


async def _failing_logins(port: int, count: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    refused = 0

    async def one() -> None:
        nonlocal refused
        async with gate:
            try:
                conn = await _login(port, password="wrong")
                conn.close()
            except (asyncssh.Error, OSError):
                refused += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return refused


async def _silent_and_garbage(port: int, count: int, hold: float) -> None:
    async def one(n: int) -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            if n % 2:
                writer.write(os.urandom(random.randrange(1, 20_000)))
                await writer.drain()
            await asyncio.sleep(hold)
        except OSError:
            pass  # the service may drop a garbage sender early: that is the point
        finally:
            writer.close()

    await asyncio.gather(*(one(n) for n in range(count)))


def _malformed_packet(n: int) -> bytes:
    kind = n % 4
    if kind == 0:  # absurd packet length
        return struct.pack(">I", 0xFFFFFFF0) + os.urandom(64)
    if kind == 1:  # length shorter than the padding
        return struct.pack(">IB", 5, 200) + os.urandom(8)
    if kind == 2:  # a well-framed packet of an unknown message type
        payload = bytes([random.randrange(150, 255)]) + os.urandom(32)
        padding = 8 - (len(payload) + 5) % 8 + 8
        return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + bytes(padding)
    return os.urandom(random.randrange(16, 4096))


async def _malformed_after_banner(port: int, count: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            try:
                await asyncio.wait_for(reader.readline(), 10)
                writer.write(b"SSH-2.0-OpenSSH_9.2p1\r\n" + _malformed_packet(n))
                await writer.drain()
                await asyncio.wait_for(reader.read(65536), 10)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

    await asyncio.gather(*(one(n) for n in range(count)))


async def test_flood_does_not_keep_a_login_from_its_shell(service: Subprocess) -> None:
    pid = service.proc.pid
    assert await _timed_shell(service.port) < 5  # warm-up (first login pays imports)
    baseline = _rss_kib(pid)
    samples: list[float] = []
    peak = baseline

    async def legit_while_flooding(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            samples.append(await _timed_shell(service.port))
            peak = max(peak, _rss_kib(pid))
            await asyncio.sleep(0.5)

    stop = asyncio.Event()
    started = time.monotonic()
    async with asyncio.timeout(50):
        watcher = asyncio.ensure_future(legit_while_flooding(stop))
        try:
            refused, *_ = await asyncio.gather(
                _failing_logins(service.port, 500, 30),
                _silent_and_garbage(service.port, 100, hold=8.0),
                _malformed_after_banner(service.port, 2000, 80),
            )
        finally:
            stop.set()
            await watcher
    flood_seconds = time.monotonic() - started
    assert refused == 500
    assert samples, "no legitimate login during the flood"
    # Not starved: each login during the flood got its shell well inside the flood itself. The
    # figure is a behaviour bound, not a latency target (on 2 cores a login's kex queues behind
    # 30 concurrent hostile ones for up to ~2 s; latency figures belong in bench/).
    assert max(samples) < 5.0, (samples, flood_seconds)
    assert service.proc.poll() is None, "service died"
    # Bounded memory: the flood may cost buffers, not a leak per connection.
    assert peak - baseline < 150 * 1024, (baseline, peak)
    await asyncio.sleep(1)
    after = _rss_kib(pid)
    assert after - baseline < 150 * 1024, (baseline, after)
    assert service.stop() == 0
    # Every completed (authenticated) session was recorded and closed.
    successes = {e["session"] for e in service.events("auth.success")}
    closed = {e["session"] for e in service.events("session.closed")}
    assert len(successes) == len(samples) + 1
    assert successes <= closed
    assert len(service.events("auth.failed")) >= 500
    casts = list((service.data_dir / "recordings").rglob("*.cast"))
    assert len(casts) == len(successes)
