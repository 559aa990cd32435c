"""A burst of distinct attackers with the default configuration: every login gets a shell.

Sixty OpenSSH clients start at once, each bound to its own loopback source address (`ssh -b
127.0.2.N`), against the real engine. The pool's defaults (a warm floor, logins that wait while a
sandbox is created for each, a warm target that grows with arrivals) must serve every one of
them; nothing is refused and no allocation fails (issue 13).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandtrap.config import Config, parse_config
from tests.conftest import IMAGE
from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

BURST = 60
BOUND_SECONDS = 240


def default_config(data_dir: Path, sensor: str) -> Config:
    """Config() with only what a test must set: where it listens, stores and which image."""
    return parse_config(
        {
            "sensor": sensor,
            "ssh": {"listen": ["127.0.0.1:0"]},
            "sandbox": {"image": IMAGE},
            "storage": {"data_dir": str(data_dir)},
        }
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    sensor = f"burst-{int(time.time() * 1000) % 10**8}"
    config = default_config(tmp_path / "var", sensor)
    assert config.pool == Config().pool  # the defaults under test, untouched
    running = RunningService(config).start()
    try:
        running.call(running.service.pool.wait_warm)
        yield running
    finally:
        running.stop()
        remove_sensor_containers(sensor)


def _login(port: int, n: int, deadline: float) -> tuple[int, bytes]:
    source = f"127.0.2.{n}"
    argv = ["sshpass", "-p", "123456", "ssh", "-p", str(port), "-b", source, *SSH_OPTS]
    argv += ["root@127.0.0.1", f"echo burst-ok-{n}"]
    proc = subprocess.run(
        argv, capture_output=True, timeout=max(1.0, deadline - time.monotonic()), check=False
    )
    return proc.returncode, proc.stdout


def test_sixty_logins_at_once_from_sixty_addresses_all_get_a_shell(
    service: RunningService,
) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    with ThreadPoolExecutor(max_workers=BURST) as workers:
        results = list(
            workers.map(lambda n: _login(service.port, n, deadline), range(1, BURST + 1))
        )
    served = [n for n, (code, out) in enumerate(results, 1) if out == f"burst-ok-{n}\n".encode()]
    failed = {n: code for n, (code, out) in enumerate(results, 1) if n not in served}
    assert not failed, f"{len(served)} of {BURST} got a shell; failed (exit codes): {failed}"

    allocated = [
        e for e in service.events("sandbox.allocated") if e["src_ip"].startswith("127.0.2.")
    ]
    assert {e["src_ip"] for e in allocated} == {f"127.0.2.{n}" for n in range(1, BURST + 1)}
    # Distinct sources, distinct machines; and no one was dropped on the way.
    assert len({e["container_id"] for e in allocated}) == BURST
    assert not service.events("sandbox.allocation_failed")
    assert not service.events("session.refused")
    # Every login beyond the warm floor waited for a sandbox created for it, within the bound.
    assert max(e["wait_ms"] for e in allocated) > 0
    assert service.service.pool.statistics().target > Config().pool.size
