"""The container-engine protocol: the operations the pool and its helpers need from an engine.

`sandbox/docker.py` implements it on the Docker Engine API and `sandbox/fake.py` in memory. Every
method raises only `sandtrap.errors.SandboxError` subclasses; dictionaries use the Engine API's
field names (`State.Running`, `SizeRw`, `Names`, ...), the one vocabulary both backends speak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sandtrap.sandbox.base import ExecStream


class EngineStream(ExecStream, Protocol):
    """An exec stream the sandbox can end at once when its container dies."""

    def abort(self) -> None:
        """End the stream now; readers see end of output and `wait()` reports 255."""
        ...


class ContainerEngine(Protocol):
    """Containers by id: lifecycle, inspection, filesystem changes, and processes inside.

    Raises (every method): `EngineUnavailable` when the engine does not answer, `SandboxGone` for
    an unknown container (except where a method says it returns None), `EngineError` otherwise.
    """

    async def info(self) -> dict[str, Any]:
        """Engine-wide facts (`DockerRootDir`, ...)."""
        ...

    async def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image, None when the image or the label is absent."""
        ...

    async def create(self, body: dict[str, Any], name: str) -> str:
        """Create a container from a `POST /containers/create` body; returns its id."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, timeout_seconds: int = 2) -> None: ...

    async def pause(self, container_id: str) -> None:
        """Freeze every process of a running container (the cgroup freezer); `stop` still works."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove a container, running or not; one already gone is not an error."""
        ...

    async def rename(self, container_id: str, name: str) -> None: ...

    async def inspect(self, container_id: str, size: bool = False) -> dict[str, Any]:
        """`State` (Running, ExitCode, OOMKilled, FinishedAt), and `SizeRw` when `size`."""
        ...

    async def containers(self, *labels: str, all_states: bool = True) -> list[dict[str, Any]]:
        """Containers carrying every one of `labels` (each `key=value`): Id, Names, State, ..."""
        ...

    async def diff(self, container_id: str) -> list[dict[str, Any]]:
        """Filesystem changes as `{"Path", "Kind"}` (0 modified, 1 added, 2 deleted)."""
        ...

    async def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        """Stat of a path inside (name, size, mode, mtime), None if absent."""
        ...

    async def archive(self, container_id: str, path: str, limit: int) -> bytes | None:
        """A tar stream of `path`; None when it is absent or larger than `limit` bytes."""
        ...

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> EngineStream:
        """Start a process; `size` is (width, height) for a TTY."""
        ...

    async def run(
        self, container_id: str, argv: Sequence[str], *, user: str = "root", stdin: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """Run a short command to completion; returns (exit status, stdout, stderr)."""
        ...
