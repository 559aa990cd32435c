"""User-namespace remapping: root in a sandbox is an unprivileged uid on the host (issue 6).

Switching the main engine to `userns-remap` would hide every image and container the other tests
use, so these run against a second, dedicated dockerd with remapping (scripts/userns-engine),
started here when this is root and stopped afterwards; the target image is copied into it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from tests.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "userns-engine"


@pytest.fixture(scope="module")
def remapped() -> Iterator[str]:
    """The socket URL of a dockerd with userns-remap holding the target image."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root (make test runs as root in CI)")
    try:
        started = subprocess.run(
            [str(SCRIPT), "start", IMAGE], capture_output=True, text=True, timeout=300, check=False
        )
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"unix://{started.stdout.strip()}"
    finally:  # also after a failed start: a second dockerd must not outlive the tests
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120, check=False)


def _docker(url: str, *args: str) -> str:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "DOCKER_HOST": url},
    ).stdout.strip()


def test_sandbox_root_is_unprivileged_on_the_host(remapped: str) -> None:
    assert "name=userns" in _docker(remapped, "info", "--format", "{{json .SecurityOptions}}")
    # The main engine is still the only process named dockerd (ensure-docker relies on it).
    main = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False)
    assert len(main.stdout.split()) == 1
    cid = _docker(
        remapped,
        "run",
        "-d",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        IMAGE,
    )
    try:
        assert _docker(remapped, "exec", cid, "id", "-u") == "0"
        pid = _docker(remapped, "inspect", "--format", "{{.State.Pid}}", cid)
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        host_uids = {int(value) for value in uid_line.split()[1:]}
        assert 0 not in host_uids
        assert min(host_uids) >= 65536  # dockremap's subordinate range
        # uid 0 inside maps to that range outside: "0 <host start> <count>".
        inside, outside, _count = Path(f"/proc/{pid}/uid_map").read_text().split()[:3]
        assert inside == "0" and int(outside) >= 65536
    finally:
        _docker(remapped, "rm", "-f", cid)


def test_verifier_passes_on_a_remapped_engine(remapped: str, tmp_path: Path) -> None:
    """The whole verifier, the pool and an SSH login against the remapped engine."""
    config = tmp_path / "config.yaml"
    config.write_text(f"sandbox:\n  image: {IMAGE}\n  network: none\n  docker_url: {remapped}\n")
    result = CliRunner().invoke(cli, ["verify-security", "--config", str(config), "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failed = [row for row in rows if row["status"] == "FAIL"]
    assert result.exit_code == 0, (failed, result.stderr[-3000:])
    assert rows and not failed
    by_check = {row["check"]: row for row in rows}
    assert by_check["user namespace remapping"]["status"] == "PASS"
    assert by_check["new SSH login after the bombs"]["status"] == "PASS"
    # No sandbox of the verifier is left on the remapped engine.
    assert not _docker(remapped, "ps", "-aq", "--filter", "label=sandtrap.role=sandbox")
