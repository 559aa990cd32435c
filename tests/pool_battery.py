"""The pool's conformance battery: one set of tests, run against the fake engine
(tests/integration/test_pool_battery.py, milliseconds each) and the real Docker engine
(tests/docker/test_pool_battery.py). Each runner module provides the `backend` fixture.

Observations go through the `ContainerEngine` protocol itself, so both halves see the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import Config, parse_config
from sandtrap.errors import PoolExhausted
from sandtrap.events import Event, Peer, SandboxFailure
from sandtrap.sandbox.base import Sandbox
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.fake import FakeEngine
from sandtrap.sandbox.hardening import POOL_PREFIX, sandbox_labels
from sandtrap.sandbox.pool import Pool


class Sink:
    """Events as the pool emitted them, with a way to wait for one (never a sleep-poll)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, eventid: str) -> list[Any]:
        return [e for e in self.events if e.eventid == eventid]

    async def wait_for(self, eventid: str, count: int = 1) -> list[Any]:
        while len(self.of(eventid)) < count:
            self._changed.clear()
            await self._changed.wait()
        return self.of(eventid)


@dataclass
class Backend:
    """One engine under test, with the timings that suit it."""

    engine: ContainerEngine
    sensor: str
    image: str
    tmp_path: Path
    # Upper bound for anything the test waits on (warm-up, refill, events).
    patience: float
    # Short timeouts on the fake; on the real engine the ones that leave it time to work.
    allocate_timeout: float
    health_interval: float
    retry_delays: tuple[float, float]
    # Takes the engine away inside the block and brings it back on exit (None: cannot here).
    outage: Callable[[], AbstractAsyncContextManager[None]] | None = None
    sandboxes: list[str] = field(default_factory=list)

    def config(self, **sections: dict[str, Any]) -> Config:
        data: dict[str, Any] = {
            "sensor": self.sensor,
            "pool": {
                "size": 2,
                "max_sandboxes": 4,
                "allocate_timeout_seconds": self.allocate_timeout,
                "health_interval_seconds": self.health_interval,
            },
            "sandbox": {
                "image": self.image,
                "hostnames": ["web-prod-03", "db-prod-01"],
                "network": "none",
            },
            "storage": {"data_dir": str(self.tmp_path / "var")},
        }
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value}
        return parse_config(data)

    @asynccontextmanager
    async def pool(self, config: Config, sink: Sink) -> AsyncIterator[Pool]:
        """A running pool; shut down (idle members removed, busy ones stopped) on exit."""
        pool = Pool(config, self.engine, sink, retry_delays=self.retry_delays)
        started = asyncio.Event()
        task = asyncio.create_task(pool.run(started))
        try:
            async with asyncio.timeout(self.patience):
                await started.wait()
            yield pool
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pool.shutdown()

    async def warm(self, pool: Pool, count: int | None = None) -> None:
        async with asyncio.timeout(self.patience):
            await pool.wait_warm(count)

    async def ours(self, running_only: bool = False) -> list[dict[str, Any]]:
        """This sensor's containers as the engine lists them."""
        return await self.engine.containers(
            *sandbox_labels(self.sensor), all_states=not running_only
        )

    async def pool_members(self) -> set[str]:
        return {
            str(item["Id"])
            for item in await self.ours()
            if item["Names"][0].lstrip("/").startswith(POOL_PREFIX)
        }


def peer(n: int, ip: str | None = None) -> Peer:
    """Session `n`, from its own source address unless `ip` says otherwise (connections of one
    address share a sandbox)."""
    return Peer(
        session_id=f"{n:012x}", src_ip=ip or f"203.0.113.{10 + n}", src_port=40000 + n, dst_port=22
    )


async def sh(sandbox: Sandbox, command: str, user: str = "root") -> tuple[int, str]:
    """Run a command both engines understand (the fake's interpreter knows echo and hostname)."""
    stream = await sandbox.exec(["/bin/sh", "-c", command], user=user, tty=False)
    out = []
    try:
        await stream.close_stdin()
        while (chunk := await stream.read()) is not None:
            out.append(chunk.data)
        return await stream.wait(), b"".join(out).decode()
    finally:
        await stream.close()


async def test_warms_up_to_its_size_and_refills_behind_an_allocation(backend: Backend) -> None:
    sink = Sink()
    async with backend.pool(backend.config(), sink) as pool:
        await backend.warm(pool)
        assert pool.statistics().idle == 2
        assert len(await backend.pool_members()) == 2
        sandbox = await pool.allocate(peer(1))
        (allocated,) = sink.of("sandbox.allocated")
        assert allocated.container_id == sandbox.id
        assert allocated.peer == peer(1)
        assert sandbox.hostname in ("web-prod-03", "db-prod-01")
        assert await sh(sandbox, "hostname") == (0, f"{sandbox.hostname}\n")
        details = await backend.engine.inspect(sandbox.id)
        assert details["State"]["Running"] is True
        assert details["Name"] == "/sandtrap-s-000000000001-203.0.113.11"
        assert await sandbox.ensure_user("oracle") == "/home/oracle"
        await backend.warm(pool)
        assert pool.statistics().busy == 1


async def test_max_sandboxes_and_allocation_timeout(backend: Backend) -> None:
    config = backend.config(pool={"size": 1, "max_sandboxes": 2})
    async with backend.pool(config, Sink()) as pool:
        await backend.warm(pool)
        first = await pool.allocate(peer(1))
        # The cap leaves room for exactly one more: the refill behind the first allocation.
        await backend.warm(pool)
        second = await pool.allocate(peer(2))
        assert first.id != second.id
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PoolExhausted):
            await pool.allocate(peer(3))
        assert loop.time() - started >= backend.allocate_timeout * 0.95
        assert len(await backend.ours(running_only=True)) == 2
        # Releasing one makes room again.
        await pool.release(first, peer(1))
        await backend.warm(pool)
        third = await pool.allocate(peer(3))
        assert third.id not in (first.id, second.id)


async def test_release_stops_and_keeps_the_sandbox(backend: Backend) -> None:
    sink = Sink()
    async with backend.pool(backend.config(pool={"size": 1}), sink) as pool:
        sandbox = await pool.allocate(peer(7))
        await pool.release(sandbox, peer(7))
        state = (await backend.engine.inspect(sandbox.id))["State"]
        assert state["Running"] is False  # stopped, not removed
        (released,) = sink.of("sandbox.released")
        assert (released.container_id, released.stopped, released.peer) == (
            sandbox.id,
            True,
            peer(7),
        )
        (diff,) = sink.of("sandbox.diff")
        assert "/.dockerenv" not in {c["path"] for c in diff.changes}
        assert pool.statistics().busy == 0


async def test_a_release_while_a_login_waits_freezes_it_and_stops_it_in_its_turn(
    backend: Backend,
) -> None:
    """While a login waits for a sandbox, a released one is paused at once (nothing in it runs)
    and stopped, then recorded, once no login waits: its stop (the engine's network teardown)
    does not compete with the create the login waits for."""
    sink = Sink()
    config = backend.config(
        pool={"size": 1, "max_warm": 1, "max_sandboxes": 2,
              "allocate_timeout_seconds": backend.patience}
    )  # fmt: skip
    async with backend.pool(config, sink) as pool:
        await backend.warm(pool)
        first = await pool.allocate(peer(1))
        await pool.allocate(peer(2))
        if isinstance(backend.engine, FakeEngine):
            backend.engine.create_delay = 0.5  # as slow as a real create, to see the pause
        third = asyncio.create_task(pool.allocate(peer(3)))  # waits: two in use, the cap
        async with asyncio.timeout(backend.patience):
            while pool.statistics().waiting == 0:
                await asyncio.sleep(0.01)
        releasing = asyncio.create_task(pool.release(first, peer(1)))
        async with asyncio.timeout(backend.patience):
            while (await backend.engine.inspect(first.id))["State"]["Status"] != "paused":
                await asyncio.sleep(0.01)
        assert not sink.of("sandbox.released")
        served = await third
        async with asyncio.timeout(backend.patience):
            await releasing
        assert served.id != first.id
        assert (await backend.engine.inspect(first.id))["State"]["Running"] is False
        (released,) = sink.of("sandbox.released")
        assert (released.container_id, released.stopped) == (first.id, True)
        (diff,) = sink.of("sandbox.diff")
        assert diff.container_id == first.id
        # In that order: the waiting login got its sandbox before the frozen one was stopped.
        order = [
            e.eventid for e in sink.events if e.eventid in ("sandbox.allocated", "sandbox.released")
        ]
        assert order[-2:] == ["sandbox.allocated", "sandbox.released"], order


async def test_sticky_sources_share_and_get_their_sandbox_back(backend: Backend) -> None:
    ip = "198.51.100.4"
    sink = Sink()
    async with backend.pool(backend.config(pool={"size": 1, "sticky": True}), sink) as pool:
        first = await pool.allocate(peer(1, ip))
        # A second connection of the same source while the first is open: the same machine.
        shared = await pool.allocate(peer(2, ip))
        assert shared.id == first.id
        assert pool.statistics().busy == 1
        await pool.release(shared, peer(2, ip))
        assert not sink.of("sandbox.released")  # the first connection still uses it
        assert (await backend.engine.inspect(first.id))["State"]["Running"] is True
        await pool.release(first, peer(1, ip))
        assert len(sink.of("sandbox.released")) == 1
        # After release: the same sandbox again, restarted.
        again = await pool.allocate(peer(3, ip))
        assert again.id == first.id
        assert [e.sticky for e in sink.of("sandbox.allocated")] == [False, True, True]
        assert await sh(again, "echo back") == (0, "back\n")
        other = await pool.allocate(peer(4, "198.51.100.5"))
        assert other.id != first.id


async def test_outage_members_are_rechecked_and_refill_resumes(backend: Backend) -> None:
    """The engine goes away under a warm pool: errors become events, nothing crashes, members
    from before the outage are checked before anyone gets them, and the pool serves again."""
    if backend.outage is None:
        pytest.skip("needs root and a dockerd this test may restart (as in make test)")
    sink = Sink()
    async with backend.pool(backend.config(), sink) as pool:
        await backend.warm(pool)
        before = await backend.pool_members()
        assert len(before) == 2
        async with backend.outage():
            async with asyncio.timeout(backend.patience):
                await sink.wait_for("sandbox.error")
                while pool.statistics().engine_ok:
                    await sink.wait_for("sandbox.error", len(sink.of("sandbox.error")) + 1)
        async with asyncio.timeout(backend.patience):
            sandbox = await pool.allocate(peer(5))
        assert sandbox.id not in before
        assert await sh(sandbox, "echo alive") == (0, "alive\n")
        await pool.release(sandbox, peer(5))
        await backend.warm(pool)
        assert not (before & await backend.pool_members())
    failures: list[SandboxFailure] = sink.of("sandbox.error")
    assert any(e.operation in ("health", "create", "disk check") for e in failures)


async def test_restart_reconciles_and_retention_prunes(backend: Backend) -> None:
    sink = Sink()
    config = backend.config(pool={"size": 2})
    pool = Pool(config, backend.engine, sink, retry_delays=backend.retry_delays)
    task = asyncio.create_task(pool.run())
    await backend.warm(pool)
    kept = []
    for n in (1, 2, 3):
        sandbox = await pool.allocate(peer(n))
        kept.append(sandbox.id)
        if n < 3:
            await pool.release(sandbox, peer(n))
    await backend.warm(pool)
    # A crash: the task dies without shutdown(); pool members and one live session remain.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A crashed process's connections to the engine die with it: its agents' streams too.
    held = [*pool._state.idle_members(), *(b.sandbox for b in pool._state.busy_entries())]
    for sandbox in held:
        if isinstance(sandbox, ContainerSandbox):
            sandbox.close_agent()
    assert await backend.pool_members()

    sink2 = Sink()
    small = backend.config(pool={"size": 0}, retention={"max_count": 2})
    async with backend.pool(small, sink2) as pool2:
        assert pool2.statistics().idle == 0
    left = await backend.ours()
    assert not await backend.pool_members()
    # Three session sandboxes existed; max_count=2 removed the oldest, the other two stay stopped.
    assert len(left) == 2
    assert all(item["State"] == "exited" for item in left)
    assert kept[0] not in {item["Id"] for item in left}
    assert [e.reason for e in sink2.of("sandbox.pruned")] == ["max_count"]


async def test_concurrent_connections_of_one_source_share_one_sandbox(backend: Backend) -> None:
    """pool.share_per_source (the default): one machine per source address, as a real server is;
    the sandbox is stopped only when its last connection lets go."""
    ip = "198.51.100.20"
    sink = Sink()
    async with backend.pool(backend.config(pool={"size": 1}), sink) as pool:
        boxes = await asyncio.gather(*(pool.allocate(peer(n, ip)) for n in (1, 2, 3)))
        assert len({box.id for box in boxes}) == 1
        assert pool.statistics().busy == 1
        assert [e.shared for e in sink.of("sandbox.allocated")] == [False, True, True]
        other = await pool.allocate(peer(4))
        assert other.id != boxes[0].id
        await pool.release(boxes[0], peer(1, ip))
        await pool.release(boxes[1], peer(2, ip))
        assert not sink.of("sandbox.released")
        await pool.release(boxes[2], peer(3, ip))
        assert [e.container_id for e in sink.of("sandbox.released")] == [boxes[0].id]


async def test_a_burst_beyond_the_warm_pool_waits_and_every_login_is_served(
    backend: Backend,
) -> None:
    """Logins that find no idle sandbox wait while one is created for each (no drop), and the
    warm target grows with the arrivals (the shrink back is tested on the fake engine)."""
    sink = Sink()
    config = backend.config(
        pool={
            "size": 1,
            "max_warm": 3,
            "max_sandboxes": 8,
            "grow_window_seconds": backend.patience * 2,
            "allocate_timeout_seconds": backend.patience,
        }
    )
    async with backend.pool(config, sink) as pool:
        await backend.warm(pool)
        peers = [peer(n) for n in range(1, 6)]
        boxes = await asyncio.gather(*(pool.allocate(p) for p in peers))
        assert len({box.id for box in boxes}) == 5
        assert not sink.of("sandbox.allocation_failed")
        # Five arrivals in the window: the warm target is max_warm (3), within the cap (8 - 5).
        assert pool.statistics().target == 3
        await backend.warm(pool, 3)
        assert len(await backend.pool_members()) == 3
