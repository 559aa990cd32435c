"""The Docker engine: the one place that speaks the Engine API (implements `ContainerEngine`).

Owns the aiodocker client and the translation of engine errors into `sandtrap.errors` (nothing
above `sandbox/` sees aiodocker or aiohttp exceptions). Exec I/O uses our own hijacked HTTP
connection (`sandbox/docker_exec.py`); pool policy lives in `sandbox/pool.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlparse

import aiodocker
import aiohttp

from sandtrap.errors import EngineError, EngineUnavailable, ImageMissing, SandboxGone
from sandtrap.sandbox.base import STDERR
from sandtrap.sandbox.docker_exec import READ_SIZE, DockerExecStream

log = logging.getLogger(__name__)


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


def exec_body(
    argv: Sequence[str],
    *,
    user: str,
    tty: bool,
    env: Mapping[str, str] | None,
    workdir: str | None,
    stdin: bool = True,
) -> dict[str, Any]:
    """The `POST /containers/{id}/exec` body of every exec SandTrap makes (the gate accepts
    nothing else: gate/bodies.py rebuilds it from the request's varying fields)."""
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
    return body


def exec_start_body(tty: bool) -> dict[str, Any]:
    """The `POST /exec/{id}/start` body (attached: the stream is hijacked)."""
    return {"Detach": False, "Tty": tty}


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

    async def follow_logs(self, container: str, since: int) -> AsyncIterator[bytes]:
        """A container's stdout from `since` (Unix seconds) on, following, as raw frame payloads
        (the multiplexed stream's 8-byte headers removed); ends when the container stops."""
        params = {"follow": "1", "stdout": "1", "stderr": "0", "since": str(since)}
        async with (
            engine_errors("logs"),
            self.docker._query(  # private API, as in request()
                f"containers/{container}/logs", params=params, timeout=None
            ) as resp,
        ):
            pending = b""
            async for chunk in resp.content.iter_any():
                pending += chunk
                while len(pending) >= 8:
                    size = int.from_bytes(pending[4:8], "big")
                    if len(pending) < 8 + size:
                        break
                    yield pending[8 : 8 + size]
                    pending = pending[8 + size :]

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

    async def pause(self, container_id: str) -> None:
        await self.request("POST", f"containers/{container_id}/pause", operation="pause")

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
                async for chunk in resp.content.iter_chunked(READ_SIZE):
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
        body = exec_body(argv, user=user, tty=tty, env=env, workdir=workdir, stdin=stdin)
        result = await self.request(
            "POST", f"containers/{container_id}/exec", body=body, operation="exec create"
        )
        return str(result["Id"])

    async def exec_attach(self, exec_id: str, tty: bool) -> DockerExecStream:
        """Start an exec and return its hijacked stream."""
        reader, writer = await self._open_raw()
        body = json.dumps(exec_start_body(tty)).encode()
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
    ) -> DockerExecStream:
        """Create, start and (with a TTY and `size`) resize an exec; returns its stream."""
        exec_id = await self.exec_create(
            container_id, argv, user=user, tty=tty, env=env, workdir=workdir
        )
        stream = await self.exec_attach(exec_id, tty)
        if tty and size:
            try:
                await stream.resize(*size)
            except BaseException:
                await stream.close()
                raise
        return stream

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


def quote_path(path: str) -> str:
    """Percent-encode a container path for logs (attacker-chosen names may hold anything)."""
    return quote(path, safe="/._-+@~")
