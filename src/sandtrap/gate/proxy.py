"""The gate's I/O: a Unix-socket HTTP server that forwards allowed Engine API requests upstream.

Owns the listening socket, one upstream connection per request (`Connection: close`, so framing
is the engine's and bytes are relayed as they come), the byte-for-byte relay of hijacked exec
streams with half-close, the ownership caches, and a `gate.refused` event per refusal. What is
allowed is decided in `gate/policy.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from sandtrap.events import EventSink, GateRefused
from sandtrap.gate.bodies import (
    check_capacity,
    check_create,
    check_exec,
    check_exec_start,
    encode_body,
    parse_body,
)
from sandtrap.gate.http import BadRequest, peer_credentials, read_request
from sandtrap.gate.policy import (
    GatePolicy,
    NotFound,
    Refused,
    Route,
    container_path,
    encode_query,
    is_full_id,
    is_ours,
    route,
)

log = logging.getLogger(__name__)

_HEAD_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024
_HEAD_TIMEOUT = 30.0
_CACHE_SIZE = 4096
_CREATE_TIMEOUT = 120.0


class Gate:
    """The policy-checking proxy. Constructing it does no I/O; `run()` serves until `stop` is set.

    Each client connection is served by a handler task owned by the gate; `run()` cancels the ones
    still open (hijacked exec streams) after `stop`, once the listener is closed.
    """

    def __init__(
        self,
        policy: GatePolicy,
        listen: Path,
        upstream: str,
        events: EventSink,
        socket_group: int | None = None,
    ) -> None:
        self.policy = policy
        self.listen = listen
        self.upstream = upstream
        self._events = events
        self._socket_group = socket_group
        self._owned: OrderedDict[str, None] = OrderedDict()
        self._exec_owner: OrderedDict[str, str] = OrderedDict()
        self._handlers: set[asyncio.Task[Any]] = set()
        # Creates are counted and forwarded one at a time, so concurrent ones cannot all pass
        # the capacity check (creates happen at warm time, never on a login's path).
        self._create_lock = asyncio.Lock()
        self.refused = 0
        self.forwarded = 0

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        self.listen.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.listen.is_socket():
                self.listen.unlink()
        old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider access
        try:
            server = await asyncio.start_unix_server(
                self._on_client, path=str(self.listen), limit=_HEAD_LIMIT
            )
        finally:
            os.umask(old_umask)
        if self._socket_group is not None:
            os.chown(self.listen, -1, self._socket_group)
        log.info("gate listening on %s, forwarding to %s", self.listen, self.upstream)
        try:
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=5)
            with contextlib.suppress(OSError):
                self.listen.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, OSError) as exc:
            log.debug("gate client gone: %s", exc)
        except asyncio.CancelledError:
            # Only `run()` cancels handlers (at stop), and nothing awaits this task's result;
            # ending normally keeps asyncio's stream callback (3.11) from logging the cancel.
            log.debug("gate client cut at stop")
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                request = await read_request(reader)
        except (BadRequest, TimeoutError, asyncio.IncompleteReadError) as exc:
            await self._refuse(writer, "?", "?", f"bad request: {exc or 'timeout'}", 400)
            return
        if request is None:
            return
        upgrade = "upgrade" in request.headers.get("connection", "").lower()
        try:
            checked = route(self.policy, request.method, request.target, upgrade=upgrade)
            path, body = await self._authorise(checked, request.body)
        except Refused as exc:
            await self._refuse(writer, request.method, request.target, exc.reason, 403)
            return
        except NotFound as exc:
            await self._refuse(writer, request.method, request.target, exc.reason, 404, event=False)
            return
        except (OSError, TimeoutError) as exc:
            reason = f"engine unreachable: {exc or 'timeout'}"
            await self._refuse(writer, request.method, request.target, reason, 502, event=False)
            return
        if checked.kind != "create":
            self.forwarded += 1
            await self._forward(checked, path, body, reader, writer)
            return
        async with self._create_lock:
            try:
                check_capacity(self.policy, await self._sandboxes())
            except Refused as exc:
                await self._refuse(writer, request.method, request.target, exc.reason, 403)
                return
            except (OSError, TimeoutError) as exc:
                reason = f"engine unreachable: {exc or 'timeout'}"
                await self._refuse(writer, request.method, request.target, reason, 502, event=False)
                return
            self.forwarded += 1
            try:
                async with asyncio.timeout(_CREATE_TIMEOUT):  # never hold the lock for long
                    await self._forward(checked, path, body, reader, writer)
            except TimeoutError:
                name = ((checked.query or {}).get("name") or [""])[0]
                log.warning("gate: create of %r took over %.0fs; dropped", name, _CREATE_TIMEOUT)
                await self._remove_late(name)

    async def _remove_late(self, name: str) -> None:
        """A create the client stopped waiting for may still complete: nobody would own it."""
        if not name:
            return
        try:
            container_id = await self._owned_container(name)
            status, _ = await self._upstream_json(
                f"containers/{container_id}?force=1", method="DELETE"
            )
            log.info("gate: removed late sandbox %r (engine status %s)", name, status)
        except (Refused, NotFound, OSError, TimeoutError) as exc:
            log.info("gate: late sandbox %r not removed: %s", name, exc)

    async def _sandboxes(self) -> list[dict[str, Any]]:
        """This sensor's sandboxes in every state, as the engine lists them."""
        filters = quote(json.dumps({"label": list(self.policy.labels)}, separators=(",", ":")))
        status, items = await self._upstream_json(f"containers/json?all=1&filters={filters}")
        if status != 200 or not isinstance(items, list):
            # The engine's trouble, not a policy decision: a 502 without a gate.refused event.
            raise ConnectionError(f"cannot list this sensor's sandboxes (engine status {status})")
        return [item for item in items if isinstance(item, dict)]

    async def _authorise(self, checked: Route, body: bytes) -> tuple[str, bytes]:
        """The upstream path (references resolved to full ids) and the re-encoded body."""
        version = self.policy.api_version
        query = encode_query(checked.query)
        if checked.kind == "plain":
            return f"/{version}/{checked.path}", b""
        if checked.kind == "list":
            return f"/{version}/{checked.path}{query}", b""
        if checked.kind == "create":
            data = parse_body(body, "create")
            check_create(self.policy, data)
            return f"/{version}/containers/create{query}", encode_body(data)
        if checked.kind in ("container", "exec_create"):
            container_id = await self._owned_container(checked.target)
            if checked.action == "" and checked.method == "DELETE":
                self._owned.pop(container_id, None)
            out_body = b""
            if checked.kind == "exec_create":
                data = parse_body(body, "exec")
                check_exec(data)
                out_body = encode_body(data)
            return f"/{version}/{container_path(checked, container_id)}{query}", out_body
        # exec/{id}/...
        await self._owned_exec(checked.target)
        out_body = b""
        if checked.action == "start":
            data = parse_body(body, "exec start")
            check_exec_start(data)
            out_body = encode_body(data)
        return f"/{version}/exec/{checked.target}/{checked.action}{query}", out_body

    async def _owned_container(self, ref: str) -> str:
        if is_full_id(ref) and ref in self._owned:
            self._owned.move_to_end(ref)
            return ref
        status, details = await self._upstream_json(f"containers/{ref}/json")
        if status == 404:
            raise NotFound(f"no such container: {ref[:64]}")
        if status != 200 or not isinstance(details, dict):
            raise Refused(f"cannot inspect container {ref[:64]!r} (engine status {status})")
        if not is_ours(self.policy, details):
            raise Refused(
                f"container {ref[:64]!r} is not a sandbox of sensor {self.policy.sensor!r}"
            )
        container_id = str(details.get("Id", ""))
        if not is_full_id(container_id):
            raise Refused("engine returned no container id")
        self._remember(self._owned, container_id, None)
        return container_id

    async def _owned_exec(self, exec_id: str) -> None:
        container_id = self._exec_owner.get(exec_id)
        if container_id is None:
            status, details = await self._upstream_json(f"exec/{exec_id}/json")
            if status == 404:
                raise NotFound(f"no such exec instance: {exec_id[:64]}")
            if status != 200 or not isinstance(details, dict):
                raise Refused(f"no such exec instance {exec_id[:64]!r} (engine status {status})")
            container_id = str(details.get("ContainerID", ""))
        await self._owned_container(container_id)
        self._remember(self._exec_owner, exec_id, container_id)

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parsed = urlparse(self.upstream)
        if parsed.scheme in ("unix", ""):
            return await asyncio.open_unix_connection(
                parsed.path or "/var/run/docker.sock", limit=_HEAD_LIMIT
            )
        port = parsed.port or 2375
        return await asyncio.open_connection(parsed.hostname, port, limit=_HEAD_LIMIT)

    async def _upstream_json(self, path: str, method: str = "GET") -> tuple[int, Any]:
        """The gate's own request (HTTP/1.0: no chunking, the engine closes after the body)."""
        reader, writer = await self._open_upstream()
        try:
            writer.write(
                f"{method} /{self.policy.api_version}/{path} HTTP/1.0\r\n"
                "Host: docker\r\n\r\n".encode()
            )
            await writer.drain()
            async with asyncio.timeout(60):
                raw = await reader.read(-1)
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
            return status, json.loads(body) if body else None
        except (IndexError, ValueError):
            return 502, None

    async def _forward(
        self,
        checked: Route,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError as exc:
            await self._refuse(
                writer, checked.method, path, f"engine unreachable: {exc}", 502, event=False
            )
            return
        try:
            head = [f"{checked.method} {path} HTTP/1.1", "Host: docker"]
            if body:
                head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += (
                ["Connection: Upgrade", "Upgrade: tcp"]
                if checked.upgrade
                else ["Connection: close"]
            )
            up_writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await up_writer.drain()
            if checked.upgrade:
                await self._relay_upgraded(reader, writer, up_reader, up_writer)
            else:
                await _pump(up_reader, writer)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await up_writer.wait_closed()

    async def _relay_upgraded(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """After the engine's 101, bytes both ways as they come; EOF from either side is passed
        on as a half-close, and the relay ends when the engine ends the stream."""
        async with asyncio.timeout(60):
            head = await up_reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            await _pump(up_reader, writer)
            return

        async def client_to_engine() -> None:
            await _pump(reader, up_writer)
            with contextlib.suppress(OSError, RuntimeError):
                if up_writer.can_write_eof():
                    up_writer.write_eof()

        upward = asyncio.create_task(client_to_engine(), name="gate-stdin")
        try:
            await _pump(up_reader, writer)
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
        finally:
            upward.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await upward

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        reason: str,
        status: int,
        *,
        event: bool = True,
    ) -> None:
        message = reason if status == 404 else f"sandtrap gate: refused: {reason}"
        if event:
            self.refused += 1
            pid, uid = peer_credentials(writer)
            log.warning("gate refused %s %r from pid %s: %s", method, target[:300], pid, reason)
            self._events.emit(
                GateRefused(
                    method=method[:16],
                    path=target[:1024],
                    reason=reason,
                    client_pid=pid,
                    client_uid=uid,
                )
            )
        payload = json.dumps({"message": message}).encode()
        phrase = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 502: "Bad Gateway"}[
            status
        ]
        writer.write(
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until EOF on `source`; a sink that went away ends the copy quietly."""
    while data := await source.read(_READ_SIZE):
        try:
            sink.write(data)
            await sink.drain()
        except (ConnectionError, OSError):
            return
