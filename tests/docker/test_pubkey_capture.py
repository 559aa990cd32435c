"""Public-key capture on the real service (real engine): OpenSSH `ssh -i` (hostbound requests) and
asyncssh clients log in with keys the policy accepts, and a key planted in authorized_keys is
flagged in the session's `sandbox.diff` (issue 19)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.docker.service import RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

KEY_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "PasswordAuthentication=no",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    path = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@c2", "-f", str(path)], check=True
    )
    listed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True)
    planted = asyncssh.generate_private_key("ssh-rsa", key_size=2048, comment="mdrfckr")
    return {
        "path": path,
        "line": Path(f"{path}.pub").read_text().strip(),
        "fingerprint": listed.stdout.split()[1],
        "planted": planted,
    }


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]
) -> Iterator[RunningService]:
    config = service_config(
        tmp_path_factory.mktemp("pubkey") / "var",
        auth={"accepted_key_fingerprints": [keys["fingerprint"]], "accept_keys_after_offers": 2},
        pool={"size": 1},
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def _wait(
    service: RunningService, eventid: str, session: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = service.events(eventid, session=session)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {eventid} for {session}")


def test_openssh_key_login_and_planted_key_flagged(
    service: RunningService, keys: dict[str, Any]
) -> None:
    planted_line = keys["planted"].export_public_key().decode().strip()
    command = (
        "mkdir -p ~/.ssh && chmod 700 ~/.ssh && "
        f"echo 'no-pty {planted_line}' >> ~/.ssh/authorized_keys && echo planted"
    )
    argv = ["ssh", "-v", "-p", str(service.port), *KEY_OPTS, "-i", str(keys["path"])]
    result = subprocess.run(
        [*argv, "root@127.0.0.1", command], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "planted\n"
    (success,) = [
        e for e in service.events("auth.success") if e["key_fingerprint"] == keys["fingerprint"]
    ]
    assert success["method"] == "publickey"
    assert success["key_type"] == "ssh-ed25519"
    assert success["key"] == " ".join(keys["line"].split()[:2])
    assert success["reason"] == "listed key"
    diff = _wait(service, "sandbox.diff", success["session"])
    flagged = [c for c in diff["changes"] if c.get("flag") == "authorized_keys"]
    assert [c["path"] for c in flagged] == ["/root/.ssh/authorized_keys"]
    (entry,) = diff["authorized_keys"]
    assert entry["path"] == "/root/.ssh/authorized_keys"
    assert entry["key_type"] == "ssh-rsa"
    assert entry["key_fingerprint"] == keys["planted"].get_fingerprint("sha256")
    assert entry["comment"] == "mdrfckr"


def test_asyncssh_second_key_accepted_and_recorded(service: RunningService) -> None:
    first = asyncssh.generate_private_key("ssh-ed25519")
    second = asyncssh.generate_private_key("ecdsa-sha2-nistp256")

    async def login() -> str:
        async with asyncssh.connect(
            "127.0.0.1",
            service.port,
            username="root",
            known_hosts=None,
            client_keys=[first, second],
            password=None,
            agent_path=None,
        ) as conn:
            return str((await conn.run("id -un", check=True)).stdout)

    assert asyncio.run(asyncio.wait_for(login(), 90)) == "root\n"
    offered = {first.get_fingerprint("sha256"), second.get_fingerprint("sha256")}
    records = [
        e
        for e in service.events("auth.failed") + service.events("auth.success")
        if e.get("key_fingerprint") in offered
    ]
    assert {(e["eventid"], e["key_type"], e["reason"]) for e in records} == {
        ("auth.failed", "ssh-ed25519", "public key refused"),
        ("auth.success", "ecdsa-sha2-nistp256", "accept_keys_after_offers"),
    }
    assert all(e["key"].startswith(e["key_type"] + " AAAA") for e in records)
