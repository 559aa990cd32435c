"""The gate's server: a Unix-socket HTTP server that forwards allowed Engine API requests upstream.

Owns the listening socket, the caps on connections and buffered body bytes, one request per
connection (`Connection: close`), the ownership caches, the capacity count on every create and
start, and the aggregated `gate.refused` events. What is allowed is decided in gate/policy.py and
gate/bodies.py; the engine side is gate/upstream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sandtrap.events import EventSink, GateRefused
from sandtrap.gate.bodies import (
    check_capacity,
    create_body,
    encode_body,
    exec_create_body,
    exec_start_request_body,
    max_body_bytes,
    parse_body,
)
from sandtrap.gate.http import (
    BadRequest,
    Request,
    answer_head,
    linger,
    peer_credentials,
    read_head,
    trim_heap,
)
from sandtrap.gate.policy import (
    GatePolicy,
    NotFound,
    Refused,
    Route,
    container_path,
    encode_query,
    is_full_id,
    is_ours,
    is_sinkhole,
    route,
)
from sandtrap.gate.refusals import REFUSAL_INTERVAL_SECONDS, RefusalAggregator
from sandtrap.gate.sealing import Sealer
from sandtrap.gate.upstream import STREAM_LIMIT, Upstream

log = logging.getLogger(__name__)


# A request (head and body) must arrive within this; a slow client cannot hold a slot longer.
REQUEST_TIMEOUT_SECONDS = 30.0
# Body bytes buffered by all connections together (each body is also capped per route).
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
_CACHE_SIZE = 4096
# After a burst of at least this many connections, once it has passed, free memory goes back.
_TRIM_AFTER = 64
_CREATE_TIMEOUT = 120.0
_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _Answer(Exception):
    """End the request with this status and message (a refusal when `rule` is set)."""

    def __init__(self, status: int, reason: str, rule: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.rule = status, reason, rule


class Gate:
    """The policy-checking proxy. Constructing it does no I/O; `run()` serves until `stop` is set.

    At most `max_connections` clients are served at once (the next ones get a 503 at once);
    each connection is one request, its body capped per route and all bodies together by
    MAX_BUFFERED_BYTES. Handler tasks are owned by the gate; `run()` cancels the ones still open
    (hijacked exec streams) after `stop`, once the listener is closed, and writes pending
    refusal counts.
    """

    def __init__(
        self,
        policy: GatePolicy,
        listen: Path,
        upstream: str,
        events: EventSink,
        socket_group: int | None = None,
        *,
        max_connections: int = 1024,
        sealer: Sealer | None = None,
    ) -> None:
        self.policy = policy
        self.sealer = sealer  # sinkhole mode: starts go through it (gate/sealing.py)
        self.listen = listen
        self.upstream = Upstream(upstream, policy.api_version)
        self._events = events
        self._socket_group = socket_group
        self._max_connections = max_connections
        self._owned: OrderedDict[str, None] = OrderedDict()
        self._exec_owner: OrderedDict[str, str] = OrderedDict()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._buffered = 0
        self._peak_connections = 0
        # Creates and starts are counted and forwarded one at a time, so concurrent ones cannot
        # all pass the capacity check (they happen at warm time or on a sticky re-login).
        self._state_lock = asyncio.Lock()
        self._refusals = RefusalAggregator(time.monotonic, REFUSAL_INTERVAL_SECONDS)
        self.forwarded = 0

    @property
    def refused(self) -> int:
        return self._refusals.total

    def statistics(self) -> tuple[int, int]:
        """(open connections, body bytes buffered now)."""
        return len(self._handlers), self._buffered

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        self.listen.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.listen.is_socket():
                self.listen.unlink()
        old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider access
        try:
            server = await asyncio.start_unix_server(
                self._on_client,
                path=str(self.listen),
                limit=STREAM_LIMIT,
                # A burst waits in the kernel's queue rather than failing to connect (EAGAIN).
                backlog=self._max_connections,
            )
        finally:
            os.umask(old_umask)
        if self._socket_group is not None:
            os.chown(self.listen, -1, self._socket_group)
        log.info("gate listening on %s, forwarding to %s", self.listen, self.upstream.url)
        flusher = asyncio.create_task(self._flush_refusals(), name="gate-refusals")
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
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            for event in self._refusals.due(flush=True):
                self._emit(event)
            with contextlib.suppress(OSError):
                self.listen.unlink()

    async def _flush_refusals(self) -> None:
        """Aggregated refusal events when due; the heap handed back after a burst."""
        while True:
            due = self._refusals.next_due()
            await asyncio.sleep(1.0 if due is None else min(due, 1.0))
            for event in self._refusals.due():
                self._emit(event)
            if self._peak_connections >= _TRIM_AFTER and len(self._handlers) < _TRIM_AFTER // 4:
                self._peak_connections = len(self._handlers)
                trim_heap()

    def _emit(self, event: GateRefused) -> None:
        log.warning(
            "gate refused %d request(s) by rule %s, e.g. %s %r from pid %s: %s",
            event.count, event.rule, event.method, event.path[:300], event.client_pid,
            event.reason,
        )  # fmt: skip
        self._events.emit(event)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        busy = len(self._handlers) >= self._max_connections
        if task is not None and not busy:
            self._handlers.add(task)
            self._peak_connections = max(self._peak_connections, len(self._handlers))
        try:
            if busy:
                # No lingering here: that would make a task per refused connection outlive it.
                reason = f"{self._max_connections} connections open; try again later"
                await self._answer(writer, "?", "?", _Answer(503, reason, "busy"))
            else:
                await self._serve_one(reader, writer)
                await linger(reader, writer)
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
        method, target = "?", "?"
        reserved = 0
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    request = await read_head(reader)
                    if request is None:
                        return
                    method, target = request.method, request.target
                    checked = route(self.policy, request.method, request.target,
                                    upgrade=request.upgrade)  # fmt: skip
                    reserved = self._reserve(request, checked)
                    body = await reader.readexactly(reserved) if reserved else b""
            except TimeoutError:
                raise _Answer(408, "request not received in time", "request") from None
            except asyncio.IncompleteReadError:
                raise _Answer(400, "request body cut short", "request") from None
            except BadRequest as exc:
                raise _Answer(400, f"bad request: {exc}", "request") from None
            path, out_body = await self._authorise(checked, body)
            self._release(reserved)
            reserved = 0
            await self._forward(checked, path, out_body, reader, writer)
        except Refused as exc:
            await self._answer(writer, method, target, _Answer(403, exc.reason, exc.rule))
        except NotFound as exc:
            await self._answer(writer, method, target, _Answer(404, exc.reason))
        except _Answer as answer:
            await self._answer(writer, method, target, answer)
        except (OSError, TimeoutError) as exc:
            reason = f"engine unreachable: {exc or 'timeout'}"
            await self._answer(writer, method, target, _Answer(502, reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every request gets an answer, never a dropped socket
            log.exception("gate: unexpected error on %s %r", method, target[:300])
            reason = f"internal error: {type(exc).__name__}"
            await self._answer(writer, method, target, _Answer(500, reason, "request"))
        finally:
            self._release(reserved)

    def _reserve(self, request: Request, checked: Route) -> int:
        """Account the declared body against its route's cap and the gate's total budget."""
        length = request.content_length
        limit = max_body_bytes(checked.kind, checked.action)
        if length > limit:
            raise _Answer(413, f"body of {length} bytes; this endpoint takes {limit}", "request")
        if self._buffered + length > MAX_BUFFERED_BYTES:
            raise _Answer(503, "too many body bytes buffered; try again later", "busy")
        self._buffered += length
        return length

    def _release(self, reserved: int) -> None:
        self._buffered -= reserved

    async def _forward(
        self,
        checked: Route,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if checked.kind == "info":
            payload = json.dumps({"DockerRootDir": self.policy.docker_root_dir}).encode()
            writer.write(answer_head(200, "OK", len(payload)) + payload)
            await writer.drain()
            return
        starting = checked.kind == "container" and checked.action == "start"
        if checked.kind != "create" and not starting:
            self.forwarded += 1
            await self.upstream.forward(checked.method, path, body, checked.upgrade, reader,
                                        writer)  # fmt: skip
            return
        sealer = self.sealer if starting else None
        async with self._state_lock:
            target = path.split("/")[3] if starting else None
            check_capacity(self.policy, await self._sandboxes(), starting=target)
            self.forwarded += 1
            if sealer is not None:
                async with asyncio.timeout(_CREATE_TIMEOUT):
                    status, data = await self.upstream.json(
                        f"containers/{target}/start", method="POST"
                    )
            else:
                try:
                    async with asyncio.timeout(_CREATE_TIMEOUT):  # never hold the lock for long
                        await self.upstream.forward(
                            checked.method, path, body, False, reader, writer
                        )
                except TimeoutError:
                    if starting:
                        raise
                    name = ((checked.query or {}).get("name") or [""])[0]
                    log.warning(
                        "gate: create of %r took over %.0fs; dropped", name, _CREATE_TIMEOUT
                    )
                    await self._remove_late(name)
                return
        # Sealed outside the lock (other starts go on), answered only once sealed.
        writer.write(await sealer.answer(self.upstream, str(target), status, data))
        await writer.drain()

    async def _remove_late(self, name: str) -> None:
        """A create the client stopped waiting for may still complete: nobody would own it."""
        if not name:
            return
        try:
            container_id = await self._owned_container(name)
            status, _ = await self.upstream.json(
                f"containers/{container_id}?force=1", method="DELETE"
            )
            log.info("gate: removed late sandbox %r (engine status %s)", name, status)
        except (Refused, NotFound, OSError, TimeoutError) as exc:
            log.info("gate: late sandbox %r not removed: %s", name, exc)

    async def _sandboxes(self) -> list[dict[str, Any]]:
        """This sensor's sandboxes in every state, as the engine lists them."""
        filters = quote(json.dumps({"label": list(self.policy.labels)}, separators=(",", ":")))
        status, items = await self.upstream.json(f"containers/json?all=1&filters={filters}")
        if status != 200 or not isinstance(items, list):
            # The engine's trouble, not a policy decision: a 502 without a gate.refused event.
            raise ConnectionError(f"cannot list this sensor's sandboxes (engine status {status})")
        return [item for item in items if isinstance(item, dict)]

    async def _authorise(self, checked: Route, body: bytes) -> tuple[str, bytes]:
        """The upstream path (references resolved to full ids) and the gate's own body."""
        version = self.policy.api_version
        query = encode_query(checked.query)
        if checked.kind in ("plain", "info"):
            return f"/{version}/{checked.path}", b""
        if checked.kind == "list":
            return f"/{version}/{checked.path}{query}", b""
        if checked.kind == "create":
            data = create_body(self.policy, parse_body(body, "create", "create"))
            return f"/{version}/containers/create{query}", encode_body(data)
        if checked.kind == "sinkhole_logs":
            status, details = await self.upstream.json(f"containers/{checked.target}/json")
            found = isinstance(details, dict) and is_sinkhole(self.policy, details)
            if status != 200 or not found or not is_full_id(str(details.get("Id"))):
                raise NotFound(f"no sinkhole container {checked.target[:64]}")
            return f"/{version}/containers/{details['Id']}/logs{query}", b""
        if checked.kind in ("container", "exec_create"):
            container_id = await self._owned_container(checked.target)
            if checked.action == "" and checked.method == "DELETE":
                self._owned.pop(container_id, None)
            out_body = b""
            if checked.kind == "exec_create":
                out_body = encode_body(exec_create_body(parse_body(body, "exec", "exec")))
            return f"/{version}/{container_path(checked, container_id)}{query}", out_body
        # exec/{id}/...
        await self._owned_exec(checked.target)
        out_body = b""
        if checked.action == "start":
            data = exec_start_request_body(parse_body(body, "exec start", "exec"))
            out_body = encode_body(data)
        return f"/{version}/exec/{checked.target}/{checked.action}{query}", out_body

    async def _owned_container(self, ref: str) -> str:
        if is_full_id(ref) and ref in self._owned:
            self._owned.move_to_end(ref)
            return ref
        status, details = await self.upstream.json(f"containers/{ref}/json")
        if status == 404:
            raise NotFound(f"no such container: {ref[:64]}")
        if status != 200 or not isinstance(details, dict):
            raise Refused(
                f"cannot inspect container {ref[:64]!r} (engine status {status})", "ownership"
            )
        if not is_ours(self.policy, details):
            raise Refused(
                f"container {ref[:64]!r} is not a sandbox of sensor {self.policy.sensor!r}",
                "ownership",
            )
        container_id = str(details.get("Id", ""))
        if not is_full_id(container_id):
            raise Refused("engine returned no container id", "ownership")
        self._remember(self._owned, container_id, None)
        return container_id

    async def _owned_exec(self, exec_id: str) -> None:
        container_id = self._exec_owner.get(exec_id)
        if container_id is None:
            status, details = await self.upstream.json(f"exec/{exec_id}/json")
            if status == 404:
                raise NotFound(f"no such exec instance: {exec_id[:64]}")
            if status != 200 or not isinstance(details, dict):
                raise Refused(
                    f"no such exec instance {exec_id[:64]!r} (engine status {status})", "ownership"
                )
            container_id = str(details.get("ContainerID", ""))
            if not is_full_id(container_id):
                raise Refused("engine named no container for the exec", "ownership")
        await self._owned_container(container_id)
        self._remember(self._exec_owner, exec_id, container_id)

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    async def _answer(
        self, writer: asyncio.StreamWriter, method: str, target: str, answer: _Answer
    ) -> None:
        """Answer with `answer.status`; a refusal (a rule) is also counted for the events."""
        message = (
            answer.reason if answer.status == 404 else f"sandtrap gate: refused: {answer.reason}"
        )
        if answer.rule is not None:
            pid, uid = peer_credentials(writer)
            event = GateRefused(
                method=method[:16],
                path=target[:1024],
                reason=answer.reason[:2048],
                rule=answer.rule,
                client_pid=pid,
                client_uid=uid,
            )
            now = self._refusals.record(event)
            if now is not None:
                self._emit(now)
        payload = json.dumps({"message": message}).encode()
        writer.write(answer_head(answer.status, _PHRASES[answer.status], len(payload)) + payload)
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()
