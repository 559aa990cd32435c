"""The real pool over the fake engine, for fast tests of the SSH front and of sessions.

`running_pool` starts a `Pool` on a `FakeEngine` (warm before it yields, shut down after);
`RecordingPool` hands its sandboxes out and notes which fake container went to which peer, so tests
can look at the processes a session started (`FakeContainer.execs`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sandtrap.config import Config
from sandtrap.events import EventSink, Peer
from sandtrap.sandbox.base import Sandbox
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.fake import FakeContainer, FakeEngine
from sandtrap.sandbox.pool import Pool


class RecordingPool:
    """A `SandboxProvider`: the pool's own allocate and release, with what they handed out."""

    def __init__(self, pool: Pool, engine: FakeEngine) -> None:
        self.pool = pool
        self.engine = engine
        self.allocated: list[tuple[FakeContainer, Peer]] = []
        self.released: list[tuple[FakeContainer, Peer]] = []

    async def allocate(self, peer: Peer) -> ContainerSandbox:
        sandbox = await self.pool.allocate(peer)
        self.allocated.append((self.engine.container(sandbox.id), peer))
        return sandbox

    async def release(self, sandbox: Sandbox, peer: Peer) -> None:
        await self.pool.release(sandbox, peer)
        self.released.append((self.engine.container(sandbox.id), peer))


@asynccontextmanager
async def running_pool(
    config: Config, events: EventSink, engine: FakeEngine | None = None, *, warm: bool = True
) -> AsyncIterator[RecordingPool]:
    """A pool on `engine` (a new FakeEngine by default) refilling in the background; `warm`
    waits until `pool.size` sandboxes are ready (leave it off when creates are made to fail)."""
    engine = engine or FakeEngine()
    pool = Pool(config, engine, events, retry_delays=(0.01, 0.05))
    started = asyncio.Event()
    task = asyncio.get_running_loop().create_task(pool.run(started), name="fake-pool")
    try:
        await started.wait()
        if warm:
            await pool.wait_warm()
        yield RecordingPool(pool, engine)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.shutdown()
