"""`sandtrap sandboxes list|prune` and `sandtrap run` preflight against the real engine."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sandtrap.cli import cli
from tests.conftest import IMAGE
from tests.docker.service import remove_sensor_containers

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture
def sensor() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_sensor_containers(name)


def _container(sensor: str, name: str, state: str) -> str:
    cid = subprocess.run(
        [
            "docker",
            "create",
            "--network",
            "none",
            "--name",
            name,
            "--label",
            "sandtrap.role=sandbox",
            "--label",
            f"sandtrap.sensor={sensor}",
            "--label",
            "sandtrap.hostname=db-prod-01",
            IMAGE,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if state != "created":
        subprocess.run(["docker", "start", cid], capture_output=True, check=True)
    if state == "exited":
        subprocess.run(["docker", "stop", "-t", "1", cid], capture_output=True, check=True)
    return cid


def _config(tmp_path: Path, sensor: str, **retention: int) -> Path:
    path = tmp_path / "c.yaml"
    data = {
        "sensor": sensor,
        "sandbox": {"image": IMAGE, "network": "none"},
        "storage": {"data_dir": str(tmp_path / "var")},
        "retention": {"max_count": 100, **retention},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_list_and_prune(sensor: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    old = _container(sensor, f"sandtrap-s-{tag}00000001-203.0.113.1", "exited")
    new = _container(sensor, f"sandtrap-s-{tag}00000002-203.0.113.2", "exited")
    pool = _container(sensor, f"sandtrap-pool-{tag}", "running")
    config = _config(tmp_path, sensor)
    runner = CliRunner()
    result = runner.invoke(cli, ["sandboxes", "list", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["container_id"]: row for row in map(json.loads, result.output.splitlines())}
    assert set(rows) == {old, new, pool}
    assert rows[pool]["role"] == "pool"
    assert rows[old]["src_ip"] == "203.0.113.1"
    assert rows[old]["session_id"] == f"{tag}00000001"
    table = runner.invoke(cli, ["sandboxes", "list", "--config", str(config)])
    assert table.exit_code == 0
    assert new[:12] in table.output

    result = runner.invoke(
        cli, ["sandboxes", "prune", "--config", str(_config(tmp_path, sensor, max_count=1))]
    )
    assert result.exit_code == 0, result.output
    assert "removed 1 sandbox(es)" in result.output
    left = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=sandtrap.sensor={sensor}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert old not in left  # the oldest stopped session sandbox went first
    assert new in left and pool in left  # running pool members are never pruned
    events = (tmp_path / "var" / "log" / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["eventid"] == "sandbox.pruned"


def test_run_fails_clearly_without_the_image(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "ssh": {"listen": ["127.0.0.1:0"]},
                "sandbox": {"image": "sandtrap/no-such-image:1", "network": "none"},
                "storage": {"data_dir": str(tmp_path / "var")},
            }
        )
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 1
    assert "target image sandtrap/no-such-image:1 is missing" in result.output


def test_run_fails_clearly_without_an_engine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sandbox": {"docker_url": f"unix://{tmp_path}/no.sock", "network": "none"},
                "storage": {"data_dir": str(tmp_path / "var")},
            }
        )
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 1
    assert "Cannot connect to Docker Engine" in result.output
    assert "start Docker" in result.output
