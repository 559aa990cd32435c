"""`sandtrap image build --tag`: a trial build under its own tag, never the target's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandtrap.sandbox.images import Docker, build_target, find_context


class RecordingDocker(Docker):
    """The docker CLI calls a build makes, recorded instead of run."""

    def __init__(self) -> None:
        self.builds: list[list[str]] = []

    def image_id(self, ref: str) -> str | None:
        return "sha256:base" if ref.startswith("sandtrap/debian-base") else None

    def image_label(self, ref: str, label: str) -> str | None:
        return None

    def stream(self, args: list[str], report: Any, stdin: int | None = None) -> None:
        self.builds.append(args)


def test_tag_names_the_build_and_enters_its_hash() -> None:
    context: Path = find_context()
    docker = RecordingDocker()
    trial = build_target("debian", docker=docker, context=context, tag="sandtrap/target-debian:t")
    real = build_target("debian", docker=docker, context=context)
    (first, second) = docker.builds
    assert first[first.index("--tag") + 1] == "sandtrap/target-debian:t" == trial.tag
    assert second[second.index("--tag") + 1] == "sandtrap/target-debian:12" == real.tag
    assert trial.inputs_hash != real.inputs_hash
