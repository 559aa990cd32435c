"""Pool figures (issue 3): allocation latency from a warm pool and refill rate, each beside a
serial create+start loop of the same hardened body through the same Engine API client.

Runs its own Pool objects on the harness's event loop (no SSH); containers carry the run's sensor
label and are removed by the harness's cleanup even when a step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.resources import Run
from bench.stats import Figure, Row, Summary
from sandtrap.config import Config, parse_config
from sandtrap.events import Peer
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import blkio_device_for, container_body
from sandtrap.sandbox.pool import Pool
from sandtrap.store.jsonl import EventLog

PEER = "serial docker run -d"
# The same loop plus the exec every pool member gets (rm /.dockerenv): what a refill does.
PEER_EXEC = "serial run + exec"
_STEP_SECONDS = 120  # bound on any one allocate, release, warm-up or create


@dataclass(frozen=True)
class PoolPlan:
    allocations: int  # measured allocations (after warm-ups)
    warmups: int
    refill_size: int  # sandboxes per refill round
    refill_rounds: int


def plan(quick: bool) -> PoolPlan:
    if quick:
        return PoolPlan(allocations=5, warmups=1, refill_size=3, refill_rounds=1)
    return PoolPlan(allocations=30, warmups=2, refill_size=10, refill_rounds=3)


def _config(run: Run, data_dir: Path, image: str, size: int) -> Config:
    return parse_config(
        {
            "sensor": run.sensor,
            "pool": {"size": size, "max_sandboxes": size + 2},
            "sandbox": {"image": image, "network": "none"},  # Pool objects alone: no sinkhole
            "storage": {"data_dir": str(data_dir)},
            "logging": {"level": "WARNING"},
        }
    )


def _session() -> Peer:
    return Peer(session_id=secrets.token_hex(8), src_ip="127.0.0.1", src_port=40000, dst_port=22)


@contextlib.asynccontextmanager
async def _running_pool(
    config: Config, engine: Engine, events: EventLog
) -> AsyncIterator[tuple[Pool, float]]:
    """A Pool with its background tasks running; yields (pool, time its refill began)."""
    pool = Pool(config, engine, events)
    started = asyncio.Event()
    task = asyncio.create_task(pool.run(started), name="bench-pool")
    try:
        async with asyncio.timeout(_STEP_SECONDS):
            await started.wait()
        yield pool, time.monotonic()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.shutdown()


async def _allocation_latencies(
    config: Config, engine: Engine, events: EventLog, count: int, warmups: int
) -> list[float]:
    """Allocate from a full, quiet pool and release, `warmups + count` times; seconds each."""
    latencies: list[float] = []
    async with _running_pool(config, engine, events) as (pool, _):
        for index in range(warmups + count):
            async with asyncio.timeout(_STEP_SECONDS):
                await pool.wait_warm()
            info = _session()
            started = time.perf_counter()
            async with asyncio.timeout(_STEP_SECONDS):
                sandbox = await pool.allocate(info)
            elapsed = time.perf_counter() - started
            async with asyncio.timeout(_STEP_SECONDS):
                await pool.release(sandbox, info)
            if index >= warmups:
                latencies.append(elapsed)
    return latencies


async def _refill_rates(
    config: Config, engine: Engine, events: EventLog, rounds: int
) -> list[float]:
    """Sandboxes per second from an empty pool to `pool.size` warm, one fresh Pool per round."""
    rates: list[float] = []
    for _ in range(rounds):
        async with _running_pool(config, engine, events) as (pool, began):
            async with asyncio.timeout(_STEP_SECONDS * 2):
                await pool.wait_warm()
            rates.append(config.pool.size / (time.monotonic() - began))
    return rates


async def _serial_loop(
    run: Run, config: Config, engine: Engine, count: int, warmups: int, exec_rm: bool = False
) -> tuple[list[float], float]:
    """`docker run -d` equivalent (create + start) in a serial loop; latencies and the rate.

    With `exec_rm`, each container also gets the pool's `rm -f /.dockerenv` exec.
    """
    info = await engine.info()
    blkio = blkio_device_for(Path(str(info.get("DockerRootDir", "/var/lib/docker"))))
    latencies: list[float] = []
    created: list[str] = []
    loop_started = 0.0
    try:
        for index in range(warmups + count):
            if index == warmups:
                loop_started = time.perf_counter()
            body = container_body(
                config.sandbox,
                image=config.sandbox.image,
                hostname="web-prod-01",
                sensor=run.sensor,
                created=datetime.now(UTC),
                blkio_device=blkio,
            )
            started = time.perf_counter()
            async with asyncio.timeout(_STEP_SECONDS):
                name = f"bench-{run.run_id}-run{'x' if exec_rm else ''}-{index}"
                container_id = await engine.create(body, name)
                created.append(container_id)
                await engine.start(container_id)
                if exec_rm:
                    await engine.run(container_id, ["rm", "-f", "/.dockerenv"])
            if index >= warmups:
                latencies.append(time.perf_counter() - started)
        rate = count / (time.perf_counter() - loop_started)
    finally:
        for container_id in created:
            await engine.remove(container_id)
    return latencies, rate


async def pool_figures(run: Run, data_dir: Path, image: str, quick: bool) -> list[Figure]:
    """Measure both pool figures and their peers in this run."""
    steps = plan(quick)
    config = _config(run, data_dir, image, steps.refill_size)
    engine = Engine(config.sandbox.docker_url)
    events = EventLog(data_dir / "log" / "events.jsonl", run.sensor, 100 * 1024 * 1024, 1)
    try:
        count = steps.refill_size * steps.refill_rounds
        serial, serial_rate = await _serial_loop(run, config, engine, count, steps.warmups)
        _, exec_rate = await _serial_loop(run, config, engine, count, steps.warmups, exec_rm=True)
        allocations = await _allocation_latencies(
            _config(run, data_dir, image, 3), engine, events, steps.allocations, steps.warmups
        )
        rates = await _refill_rates(config, engine, events, steps.refill_rounds)
    finally:
        events.close()
        await engine.close()
    ours, peer = Summary.of(allocations), Summary.of(serial)
    latency = Figure(
        key="pool-allocate",
        title="Pool: time to a running sandbox (allocate from warm vs create+start)",
        unit="ms",
        higher_is_better=False,
        rows=[
            Row(name, getattr(ours, name) * 1000, {PEER: getattr(peer, name) * 1000})
            for name in ("p50", "p95", "p99")
        ],
        notes=[
            f"n={ours.n} allocations (pool size 3, refilled and quiet before each, "
            f"{steps.warmups} warm-ups excluded); n={peer.n} serial create+start calls.",
            "Allocation includes the rename to the session name; the peer is the same hardened "
            "body through the same Engine API client, so CLI start-up is not counted for it.",
        ],
    )
    refill = Figure(
        key="pool-refill",
        title="Pool: refill rate from empty (sandboxes/s)",
        unit="/s",
        higher_is_better=True,
        rows=[Row("median", statistics.median(rates), {PEER: serial_rate, PEER_EXEC: exec_rate})],
        notes=[
            f"{steps.refill_rounds} round(s) of empty -> {steps.refill_size} warm; the pool "
            "creates concurrently and also removes /.dockerenv with an exec per sandbox.",
        ],
    )
    return [latency, refill]
