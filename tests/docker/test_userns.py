"""User-namespace remapping: root in a sandbox is an unprivileged uid on the host (issue 6).

Switching dockerd to `userns-remap` restarts it and hides every image and container made before,
which would disrupt the rest of the suite, so this runs only when asked, on an engine already
switched: `sudo SANDTRAP_USERNS=1 scripts/ensure-docker && make image` then
`SANDTRAP_TEST_USERNS=1 .venv/bin/pytest tests/docker/test_userns.py` (docs/development.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IMAGE

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("docker_engine"),
    pytest.mark.skipif(
        os.environ.get("SANDTRAP_TEST_USERNS") != "1",
        reason="set SANDTRAP_TEST_USERNS=1 on an engine set up with SANDTRAP_USERNS=1",
    ),
]


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_sandbox_root_is_unprivileged_on_the_host() -> None:
    assert "name=userns" in _docker("info", "--format", "{{json .SecurityOptions}}")
    cid = _docker(
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
        inside = _docker("exec", cid, "id", "-u")
        assert inside == "0"
        pid = _docker("inspect", "--format", "{{.State.Pid}}", cid)
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        host_uids = {int(value) for value in uid_line.split()[1:]}
        assert 0 not in host_uids
        assert min(host_uids) >= 65536  # dockremap's subordinate range
        assert "0" not in Path(f"/proc/{pid}/uid_map").read_text().split()[1:2]
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
