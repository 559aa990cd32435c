"""An in-memory container engine for fast tests of pool and session logic; never evidence that a
feature works (the real-engine half of the conformance battery is).

`FakeEngine` implements `ContainerEngine`: containers with names, labels and states, execs served
by the interpreter of `sandbox/fake_exec.py`, and knobs for failing or slow creates, engine
outages and dying containers.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandtrap.errors import EngineError, EngineUnavailable, SandboxError, SandboxGone
from sandtrap.events import rfc3339
from sandtrap.sandbox.container import ENSURE_USER_SCRIPT
from sandtrap.sandbox.fake_exec import ExecRecord, FakeExecStream
from sandtrap.sandbox.hardening import PREPARE_SCRIPT

# Exit code of a container stopped by SIGTERM, and of one killed by SIGKILL (OOM killer included).
_STOPPED = 143
_KILLED = 137
_MTIME = 1_700_000_000


@dataclass
class FakeContainer:
    """One container as the fake engine keeps it; `execs` lists the processes sessions started."""

    id: str
    name: str
    image: str
    hostname: str
    labels: dict[str, str]
    created: datetime
    status: str = "created"  # created | running | exited
    paused: bool = False  # frozen by pause(); stop() ends it all the same
    exit_code: int = 0
    oom_killed: bool = False
    finished_at: str = "0001-01-01T00:00:00Z"
    size_rw: int = 0
    users: dict[str, str] = field(repr=False, default_factory=lambda: {"root": "/root"})
    changes: list[dict[str, Any]] = field(repr=False, default_factory=list)
    files: dict[str, bytes] = field(repr=False, default_factory=dict)
    execs: list[ExecRecord] = field(repr=False, default_factory=list)
    streams: list[FakeExecStream] = field(repr=False, default_factory=list)
    runs: list[tuple[str, ...]] = field(repr=False, default_factory=list)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def state(self) -> str:
        """The engine's word for it: a paused container is still running, as Docker says."""
        return "paused" if self.paused and self.running else self.status

    def end(self, exit_code: int, oom_killed: bool = False, end_execs: bool = True) -> None:
        self.status = "exited"
        self.paused = False
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.finished_at = rfc3339(datetime.now(UTC))
        if end_execs:
            for stream in self.streams:
                stream.abort()


class FakeEngine:
    """Containers in memory, behind the same protocol as the Docker engine.

    Knobs: `create_error` (raised by every create), `create_delay` (seconds each create takes),
    `outage()` / `restore()`, `kill()`, `write_file()`; `containers_by_id` for assertions.
    """

    def __init__(self, image_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.image_labels = {image: dict(labels) for image, labels in (image_labels or {}).items()}
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.create_error: SandboxError | None = None
        self.create_delay = 0.0
        self.down = False

    # --- knobs -------------------------------------------------------------------------------

    def outage(self) -> None:
        """The engine goes away: every call fails, and it takes its running containers down."""
        self.down = True
        for container in self.containers_by_id.values():
            if container.running:
                container.end(_STOPPED)

    def restore(self, lose_containers: bool = False) -> None:
        """The engine answers again; `lose_containers` drops every container (a wiped engine)."""
        self.down = False
        if lose_containers:
            self.containers_by_id.clear()

    def kill(self, container_id: str, oom_killed: bool = False, end_execs: bool = True) -> None:
        """The container dies under its session; `end_execs=False` leaves its execs hanging (as
        gVisor does), so only the pool's watcher can end them."""
        self.container(container_id).end(_KILLED, oom_killed, end_execs)

    def write_file(self, container_id: str, path: str, content: bytes) -> None:
        """A file appears in the container's layer (shown by diff, copied by archive)."""
        container = self.container(container_id)
        kind = 0 if path in container.files else 1
        container.files[path] = content
        container.changes.append({"Path": path, "Kind": kind})
        container.size_rw += len(content)

    def container(self, container_id: str) -> FakeContainer:
        try:
            return self.containers_by_id[container_id]
        except KeyError:
            raise SandboxGone(f"no such container: {container_id[:12]}") from None

    async def _call(self, operation: str) -> None:
        # Every call yields once, as real I/O would, so races show up on the fake too.
        await asyncio.sleep(0)
        if self.down:
            raise EngineUnavailable(f"{operation}: engine unreachable: fake outage")

    # --- ContainerEngine ---------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        await self._call("info")
        return {"DockerRootDir": "/nonexistent/fake-engine", "ServerVersion": "fake"}

    async def image_label(self, image: str, label: str) -> str | None:
        await self._call("image inspect")
        return self.image_labels.get(image, {}).get(label)

    async def create(self, body: dict[str, Any], name: str) -> str:
        await self._call("create")
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
            await self._call("create")
        if self.create_error is not None:
            raise self.create_error
        if any(c.name == name for c in self.containers_by_id.values()):
            raise EngineError(f"create: name {name!r} already in use", 409)
        container = FakeContainer(
            id=secrets.token_hex(32),
            name=name,
            image=str(body["Image"]),
            hostname=str(body.get("Hostname", "")),
            labels=dict(body.get("Labels") or {}),
            created=datetime.now(UTC),
        )
        self.containers_by_id[container.id] = container
        return container.id

    async def start(self, container_id: str) -> None:
        await self._call("start")
        container = self.container(container_id)
        container.status = "running"
        container.exit_code = 0
        container.oom_killed = False

    async def stop(self, container_id: str, timeout_seconds: int = 2) -> None:
        await self._call("stop")
        container = self.container(container_id)
        if container.running:
            container.end(_STOPPED)

    async def pause(self, container_id: str) -> None:
        await self._call("pause")
        container = self.container(container_id)
        if not container.running:
            raise SandboxError(f"container {container_id[:12]} is not running")
        container.paused = True

    async def remove(self, container_id: str) -> None:
        await self._call("remove")
        container = self.containers_by_id.pop(container_id, None)
        if container is not None and container.running:
            container.end(_KILLED)

    async def rename(self, container_id: str, name: str) -> None:
        await self._call("rename")
        container = self.container(container_id)
        if any(c.name == name and c is not container for c in self.containers_by_id.values()):
            raise EngineError(f"rename: name {name!r} already in use", 409)
        container.name = name

    async def inspect(self, container_id: str, size: bool = False) -> dict[str, Any]:
        await self._call("inspect")
        container = self.container(container_id)
        details: dict[str, Any] = {
            "Id": container.id,
            "Name": f"/{container.name}",
            "Created": rfc3339(container.created),
            "State": {
                "Status": container.state,
                "Running": container.running,
                "Paused": container.paused and container.running,
                "ExitCode": container.exit_code,
                "OOMKilled": container.oom_killed,
                "FinishedAt": container.finished_at,
            },
            "Config": {
                "Image": container.image,
                "Hostname": container.hostname,
                "Labels": dict(container.labels),
            },
        }
        if size:
            details["SizeRw"] = container.size_rw
        return details

    async def containers(self, *labels: str, all_states: bool = True) -> list[dict[str, Any]]:
        await self._call("list")
        wanted = [label.partition("=") for label in labels]
        return [
            {
                "Id": c.id,
                "Names": [f"/{c.name}"],
                "Image": c.image,
                "State": c.state,
                "Labels": dict(c.labels),
                "Created": int(c.created.timestamp()),
            }
            for c in self.containers_by_id.values()
            if (all_states or c.running)
            and all(c.labels.get(key) == value for key, _, value in wanted)
        ]

    async def diff(self, container_id: str) -> list[dict[str, Any]]:
        await self._call("diff")
        return list(self.container(container_id).changes)

    async def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        await self._call("archive stat")
        content = self.container(container_id).files.get(path)
        if content is None:
            return None
        mtime = rfc3339(datetime.fromtimestamp(_MTIME, UTC))
        return {
            "name": path.rsplit("/", 1)[-1],
            "size": len(content),
            "mode": 0o644,
            "mtime": mtime,
        }

    async def archive(self, container_id: str, path: str, limit: int) -> bytes | None:
        await self._call("archive")
        content = self.container(container_id).files.get(path)
        if content is None:
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            member = tarfile.TarInfo(path.rsplit("/", 1)[-1])
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
        data = buffer.getvalue()
        return None if len(data) > limit else data

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
    ) -> FakeExecStream:
        await self._call("exec create")
        container = self._running(container_id)
        record = ExecRecord(tuple(argv), user, tty, dict(env or {}), workdir, size)
        container.execs.append(record)
        stream = FakeExecStream(container.hostname, record)
        container.streams.append(stream)
        return stream

    async def run(
        self, container_id: str, argv: Sequence[str], *, user: str = "root", stdin: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        await self._call("exec create")
        container = self._running(container_id)
        container.runs.append(tuple(argv))
        script = argv[2] if len(argv) > 2 and list(argv[:2]) == ["/bin/sh", "-c"] else None
        if script == PREPARE_SCRIPT:
            return 0, _prepared(container).encode(), b""
        if script == ENSURE_USER_SCRIPT and len(argv) > 4:
            return 0, _ensure_user(container, argv[4]).encode(), b""
        # Anything else goes to the interpreter, unrecorded in `execs` (those are the sessions').
        stream = FakeExecStream(
            container.hostname, ExecRecord(tuple(argv), user, False, {}, "/", None)
        )
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            if stdin:
                await stream.write(stdin)
            await stream.close_stdin()
            while (chunk := await stream.read()) is not None:
                (err if chunk.stream == 2 else out).append(chunk.data)
            status = await stream.wait()
        finally:
            await stream.close()
        return status, b"".join(out), b"".join(err)

    def _running(self, container_id: str) -> FakeContainer:
        container = self.container(container_id)
        if not container.running:
            raise EngineError(f"exec: container {container_id[:12]} is not running", 409)
        return container


def _prepared(container: FakeContainer) -> str:
    """What the prepare script reports: the paths it touched and the accounts."""
    lines = [f"S\t{path}\t4096\t{_MTIME}.0" for path in ("/", "/etc", "/var", "/var/log")]
    for name, home in container.users.items():
        uid = 0 if name == "root" else 1000 + list(container.users).index(name)
        lines.append(f"U\t{name}:x:{uid}:{uid}:{name}:{home}:/bin/bash")
    return "\n".join(lines) + "\n"


def _ensure_user(container: FakeContainer, username: str) -> str:
    """What the ensure-user script reports: the passwd entry, then what useradd touched."""
    home = container.users.setdefault(username, f"/home/{username}")
    uid = 0 if username == "root" else 1000 + list(container.users).index(username)
    lines = [f"{username}:x:{uid}:{uid}::{home}:/bin/bash"]
    lines += [f"{path}\t1024\t{_MTIME}.0" for path in ("/etc/passwd", "/etc/shadow", home)]
    return "\n".join(lines) + "\n"


__all__ = [
    "ExecRecord",
    "FakeContainer",
    "FakeEngine",
    "FakeExecStream",
]
