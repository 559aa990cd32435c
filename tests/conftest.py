"""Shared fixtures: a real Docker engine and the target image (make test provides both)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("SANDTRAP_TEST_IMAGE", "sandtrap/target-debian:12")


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A running engine with the target image; fails (never skips) unless SANDTRAP_NO_DOCKER=1."""
    problem = None
    if not _engine_answers():
        problem = "no Docker engine answers (run scripts/ensure-docker or `make test`)"
    elif (
        subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    ).returncode != 0:
        problem = f"target image {IMAGE} is missing (run `sandtrap image build` or `make test`)"
    if problem:
        if os.environ.get("SANDTRAP_NO_DOCKER") == "1":
            pytest.skip(problem)
        pytest.fail(problem)
