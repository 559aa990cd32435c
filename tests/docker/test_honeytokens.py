"""Honeytokens on the real service (real engine, real OpenSSH): planted per warm sandbox, read by
one session, used by a later one (the planted private key with `ssh -i`, the bash-history
password), each use a `honeytoken.triggered` naming the first session; clusters tie the two."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = service_config(
        tmp_path_factory.mktemp("honeytokens") / "var",
        pool={"size": 1},
        analysis={"honeytokens": True, "anomaly": False},
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def _wait(service: RunningService, eventid: str, session: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = service.events(eventid, session=session)
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no {eventid} for {session}")


def test_planted_key_and_password_used_later_name_the_planting_session(
    service: RunningService, tmp_path: Path
) -> None:
    planted = _wait(service, "honeytoken.planted")
    assert {t["kind"] for t in planted["tokens"]} == {
        "aws_access_key_id",
        "aws_secret_access_key",
        "env_password",
        "git_credentials",
        "ssh_key",
        "history_password",
    }
    loot = service.ssh(
        "cat ~/.ssh/id_ed25519; cat ~/.aws/credentials; grep sshpass ~/.bash_history; ls ~/.ssh"
    )
    assert loot.returncode == 0, loot.stderr
    text = loot.stdout.decode()
    first = _wait(service, "session.closed")["session"]
    allocated = service.events("sandbox.allocated", session=first)[0]
    (planted,) = [
        p
        for p in service.events("honeytoken.planted")
        if p["container_id"] == allocated["container_id"]
    ]
    values = {t["kind"]: t["value"] for t in planted["tokens"]}
    assert values["aws_access_key_id"] in text and values["history_password"] in text
    # The planted files are the image's as far as the session's diff goes.
    diff = _wait(service, "sandbox.diff", first)
    assert not [c for c in diff["changes"] if c["path"].startswith(("/root/.aws", "/root/.ssh"))]
    key = tmp_path / "stolen"
    match = re.search(
        r"-----BEGIN OPENSSH PRIVATE KEY-----.*?-----END OPENSSH PRIVATE KEY-----\n", text, re.S
    )
    assert match is not None
    key.write_text(match.group())
    key.chmod(0o600)
    argv = [
        "ssh",
        "-p",
        str(service.port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(key),
        "root@127.0.0.1",
        "echo back in",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "back in\n"
    triggered = _wait(service, "honeytoken.triggered")
    assert triggered["kind"] == "ssh_key" and triggered["via"] == "publickey"
    assert triggered["planted_session"] == first
    assert triggered["session"] != first
    success = service.events("auth.success", session=triggered["session"])[0]
    assert success["reason"] == "honeytoken key"
    guess = subprocess.run(
        [
            "sshpass",
            "-p",
            values["history_password"],
            "ssh",
            "-p",
            str(service.port),
            *SSH_OPTS,
            "-o",
            "NumberOfPasswordPrompts=1",
            "deploy@127.0.0.1",
            "true",
        ],
        capture_output=True,
        timeout=60,
    )
    assert guess.returncode != 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(service.events("honeytoken.triggered")) < 2:
        time.sleep(0.2)
    kinds = {
        (e["kind"], e["via"], e["planted_session"]) for e in service.events("honeytoken.triggered")
    }
    assert ("history_password", "password", first) in kinds
    config = tmp_path / "cli.yaml"
    config.write_text(f"storage:\n  data_dir: {service.config.storage.data_dir}\n")
    cli = [sys.executable, "-m", "sandtrap"]
    env = {**os.environ, "COLUMNS": "250"}
    subprocess.run(
        [*cli, "index", "rebuild", "--config", str(config)],
        check=True,
        capture_output=True,
        env=env,
    )
    out = subprocess.run(
        [*cli, "clusters", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    clusters = [json.loads(line) for line in out.splitlines()]
    (linked,) = [c for c in clusters if first in {m["session"] for m in c["members"]}]
    assert triggered["session"] in {m["session"] for m in linked["members"]}
    assert "honeytoken" in linked["ties"]
