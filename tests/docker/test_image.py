"""The default target image, built by `sandtrap image build`, against the real engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.sandbox.images import build_target
from tests.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
ROOT = Path(__file__).resolve().parents[2]
TOOLS = [
    "bash",
    "ls",
    "ps",
    "ip",
    "ifconfig",
    "wget",
    "curl",
    "nano",
    "less",
    "sudo",
    "ssh",
    "scp",
    "python3",
    "useradd",
]


def _run_in_image(script: str) -> str:
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            IMAGE,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_image_is_debian_12_without_network() -> None:
    out = _run_in_image("cat /etc/os-release; ls /sys/class/net")
    assert 'VERSION_ID="12"' in out
    assert "Debian GNU/Linux" in out
    assert out.split()[-1] == "lo"


def test_image_has_the_tools() -> None:
    script = "for t in " + " ".join(TOOLS) + '; do command -v "$t" || echo "MISSING $t"; done'
    out = _run_in_image(script + "; ls /usr/lib/openssh/sftp-server")
    assert "MISSING" not in out, out
    assert "/usr/lib/openssh/sftp-server" in out


def test_image_looks_lived_in() -> None:
    out = _run_in_image(
        "cat /etc/motd /etc/issue; ls /home; cat /root/.bash_history | wc -l; ls /var/log"
    )
    assert "Debian GNU/Linux 12" in out
    assert "auth.log" in out
    homes = out.split()
    assert any(name in homes for name in ("deploy", "admin"))


def test_image_has_build_hash_label() -> None:
    proc = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "--format",
            '{{index .Config.Labels "sandtrap.inputs-hash"}}',
            IMAGE,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(proc.stdout.strip()) == 64


def test_second_build_is_skipped() -> None:
    # In-process, so coverage sees the build logic: make test built the image just before.
    result = CliRunner().invoke(cli, ["image", "build"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.stdout
    lines: list[str] = []
    again = build_target("debian", report=lines.append)
    assert (again.built, again.reason) == (False, "up to date")
    assert again.inputs_hash == result.stdout.split("(inputs ")[1][:12] + again.inputs_hash[12:]


def test_unknown_target_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandtrap", "image", "build", "--target", "plan9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "unknown target 'plan9'" in proc.stderr


def test_missing_base_without_registry_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandtrap", "image", "build", "--base", "sandtrap/no-such-base:0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "cannot be pulled" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="ensure-docker installs and starts only as root")
def test_ensure_docker_is_idempotent() -> None:
    def dockerd_pids() -> str:
        return subprocess.run(
            ["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False
        ).stdout

    before = dockerd_pids()
    for _ in range(2):
        proc = subprocess.run(
            [str(ROOT / "scripts" / "ensure-docker")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    assert dockerd_pids() == before
