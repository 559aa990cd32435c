"""Sandboxes on the Docker engine: the one place that speaks the Engine API.

Owns the aiodocker client, translation of engine errors into `sandtrap.errors` (nothing above
`sandbox/` sees aiodocker or aiohttp exceptions), and exec streams. Exec I/O uses our own hijacked
HTTP connection so stdin can be half-closed (EOF to the process) while output keeps flowing.
Pool policy lives in `sandbox/pool.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlparse

import aiodocker
import aiohttp

from sandtrap.errors import EngineError, EngineUnavailable, ImageMissing, SandboxGone
from sandtrap.sandbox.base import STDERR, STDOUT, Chunk
from sandtrap.sandbox.hardening import is_valid_username, parse_engine_time

log = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024


@contextlib.asynccontextmanager
async def engine_errors(operation: str) -> AsyncIterator[None]:
    """Translate aiodocker/aiohttp/OS errors raised inside into SandTrap errors."""
    try:
        yield
    except aiodocker.DockerError as exc:
        message = f"{operation}: {exc.message}"
        if exc.status in (900, 502):
            # 900: aiodocker's code for "could not connect to the engine's socket"; 502: the
            # Engine API gate could not reach the engine (the engine itself never answers 502).
            raise EngineUnavailable(message) from None
        if exc.status == 404 and "image" in str(exc.message).lower():
            raise ImageMissing(message) from None
        if exc.status == 404:
            raise SandboxGone(message) from None
        raise EngineError(message, exc.status) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise EngineUnavailable(f"{operation}: engine unreachable: {exc}") from None
    except TimeoutError:
        raise EngineUnavailable(f"{operation}: engine timed out") from None


class Engine:
    """A connection to the Docker engine. Constructing it does no I/O."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._docker: aiodocker.Docker | None = None
        self.api_version = "v1.41"

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def version(self) -> dict[str, Any]:
        async with engine_errors("version"):
            info: dict[str, Any] = dict(await self.docker.version())
        self.api_version = f"v{info.get('ApiVersion', '1.41')}"
        return info

    async def info(self) -> dict[str, Any]:
        async with engine_errors("info"):
            return dict(await self.docker.system.info())

    async def image_label(self, image: str, label: str) -> str | None:
        """A label of a local image, None when the image or the label is absent."""
        try:
            async with engine_errors("image inspect"):
                details = await self.docker.images.inspect(image)
        except (ImageMissing, SandboxGone):
            return None
        value = ((details.get("Config") or {}).get("Labels") or {}).get(label)
        return str(value) if value else None

    async def image_exists(self, image: str) -> bool:
        try:
            async with engine_errors("image inspect"):
                await self.docker.images.inspect(image)
        except (ImageMissing, SandboxGone):
            return False
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        operation: str,
        deadline: float = 60.0,
    ) -> Any:
        """One Engine API call returning decoded JSON (or None for an empty body)."""
        async with engine_errors(operation), asyncio.timeout(deadline):
            data = json.dumps(body) if body is not None else None
            async with self.docker._query(  # private API: aiodocker's raw request helper
                path,
                method=method,
                params=dict(params or {}),
                data=data,
                headers={"Content-Type": "application/json"} if data else None,
            ) as resp:
                text = await resp.read()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    async def create(self, body: dict[str, Any], name: str) -> str:
        result = await self.request(
            "POST", "containers/create", params={"name": name}, body=body, operation="create"
        )
        return str(result["Id"])

    async def start(self, container_id: str) -> None:
        await self.request("POST", f"containers/{container_id}/start", operation="start")

    async def stop(self, container_id: str, timeout_seconds: int = 2) -> None:
        await self.request(
            "POST",
            f"containers/{container_id}/stop",
            params={"t": timeout_seconds},
            operation="stop",
            deadline=timeout_seconds + 30,
        )

    async def remove(self, container_id: str) -> None:
        """Remove a container; one that is gone, or already being removed, is not an error."""
        try:
            await self.request(
                "DELETE",
                f"containers/{container_id}",
                params={"force": "true", "v": "true"},
                operation="remove",
            )
        except SandboxGone:
            pass
        except EngineError as exc:
            if exc.status != 409 or "already in progress" not in str(exc):
                raise

    async def rename(self, container_id: str, name: str) -> None:
        await self.request(
            "POST", f"containers/{container_id}/rename", params={"name": name}, operation="rename"
        )

    async def inspect(self, container_id: str, size: bool = False) -> dict[str, Any]:
        params = {"size": "true"} if size else None
        result: dict[str, Any] = await self.request(
            "GET", f"containers/{container_id}/json", params=params, operation="inspect"
        )
        return result

    async def containers(self, *labels: str, all_states: bool = True) -> list[dict[str, Any]]:
        """Containers carrying every one of `labels` (each `key=value`)."""
        filters = json.dumps({"label": list(labels)})
        params = {"all": "true" if all_states else "false", "filters": filters}
        result: list[dict[str, Any]] = await self.request(
            "GET", "containers/json", params=params, operation="list", deadline=120
        )
        return result

    async def diff(self, container_id: str) -> list[dict[str, Any]]:
        result = await self.request("GET", f"containers/{container_id}/changes", operation="diff")
        return list(result or [])

    async def archive_stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        """Stat of a path inside the container (from the archive API's header), None if absent."""
        try:
            async with (
                engine_errors("archive stat"),
                self.docker._query(
                    f"containers/{container_id}/archive",
                    method="HEAD",
                    params={"path": path},
                ) as resp,
            ):
                header = resp.headers.get("X-Docker-Container-Path-Stat", "")
        except (SandboxGone, ValueError):
            # 404 for a path that is gone; aiodocker fails to decode the empty HEAD error body.
            return None
        if not header:
            return None
        try:
            stat: dict[str, Any] = json.loads(base64.b64decode(header))
        except ValueError:
            return None
        return stat

    async def archive(self, container_id: str, path: str, limit: int) -> bytes | None:
        """A tar stream of `path`; None when it is absent or larger than `limit` bytes."""
        try:
            async with (
                engine_errors("archive"),
                asyncio.timeout(120),
                self.docker._query(
                    f"containers/{container_id}/archive", method="GET", params={"path": path}
                ) as resp,
            ):
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(_READ_SIZE):
                    total += len(chunk)
                    if total > limit:
                        return None
                    chunks.append(chunk)
                return b"".join(chunks)
        except SandboxGone:
            return None

    async def exec_create(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None,
        workdir: str | None,
        stdin: bool = True,
    ) -> str:
        body: dict[str, Any] = {
            "Cmd": list(argv),
            "User": user,
            "Tty": tty,
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Privileged": False,
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        }
        if workdir:
            body["WorkingDir"] = workdir
        result = await self.request(
            "POST", f"containers/{container_id}/exec", body=body, operation="exec create"
        )
        return str(result["Id"])

    async def exec_attach(self, exec_id: str, tty: bool) -> DockerExecStream:
        """Start an exec and return its hijacked stream."""
        reader, writer = await self._open_raw()
        body = json.dumps({"Detach": False, "Tty": tty}).encode()
        request = (
            f"POST /{self.api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
            "Host: docker\r\n"
            "Content-Type: application/json\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: tcp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            async with engine_errors("exec start"), asyncio.timeout(30):
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.close()
            raise
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] not in ("101", "200"):
            writer.close()
            raise EngineError(f"exec start: unexpected answer {status_line!r}")
        return DockerExecStream(self, exec_id, reader, writer, tty)

    async def exec_resize(self, exec_id: str, width: int, height: int) -> None:
        await self.request(
            "POST",
            f"exec/{exec_id}/resize",
            params={"h": height, "w": width},
            operation="exec resize",
        )

    async def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", f"exec/{exec_id}/json", operation="exec inspect"
        )
        return result

    async def _open_raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parsed = urlparse(self.url)
        async with engine_errors("connect"), asyncio.timeout(10):
            if parsed.scheme in ("unix", ""):
                return await asyncio.open_unix_connection(parsed.path or "/var/run/docker.sock")
            if parsed.scheme in ("tcp", "http"):
                return await asyncio.open_connection(parsed.hostname, parsed.port or 2375)
        raise EngineUnavailable(f"unsupported docker_url scheme {parsed.scheme!r}")

    async def run(
        self, container_id: str, argv: Sequence[str], *, user: str = "root", stdin: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """Run a short command to completion; returns (exit status, stdout, stderr)."""
        exec_id = await self.exec_create(
            container_id, argv, user=user, tty=False, env=None, workdir="/", stdin=True
        )
        stream = await self.exec_attach(exec_id, tty=False)
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            if stdin:
                await stream.write(stdin)
            await stream.close_stdin()
            while (chunk := await stream.read()) is not None:
                (err if chunk.stream == STDERR else out).append(chunk.data)
            status = await stream.wait()
        finally:
            await stream.close()
        return status, b"".join(out), b"".join(err)


class FrameError(Exception):
    """The engine's multiplexed stream broke its framing."""


# The engine writes frames of at most 32 KiB; anything far larger is a broken or hostile stream.
_MAX_FRAME = 1024 * 1024
# Merged output handed on at once: fewer SSH writes and recording events for bulk output.
_MERGE_LIMIT = 256 * 1024


class FrameBuffer:
    """Parses the engine's multiplexed exec stream (8-byte header: stream, 0, 0, 0, size BE).

    `take()` returns the frames already received, consecutive ones of the same stream merged up
    to `_MERGE_LIMIT`, so a bulk transfer costs one chunk per read instead of one per frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def take(self) -> Chunk | None:
        parts: list[bytes] = []
        merged = 0
        kind = -1
        offset = 0
        buffer = self._buffer
        with memoryview(buffer) as view:  # one copy per frame; released before the resize
            while len(buffer) - offset >= 8:
                stream = buffer[offset]
                (size,) = struct.unpack_from(">I", buffer, offset + 4)
                if stream > 2 or size > _MAX_FRAME:
                    raise FrameError(f"frame header stream={stream} size={size}")
                if len(buffer) - offset - 8 < size:
                    break
                if size and parts and (stream != kind or merged + size > _MERGE_LIMIT):
                    break
                if size:
                    parts.append(bytes(view[offset + 8 : offset + 8 + size]))
                    merged += size
                    kind = stream
                offset += 8 + size
        del buffer[:offset]
        if not parts:
            return None
        return Chunk(STDERR if kind == 2 else STDOUT, b"".join(parts))


# What `wait()` reports for an exec whose sandbox died under it: OpenSSH's status for a lost
# connection, since to the client it is a machine that went away.
ABORTED_STATUS = 255


class DockerExecStream:
    """An exec's hijacked connection: raw bytes with a TTY, multiplexed frames without."""

    def __init__(
        self,
        engine: Engine,
        exec_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tty: bool,
    ) -> None:
        self._engine = engine
        self.exec_id = exec_id
        self._reader = reader
        self._writer = writer
        self._tty = tty
        self._stdin_closed = False
        self._closed = False
        self._aborted = False
        self._frames = FrameBuffer()

    async def read(self) -> Chunk | None:
        try:
            if self._tty:
                data = await self._reader.read(_READ_SIZE)
                return Chunk(STDOUT, data) if data else None
            while (chunk := self._frames.take()) is None:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    return None  # a partial frame at the end is dropped with the stream
                self._frames.feed(data)
            return chunk
        except FrameError as exc:
            log.warning("exec %s: bad stream from the engine: %s", self.exec_id[:12], exc)
            return None
        except (ConnectionError, OSError):
            return None

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or self._closed:
            return
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("exec %s stdin closed by the engine: %s", self.exec_id[:12], exc)
            self._stdin_closed = True

    async def close_stdin(self) -> None:
        if self._stdin_closed or self._closed:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof():
                self._writer.write_eof()

    async def resize(self, width: int, height: int) -> None:
        if not self._tty:
            return
        with contextlib.suppress(EngineError, SandboxGone):
            await self._engine.exec_resize(self.exec_id, width, height)

    async def wait(self) -> int:
        if self._aborted:
            return ABORTED_STATUS  # the sandbox died: the engine may not know the exec any more
        # The engine records the exit code a moment after the stream ends.
        for _ in range(50):
            info = await self._engine.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await asyncio.sleep(0.02)
        return 255

    def abort(self) -> None:
        """End the stream now because its sandbox died; `wait()` then reports ABORTED_STATUS.

        The transport is dropped, not closed: a dead sandbox's engine may never read the input
        still queued, and a graceful close would wait for it forever.
        """
        self._aborted = True
        self._closed = True
        self._writer.transport.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


# $1 is a validated user name. useradd's own files, the new home (with the skeleton) and the
# directories whose entries change; the first output line is the passwd entry.
_ENSURE_USER_SCRIPT = r"""
getent passwd "$1" >/dev/null || useradd --create-home --shell /bin/bash -- "$1" || exit 1
getent passwd "$1"
home=$(getent passwd "$1" | cut -d: -f6)
for f in /etc/passwd /etc/shadow /etc/group /etc/gshadow /etc/subuid /etc/subgid; do
  set -- "$@" "$f" "$f-"
done
find "$@" /etc /home /var/mail /var/log/lastlog /var/log/faillog -maxdepth 0 \
  -printf '%p\t%s\t%T@\n' 2>/dev/null
[ -d "$home" ] && [ "$home" != / ] && find "$home" -xdev -printf '%p\t%s\t%T@\n' 2>/dev/null
exit 0
"""


def stat_key(stat: dict[str, Any] | None) -> tuple[int, int] | None:
    """(size, mtime in whole seconds) of an archive-API stat; None for a missing path."""
    if stat is None:
        return None
    moment = parse_engine_time(str(stat.get("mtime", "")))
    return int(stat.get("size", 0)), int(moment.timestamp()) if moment else 0


class DockerSandbox:
    """One sandbox container (see `sandbox/base.py` for the protocol)."""

    def __init__(self, engine: Engine, container_id: str, hostname: str, image: str) -> None:
        self._engine = engine
        self._id = container_id
        self._hostname = hostname
        self._image = image
        self.name = ""
        self.users: dict[str, str] = {}
        # Paths changed by our own preparation, as (size, mtime), so the session diff leaves
        # them out unless the attacker changed them again.
        self.baseline: dict[str, tuple[int, int] | None] = {}
        # Open execs, so a sandbox found dead can end them (gVisor leaves them hanging).
        self._streams: weakref.WeakSet[DockerExecStream] = weakref.WeakSet()

    @property
    def id(self) -> str:
        return self._id

    @property
    def hostname(self) -> str:
        return self._hostname

    @property
    def image(self) -> str:
        return self._image

    async def ensure_user(self, username: str) -> str:
        if username in self.users:
            return self.users[username]
        if not is_valid_username(username):
            raise EngineError(f"login name {username!r} is not a valid user name")
        # One exec: create the account when missing, then report the passwd entry and the size and
        # mtime of every path useradd touches, so the session diff can leave our doing out.
        status, out, err = await self._engine.run(
            self._id, ["/bin/sh", "-c", _ENSURE_USER_SCRIPT, "sh", username]
        )
        if status != 0:
            raise EngineError(f"cannot create user {username!r}: {err[-200:]!r}")
        entry, _, listing = out.decode("utf-8", "replace").partition("\n")
        fields = entry.strip().split(":")
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        for line in listing.splitlines():
            path, tab, rest = line.partition("\t")
            size, _, mtime = rest.partition("\t")
            if tab and size.isdigit():
                self.baseline[path] = (int(size), int(float(mtime or 0)))
        self.users[username] = home
        return home

    async def exec(
        self,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> DockerExecStream:
        exec_id = await self._engine.exec_create(
            self._id, argv, user=user, tty=tty, env=env, workdir=workdir
        )
        stream = await self._engine.exec_attach(exec_id, tty)
        self._streams.add(stream)
        if tty and size:
            await stream.resize(*size)
        return stream

    def abort(self) -> None:
        """End every open exec: their readers see end of stream, so their sessions close."""
        for stream in list(self._streams):
            stream.abort()


def quote_path(path: str) -> str:
    """Percent-encode a container path for logs (attacker-chosen names may hold anything)."""
    return quote(path, safe="/._-+@~")
