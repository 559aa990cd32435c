"""The pre-warmed sandbox pool: allocation, background refill, health, release and retention.

Owns the set of sandbox containers SandTrap runs. Decisions (how many to create, which image,
what to prune) are pure functions at the top; the `Pool` class does the I/O. Its service-long
tasks (refill, health) run in a TaskGroup owned by `Pool.run()`; session-scoped watchers (a
sandbox that dies or outgrows its disk budget) are owned by the pool too, cancelled on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandtrap.config import Config, WeightedImage
from sandtrap.errors import EngineUnavailable, PoolExhausted, SandboxError, SandboxGone
from sandtrap.events import (
    EventSink,
    Peer,
    SandboxAllocated,
    SandboxFailure,
    SandboxReleased,
)
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.forensics import capture_changes
from sandtrap.sandbox.hardening import (
    LABEL_LOG_HOSTNAME,
    POOL_PREFIX,
    SESSION_PREFIX,
    HostnamePicker,
    blkio_device_for,
    container_body,
    parse_session_name,
    pool_name,
    prepare,
    sandbox_labels,
    session_name,
)
from sandtrap.sandbox.retention import enforce_retention
from sandtrap.sandbox.watch import InUse, watch_in_use

log = logging.getLogger(__name__)

_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0


def plan_refill(
    images: Sequence[WeightedImage],
    idle: dict[str, int],
    creating: dict[str, int],
    pool_size: int,
    room: int,
) -> list[str]:
    """Which images to create now so each image's warm share approaches its weight.

    Args:
        idle, creating: counts per image.
        pool_size: target number of warm sandboxes in all.
        room: how many more containers the max_sandboxes cap allows.
    """
    total_weight = sum(item.weight for item in images)
    have = {item.image: idle.get(item.image, 0) + creating.get(item.image, 0) for item in images}
    wanted = max(0, min(pool_size - sum(have.values()), room))
    plan: list[str] = []
    for _ in range(wanted):
        # The image furthest below its share gets the next slot (largest remainder).
        image = max(
            images,
            key=lambda item: pool_size * item.weight / total_weight - have[item.image],
        ).image
        have[image] += 1
        plan.append(image)
    return plan


@dataclass
class _Sticky:
    """A source IP's own sandbox in sticky mode: in use, being released, or stopped and kept."""

    sandbox: ContainerSandbox
    released_at: float | None = None
    releasing: asyncio.Event | None = None


@dataclass(frozen=True)
class PoolStatistics:
    idle: int
    busy: int
    creating: int
    created_total: int
    errors_total: int
    engine_ok: bool


@dataclass
class _Counters:
    created: int = 0
    errors: int = 0
    engine_ok: bool = False
    last_error: str = ""
    by_image_creating: dict[str, int] = field(default_factory=dict)


class Pool:
    """Keeps `pool.size` warm sandboxes and hands them to sessions (implements SandboxProvider).

    `run()` owns the background tasks and returns only when cancelled; `shutdown()` then removes
    pool members and stops session sandboxes.
    """

    def __init__(self, config: Config, engine: ContainerEngine, events: EventSink) -> None:
        self._config = config
        self._engine = engine
        self._events = events
        self._images = config.sandbox.weighted_images()
        self._idle: dict[str, deque[ContainerSandbox]] = {i.image: deque() for i in self._images}
        self._busy: dict[str, InUse] = {}
        self._sticky: dict[str, _Sticky] = {}
        self._counters = _Counters()
        self._wanted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._hostnames = HostnamePicker(config.sandbox)
        self._rng = random.Random()  # noqa: S311 - image choice by weight, not security
        self._blkio: str | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._artifacts = config.storage.data_dir / "artifacts"
        self._log_hostnames: dict[str, str | None] = {}
        self._generation = 0
        self._create_slots = asyncio.Semaphore(config.pool.create_concurrency)
        self._pruning = asyncio.Lock()
        self._born: dict[str, int] = {}

    # --- pure views ------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            idle=sum(len(q) for q in self._idle.values()),
            busy=len(self._busy),
            creating=sum(self._counters.by_image_creating.values()),
            created_total=self._counters.created,
            errors_total=self._counters.errors,
            engine_ok=self._counters.engine_ok,
        )

    async def wait_warm(self, count: int | None = None) -> None:
        """Wait until at least `count` (default: pool.size) sandboxes are idle and ready."""
        want = self._config.pool.size if count is None else count
        async with self._changed:
            await self._changed.wait_for(lambda: self.statistics().idle >= want)

    def _room(self) -> int:
        stats = self.statistics()
        return self._config.pool.max_sandboxes - stats.idle - stats.busy - stats.creating

    # --- service life ----------------------------------------------------------------------

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Reconcile, then refill and health-check until cancelled."""
        await self._reconcile_with_retry()
        info = await self._engine.info()
        self._blkio = blkio_device_for(Path(str(info.get("DockerRootDir", "/var/lib/docker"))))
        for item in self._images:
            self._log_hostnames[item.image] = await self._engine.image_label(
                item.image, LABEL_LOG_HOSTNAME
            )
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            tasks.create_task(self._refill_loop(), name="pool-refill")
            tasks.create_task(self._health_loop(), name="pool-health")
            if started is not None:
                started.set()
            self._wanted.set()

    async def _reconcile_with_retry(self) -> None:
        delay = _BACKOFF_START
        while True:
            try:
                await self.reconcile()
                self._counters.engine_ok = True
                return
            except SandboxError as exc:
                self._engine_failed("reconcile", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def reconcile(self) -> None:
        """Start-up: remove pool members of earlier runs, stop and keep their session sandboxes."""
        for item in await self._engine.containers(*sandbox_labels(self._config.sensor)):
            name = (item.get("Names") or ["/"])[0].lstrip("/")
            cid = str(item["Id"])
            if name.startswith(POOL_PREFIX):
                log.info("removing stale pool member %s", name)
                await self._engine.remove(cid)
            elif name.startswith(SESSION_PREFIX) and item.get("State") == "running":
                log.info("stopping session sandbox %s left running by an earlier run", name)
                await self._engine.stop(cid)
        await self.prune()

    async def shutdown(self) -> None:
        """Remove idle members, stop busy sandboxes (kept). Safe to call once run() is cancelled."""
        for queue in self._idle.values():
            while queue:
                sandbox = queue.popleft()
                with contextlib.suppress(SandboxError):
                    await self._engine.remove(sandbox.id)
        for busy in list(self._busy.values()):
            for peer in list(busy.sessions.values()):
                await self.release(busy.sandbox, peer)

    async def prune(self) -> list[str]:
        """Apply the retention policy now; returns the ids removed.

        One at a time: sessions that end together would otherwise race to remove the same
        oldest sandbox.
        """
        async with self._pruning:
            return await enforce_retention(
                self._engine, self._config.retention, self._events, self._config.sensor
            )

    def _engine_failed(self, operation: str, exc: Exception) -> None:
        self._counters.errors += 1
        if isinstance(exc, EngineUnavailable):
            self._counters.engine_ok = False
            # Containers may not survive an engine outage: members from before it are checked
            # before they are handed out.
            self._generation += 1
        message = str(exc)
        if message != self._counters.last_error:
            log.error("%s failed: %s", operation, message)
            self._events.emit(SandboxFailure(peer=None, operation=operation, error=message[:500]))
        self._counters.last_error = message

    # --- refill ------------------------------------------------------------------------------

    async def _refill_loop(self) -> None:
        delay = _BACKOFF_START
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            idle = {image: len(queue) for image, queue in self._idle.items()}
            plan = plan_refill(
                self._images,
                idle,
                self._counters.by_image_creating,
                self._config.pool.size,
                self._room(),
            )
            if not plan:
                continue
            results = await asyncio.gather(
                *(self._create_limited(image) for image in plan), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure
                self._engine_failed("create", failure)
            if failures:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            else:
                delay = _BACKOFF_START
                self._counters.engine_ok = True
                self._counters.last_error = ""
            self._wanted.set()

    async def _create_limited(self, image: str) -> None:
        # The engine serialises much of container start-up; a few at a time refill fastest and
        # leave the CPU to the sessions being served meanwhile.
        async with self._create_slots:
            await self._create_one(image)

    async def _create_one(self, image: str) -> None:
        creating = self._counters.by_image_creating
        creating[image] = creating.get(image, 0) + 1
        container_id = None
        try:
            hostname = self._hostnames.pick()
            body = container_body(
                self._config.sandbox,
                image=image,
                hostname=hostname,
                sensor=self._config.sensor,
                created=datetime.now(UTC),
                blkio_device=self._blkio,
            )
            container_id = await self._engine.create(body, pool_name())
            await self._engine.start(container_id)
            prepared = await prepare(
                self._engine, container_id, hostname, self._log_hostnames.get(image)
            )
            sandbox = ContainerSandbox(self._engine, container_id, hostname, image)
            sandbox.baseline.update(prepared.baseline)
            sandbox.users.update(prepared.homes)
            self._born[container_id] = self._generation
        except BaseException:
            if container_id is not None:
                with contextlib.suppress(SandboxError):
                    await asyncio.shield(self._engine.remove(container_id))
            raise
        finally:
            creating[image] -= 1
        self._counters.created += 1
        self._idle[image].append(sandbox)
        async with self._changed:
            self._changed.notify_all()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.pool.health_interval_seconds)
            for queue in self._idle.values():
                for sandbox in list(queue):
                    try:
                        state = (await self._engine.inspect(sandbox.id)).get("State", {})
                        healthy = bool(state.get("Running"))
                    except SandboxGone:
                        healthy = False
                    except SandboxError as exc:
                        self._engine_failed("health", exc)
                        continue
                    if healthy:
                        self._born[sandbox.id] = self._generation
                        self._counters.engine_ok = True
                    elif sandbox in queue:
                        log.warning("replacing unhealthy pool member %s", sandbox.id[:12])
                        queue.remove(sandbox)
                        self._born.pop(sandbox.id, None)
                        with contextlib.suppress(SandboxError):
                            await self._engine.remove(sandbox.id)
                        self._wanted.set()
            self._forget_expired_sticky()

    def _forget_expired_sticky(self) -> None:
        cutoff = time.monotonic() - self._config.pool.sticky_ttl_seconds
        expired = [
            ip
            for ip, entry in self._sticky.items()
            if entry.released_at is not None and entry.released_at < cutoff
        ]
        for ip in expired:
            del self._sticky[ip]

    # --- allocation ---------------------------------------------------------------------------

    def _take_idle(self) -> ContainerSandbox | None:
        ready = [item for item in self._images if self._idle[item.image]]
        if not ready:
            return None
        choice = self._rng.choices(ready, weights=[item.weight for item in ready])[0]
        return self._idle[choice.image].popleft()

    async def allocate(self, peer: Peer) -> ContainerSandbox:
        started = time.monotonic()
        sandbox = None
        if self._config.pool.sticky:
            try:
                async with asyncio.timeout(self._config.pool.allocate_timeout_seconds):
                    sandbox = await self._sticky_sandbox(peer)
            except TimeoutError:
                log.warning(
                    "sticky sandbox for %s still being released; using a fresh one", peer.src_ip
                )
        sticky = sandbox is not None
        if sandbox is not None and sandbox.id in self._busy:
            # The IP's sandbox is in use by another of its connections: one machine, shared.
            self._busy[sandbox.id].sessions[peer.session_id] = peer
        else:
            if sandbox is None:
                sandbox = await self._wait_idle(peer)
            await self._take_busy(sandbox, peer, rename=not sticky)
        if self._config.pool.sticky:
            self._sticky[peer.src_ip] = _Sticky(sandbox)
        self._wanted.set()
        self._events.emit(
            SandboxAllocated(
                peer=peer,
                container_id=sandbox.id,
                hostname=sandbox.hostname,
                image=sandbox.image,
                wait_ms=round((time.monotonic() - started) * 1000, 3),
                sticky=sticky,
            )
        )
        return sandbox

    async def _take_busy(self, sandbox: ContainerSandbox, peer: Peer, rename: bool) -> None:
        # Counted as busy before the first await, so the max_sandboxes cap never sees it missing.
        busy = InUse(sandbox, {peer.session_id: peer}, time.monotonic())
        self._busy[sandbox.id] = busy
        try:
            if rename:
                name = session_name(peer.session_id, peer.src_ip)
                await self._engine.rename(sandbox.id, name)
                sandbox.name = name
        except SandboxError:
            # A sandbox we cannot rename still works; reconciliation would treat it as a pool
            # member, so record the failure and carry on with it.
            log.warning(
                "could not rename sandbox %s for session %s", sandbox.id[:12], peer.session_id
            )
        except BaseException:
            # Cancelled mid-allocation: nobody will release it, so it must not outlive us.
            self._busy.pop(sandbox.id, None)
            with contextlib.suppress(SandboxError):
                await asyncio.shield(self._engine.remove(sandbox.id))
            self._wanted.set()
            raise
        if self._tasks is not None:
            busy.watcher = self._tasks.create_task(
                watch_in_use(
                    busy,
                    self._engine,
                    self._config.sandbox,
                    self._events,
                    self._engine_failed,
                ),
                name=f"watch-{peer.session_id}",
            )

    async def _wait_idle(self, peer: Peer) -> ContainerSandbox:
        self._wanted.set()
        try:
            async with asyncio.timeout(self._config.pool.allocate_timeout_seconds):
                while True:
                    async with self._changed:
                        while (sandbox := self._take_idle()) is None:
                            self._wanted.set()
                            await self._changed.wait()
                    if await self._still_alive(sandbox):
                        break
        except TimeoutError:
            raise PoolExhausted(
                f"no sandbox within {self._config.pool.allocate_timeout_seconds}s "
                f"for session {peer.session_id}"
            ) from None
        return sandbox

    async def _still_alive(self, sandbox: ContainerSandbox) -> bool:
        """True unless the member predates an engine outage and did not survive it."""
        if self._born.get(sandbox.id, self._generation) == self._generation:
            return True
        try:
            running = bool((await self._engine.inspect(sandbox.id)).get("State", {}).get("Running"))
        except SandboxError:
            running = False
        if running:
            self._born[sandbox.id] = self._generation
            return True
        log.warning("pool member %s did not survive an engine outage", sandbox.id[:12])
        self._born.pop(sandbox.id, None)
        with contextlib.suppress(SandboxError):
            await self._engine.remove(sandbox.id)
        self._wanted.set()
        return False

    async def _sticky_sandbox(self, peer: Peer) -> ContainerSandbox | None:
        """The source IP's own sandbox: shared while in use, restarted once it was stopped."""
        entry = self._sticky.get(peer.src_ip)
        if entry is None:
            return None
        if entry.releasing is not None:
            await entry.releasing.wait()
        if entry.sandbox.id in self._busy:
            return entry.sandbox
        ttl = self._config.pool.sticky_ttl_seconds
        if entry.released_at is not None and time.monotonic() - entry.released_at > ttl:
            del self._sticky[peer.src_ip]
            return None
        if self._room() <= 0:
            return None
        try:
            state = (await self._engine.inspect(entry.sandbox.id)).get("State", {})
            if not state.get("Running"):
                await self._engine.start(entry.sandbox.id)
        except SandboxError as exc:
            log.info("sticky sandbox for %s unusable (%s); using a fresh one", peer.src_ip, exc)
            self._sticky.pop(peer.src_ip, None)
            return None
        return entry.sandbox

    # --- release ------------------------------------------------------------------------------

    async def release(self, sandbox: Any, peer: Peer) -> None:
        busy = self._busy.get(sandbox.id)
        if busy is not None:
            busy.sessions.pop(peer.session_id, None)
            if busy.sessions:
                return  # another connection of the same source IP still uses it
            del self._busy[sandbox.id]
            self._born.pop(sandbox.id, None)
            if busy.watcher is not None:
                busy.watcher.cancel()
        entry = self._sticky.get(peer.src_ip)
        if entry is not None and entry.sandbox.id != sandbox.id:
            entry = None
        if entry is not None:
            entry.releasing = asyncio.Event()
        try:
            await self._stop_and_record(sandbox, peer)
        finally:
            if entry is not None and entry.releasing is not None:
                entry.released_at = time.monotonic()
                entry.releasing.set()
                entry.releasing = None
        self._wanted.set()
        try:
            await self.prune()
        except SandboxError as exc:
            self._engine_failed("prune", exc)

    async def _stop_and_record(self, sandbox: Any, peer: Peer) -> None:
        stopped = False
        try:
            await self._engine.stop(sandbox.id, timeout_seconds=1)
            stopped = True
        except SandboxGone:
            pass
        except SandboxError as exc:
            self._engine_failed("stop", exc)
        self._events.emit(
            SandboxReleased(
                peer=peer,
                container_id=sandbox.id,
                stopped=stopped,
            )
        )
        if isinstance(sandbox, ContainerSandbox):
            try:
                await capture_changes(
                    self._engine,
                    sandbox,
                    peer,
                    self._events,
                    self._artifacts,
                    self._config.sandbox.artifact_max_bytes,
                )
            except SandboxError as exc:
                self._engine_failed("diff", exc)


__all__ = ["Pool", "PoolStatistics", "parse_session_name", "plan_refill"]
