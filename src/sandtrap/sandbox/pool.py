"""The pre-warmed sandbox pool's async shell: allocation, background refill, health and release.

Decisions live in `sandbox/poolstate.py`; this module does the engine I/O they call for, over any
`ContainerEngine`. Service-long tasks (refill, health) run in a TaskGroup owned by `Pool.run()`;
session-scoped watchers (`sandbox/watch.py`) belong to that TaskGroup too, cancelled on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence

from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable, PoolExhausted, SandboxError, SandboxGone
from sandtrap.events import EventSink, Peer, SandboxAllocated, SandboxFailure
from sandtrap.paths import DataLayout
from sandtrap.sandbox.base import Sandbox
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.hardening import (
    session_name,
)
from sandtrap.sandbox.lifecycle import ForensicsTurns, reconcile, stop_and_record
from sandtrap.sandbox.maker import SandboxMaker
from sandtrap.sandbox.poolstate import PoolState, PoolStatistics
from sandtrap.sandbox.realism import HostKeyFiles
from sandtrap.sandbox.retention import Retention
from sandtrap.sandbox.sources import SourceLocks
from sandtrap.sandbox.sticky import sticky_sandbox
from sandtrap.sandbox.watch import watch_in_use

log = logging.getLogger(__name__)

_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0


class Pool:
    """Keeps `pool.size` warm sandboxes and hands them to sessions (implements SandboxProvider).

    `run()` owns the background tasks and returns only when cancelled; `shutdown()` then removes
    pool members and stops session sandboxes.
    """

    def __init__(
        self,
        config: Config,
        engine: ContainerEngine,
        events: EventSink,
        *,
        retry_delays: tuple[float, float] = (_BACKOFF_START, _BACKOFF_MAX),
        host_keys: Sequence[HostKeyFiles] = (),
    ) -> None:
        """`retry_delays`: the first and the longest wait before retrying a failing engine
        (doubling in between); tests on the fake engine shorten them. `host_keys`: the files
        each sandbox's /etc/ssh gets (`sandbox.host_keys`, ssh/hostkeys.py)."""
        self._maker = SandboxMaker(config, engine, events, host_keys)
        self._config = config
        self._retry_delays = retry_delays
        self._engine = engine
        self._events = events
        self._images = config.sandbox.weighted_images()
        self._state: PoolState[ContainerSandbox] = PoolState(
            self._images,
            size=config.pool.size,
            max_warm=config.pool.warm_ceiling(),
            grow_window_seconds=config.pool.grow_window_seconds,
            max_sandboxes=config.pool.max_sandboxes,
            sticky_ttl_seconds=config.pool.sticky_ttl_seconds,
            clock=time.monotonic,
            rng=random.Random(),  # noqa: S311 - image choice by weight, not security
        )
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._releasing: dict[str, asyncio.Event] = {}
        self._wanted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: asyncio.TaskGroup | None = None
        self._artifacts = DataLayout(config.storage.data_dir).artifacts
        self._forensics = ForensicsTurns()
        self._retention = Retention(self._engine, config.retention, events, config.sensor)
        self._sources = SourceLocks()

    # --- views -------------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        return self._state.statistics()

    async def wait_warm(self, count: int | None = None) -> None:
        """Wait until at least `count` (default: pool.size) sandboxes are idle and ready."""
        want = self._config.pool.size if count is None else count
        async with self._changed:
            await self._changed.wait_for(lambda: self.statistics().idle >= want)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- service life ----------------------------------------------------------------------

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Reconcile, then refill and health-check until cancelled."""
        await self._reconcile_with_retry()
        await self._maker.learn_engine(self._images)
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            tasks.create_task(self._refill_loop(), name="pool-refill")
            tasks.create_task(self._health_loop(), name="pool-health")
            tasks.create_task(self._retention_loop(), name="pool-retention")
            if started is not None:
                started.set()
            self._wanted.set()

    async def _reconcile_with_retry(self) -> None:
        delay = self._retry_delays[0]
        while True:
            try:
                await self.reconcile()
                self._state.engine_answered()
                return
            except SandboxError as exc:
                self._engine_failed("reconcile", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_delays[1])

    async def reconcile(self) -> None:
        """Start-up: remove pool members of earlier runs, stop and keep their session sandboxes."""
        await reconcile(self._engine, self._config.sensor)
        await self.prune()

    async def shutdown(self) -> None:
        """Remove idle members, stop busy sandboxes (kept). Safe to call once run() is cancelled."""
        for sandbox in self._state.take_all_idle():
            sandbox.close_agent()
            with contextlib.suppress(SandboxError):
                await self._engine.remove(sandbox.id)
        for busy in self._state.busy_entries():
            for peer in list(busy.sessions.values()):
                await self.release(busy.sandbox, peer)

    async def prune(self) -> list[str]:
        """Apply the retention policy now; returns the ids removed."""
        return await self._retention.prune()

    async def _retention_loop(self) -> None:
        await self._retention.run(lambda exc: self._engine_failed("prune", exc))

    def _engine_failed(self, operation: str, exc: Exception) -> None:
        message = str(exc)
        if self._state.engine_failed(message, isinstance(exc, EngineUnavailable)):
            log.error("%s failed: %s", operation, message)
            self._events.emit(SandboxFailure(peer=None, operation=operation, error=message[:500]))

    # --- refill ------------------------------------------------------------------------------

    async def _refill_loop(self) -> None:
        # create_concurrency workers, each re-planning after every sandbox: demand that arrives
        # during a burst is planned at once, never after a whole batch. The engine serialises
        # much of container start-up, so a few at a time refill fastest and leave the CPU to the
        # sessions being served meanwhile.
        async with asyncio.TaskGroup() as workers:
            for n in range(self._config.pool.create_concurrency):
                workers.create_task(self._refill_worker(), name=f"pool-refill-{n}")

    async def _refill_worker(self) -> None:
        delay = self._retry_delays[0]
        while True:
            plan = self._state.plan_refill()
            if not plan:
                await self._wanted.wait()
                self._wanted.clear()
                continue
            if len(plan) > 1:
                self._wanted.set()  # more to do than this worker takes: wake another
            try:
                await self._create_one(plan[0])
            except Exception as exc:  # any engine failure: counted, retried with backoff
                self._engine_failed("create", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_delays[1])
            else:
                delay = self._retry_delays[0]
                self._state.engine_answered(clear_error=True)

    async def _create_one(self, image: str) -> None:
        self._state.begin_create(image)
        try:
            sandbox = await self._maker.make(image)
        finally:
            self._state.end_create(image)
        self._state.add_idle(sandbox)
        await self._notify()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.pool.health_interval_seconds)
            await self._trim()
            for sandbox in self._state.idle_members():
                try:
                    state = (await self._engine.inspect(sandbox.id)).get("State", {})
                    healthy = bool(state.get("Running"))
                except SandboxGone:
                    healthy = False
                except SandboxError as exc:
                    self._engine_failed("health", exc)
                    continue
                if healthy:
                    self._state.confirm_alive(sandbox)
                    self._state.engine_answered()
                elif self._state.drop_idle(sandbox):
                    log.warning("replacing unhealthy pool member %s", sandbox.id[:12])
                    sandbox.close_agent()
                    with contextlib.suppress(SandboxError):
                        await self._engine.remove(sandbox.id)
                    self._wanted.set()
            self._state.forget_expired_sticky()

    async def _trim(self) -> None:
        """Shrink back towards the warm target once arrivals are quiet (surplus idle removed)."""
        surplus = self._state.surplus_idle()
        for sandbox in surplus:
            if self._state.drop_idle(sandbox):
                sandbox.close_agent()
                with contextlib.suppress(SandboxError):
                    await self._engine.remove(sandbox.id)
        if surplus:
            log.info("pool shrank by %d idle sandboxes to its target", len(surplus))

    # --- allocation ---------------------------------------------------------------------------

    async def allocate(self, peer: Peer) -> ContainerSandbox:
        """A sandbox for `peer`: the one its source address already uses (pool.share_per_source),
        its sticky one, or an idle member, waiting for one to be created when none is idle.

        Raises:
            PoolExhausted: none within pool.allocate_timeout_seconds.
        """
        started = time.monotonic()
        if not (self._config.pool.share_per_source or self._config.pool.sticky):
            return await self._allocate(peer, started)
        # One allocation at a time per source address, so that its concurrent logins share.
        async with self._sources.hold(peer.src_ip):
            # Sticky mode shares through its own entry (and marks the allocation sticky).
            if self._config.pool.share_per_source and not self._config.pool.sticky:
                shared = self._state.busy_for_source(peer.src_ip)
                if shared is not None:
                    self._state.share(shared.id, peer)
                    self._emit_allocated(peer, shared, started, sticky=False, shared=True)
                    return shared
            return await self._allocate(peer, started)

    def _emit_allocated(
        self,
        peer: Peer,
        sandbox: ContainerSandbox,
        started: float,
        *,
        sticky: bool,
        shared: bool,
    ) -> None:
        self._events.emit(
            SandboxAllocated(
                peer=peer,
                container_id=sandbox.id,
                hostname=sandbox.hostname,
                image=sandbox.image,
                wait_ms=round((time.monotonic() - started) * 1000, 3),
                sticky=sticky,
                shared=shared,
            )
        )

    async def _allocate(self, peer: Peer, started: float) -> ContainerSandbox:
        sandbox = None
        if self._config.pool.sticky:
            try:
                async with asyncio.timeout(self._config.pool.allocate_timeout_seconds):
                    sandbox = await sticky_sandbox(
                        self._engine,
                        self._state,
                        self._releasing,
                        peer.src_ip,
                        daemons=self._config.sandbox.daemons,
                    )
            except TimeoutError:
                log.warning(
                    "sticky sandbox for %s still being released; using a fresh one", peer.src_ip
                )
        sticky = sandbox is not None
        shared = sandbox is not None and self._state.is_busy(sandbox.id)
        if sandbox is not None and shared:
            # The IP's sandbox is in use by another of its connections: one machine, shared.
            self._state.share(sandbox.id, peer)
        else:
            if sandbox is None:
                self._state.record_arrival()
                sandbox = await self._wait_idle(peer)
            await self._take_busy(sandbox, peer, rename=not sticky)
        if self._config.pool.sticky:
            self._state.remember_sticky(peer.src_ip, sandbox)
        self._wanted.set()
        self._emit_allocated(peer, sandbox, started, sticky=sticky, shared=shared)
        return sandbox

    async def _take_busy(self, sandbox: ContainerSandbox, peer: Peer, rename: bool) -> None:
        # Counted as busy before the first await, so the max_sandboxes cap never sees it missing.
        busy = self._state.take_busy(sandbox, peer)
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
            self._state.drop_busy(sandbox.id)
            sandbox.close_agent()
            with contextlib.suppress(SandboxError):
                await asyncio.shield(self._engine.remove(sandbox.id))
            self._wanted.set()
            raise
        if self._tasks is not None:
            self._watchers[sandbox.id] = self._tasks.create_task(
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
                        if (sandbox := self._state.take_idle()) is None:
                            # A waiting login is demand: the refill creates one for it.
                            self._state.begin_wait()
                            self._forensics.logins_waiting(True)
                            try:
                                while (sandbox := self._state.take_idle()) is None:
                                    self._wanted.set()
                                    await self._changed.wait()
                            finally:
                                self._state.end_wait()
                                self._forensics.logins_waiting(self._state.statistics().waiting > 0)
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
        if not self._state.needs_check(sandbox):
            return True
        try:
            running = bool((await self._engine.inspect(sandbox.id)).get("State", {}).get("Running"))
        except SandboxError:
            running = False
        if running:
            self._state.confirm_alive(sandbox)
            return True
        log.warning("pool member %s did not survive an engine outage", sandbox.id[:12])
        self._state.forget(sandbox)
        sandbox.close_agent()
        with contextlib.suppress(SandboxError):
            await self._engine.remove(sandbox.id)
        self._wanted.set()
        return False

    # --- release ------------------------------------------------------------------------------

    async def release(self, sandbox: Sandbox, peer: Peer) -> None:
        release = self._state.begin_release(sandbox.id, peer)
        if not release.last:
            return  # another connection of the same source IP still uses it
        self._wanted.set()  # no longer busy: room under max_sandboxes for a waiting login now
        watcher = self._watchers.pop(sandbox.id, None)
        if watcher is not None:
            watcher.cancel()
        if release.sticky is not None:
            # A reconnect from the same source IP waits for this before restarting it.
            self._releasing[sandbox.id] = asyncio.Event()
        try:
            with self._retention.holding(sandbox.id):
                await stop_and_record(
                    self._engine,
                    sandbox,
                    peer,
                    self._events,
                    self._artifacts,
                    self._config.sandbox.artifact_max_bytes,
                    self._engine_failed,
                    self._forensics.turn,
                    lambda: self._forensics.waiting,
                )
        finally:
            self._state.end_release(release)
            released = self._releasing.pop(sandbox.id, None)
            if released is not None:
                released.set()
        self._wanted.set()
        self._retention.wanted()


__all__ = ["Pool", "PoolStatistics"]
