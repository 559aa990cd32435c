"""Container life at the pool's edges: start-up reconciliation and the end of a session.

Owns what happens to containers outside the warm cycle: members of an earlier run are removed,
session sandboxes left running are stopped (kept), and a released sandbox is stopped (never
removed) and recorded. Retention is left to `sandbox/retention.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sandtrap.errors import SandboxError, SandboxGone
from sandtrap.events import EventSink, Peer, SandboxReleased
from sandtrap.sandbox.base import Sandbox
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.forensics import capture_changes
from sandtrap.sandbox.hardening import POOL_PREFIX, SESSION_PREFIX, sandbox_labels

log = logging.getLogger(__name__)

# A session's forensics (the engine's layer diff, the archive reads of changed files) contends
# with sandbox creation for the engine's storage driver: in a burst of 60 logins from distinct
# addresses, the diffs of sessions already ended made the burst take 90 s instead of 27 s
# (docs/performance.md). A released sandbox is stopped at once, so its disk no longer changes and
# its diff can wait its turn: at most FORENSICS_CONCURRENCY at a time, and for at most
# FORENSICS_YIELD_SECONDS while logins wait for a sandbox.
FORENSICS_CONCURRENCY = 2
FORENSICS_YIELD_SECONDS = 30.0


class ForensicsTurns:
    """Who records a released sandbox's changes when: logins waiting for a sandbox go first."""

    def __init__(self, yield_seconds: float = FORENSICS_YIELD_SECONDS) -> None:
        self._slots = asyncio.Semaphore(FORENSICS_CONCURRENCY)
        self._no_login_waits = asyncio.Event()
        self._no_login_waits.set()
        self._yield_seconds = yield_seconds

    @property
    def waiting(self) -> bool:
        """Whether logins now wait for a sandbox (a release then pauses and stops later)."""
        return not self._no_login_waits.is_set()

    def logins_waiting(self, waiting: bool) -> None:
        """The pool says whether any login now waits for a sandbox."""
        if waiting:
            self._no_login_waits.clear()
        else:
            self._no_login_waits.set()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait while logins wait (bounded, so forensics is never starved), then take a slot."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._yield_seconds):
                await self._no_login_waits.wait()
        async with self._slots:
            yield


async def reconcile(engine: ContainerEngine, sensor: str) -> None:
    """Remove this sensor's pool members of earlier runs; stop (keep) its running sessions."""
    for item in await engine.containers(*sandbox_labels(sensor)):
        name = (item.get("Names") or ["/"])[0].lstrip("/")
        cid = str(item["Id"])
        if name.startswith(POOL_PREFIX):
            log.info("removing stale pool member %s", name)
            await engine.remove(cid)
        elif name.startswith(SESSION_PREFIX) and item.get("State") in ("running", "paused"):
            log.info("stopping session sandbox %s left %s by an earlier run", name, item["State"])
            await engine.stop(cid)


async def stop_and_record(
    engine: ContainerEngine,
    sandbox: Sandbox,
    peer: Peer,
    events: EventSink,
    artifacts_dir: Path,
    artifact_max_bytes: int,
    failed: Callable[[str, Exception], None],
    turn: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext,
    busy: Callable[[], bool] = lambda: False,
) -> None:
    """Stop the sandbox, emit `sandbox.released`, then (in its `turn`) its diff and artifacts.

    While logins wait for sandboxes (`busy`), the sandbox is paused at once instead (the cgroup
    freezer: nothing in it runs from then on) and stopped in its turn: a stop tears down the
    container's network endpoint, which the engine does largely one at a time with the creates
    those logins wait for. Cancelled meanwhile (shutdown), it is stopped before returning.

    Never raises for engine failures: `failed` reports them (the pool's own accounting).
    """
    if isinstance(sandbox, ContainerSandbox):
        sandbox.close_agent()  # before the pause or stop, so its end is not taken for the agent's
    paused = False
    if busy():
        try:
            await engine.pause(sandbox.id)
            paused = True
        except SandboxGone:
            pass
        except SandboxError as exc:
            failed("pause", exc)
    if not paused:
        await _stop_and_say(engine, sandbox, peer, events, failed)
        async with turn():
            await _record(engine, sandbox, peer, events, artifacts_dir, artifact_max_bytes, failed)
        return
    try:
        async with turn():
            await _stop_and_say(engine, sandbox, peer, events, failed)
            await _record(engine, sandbox, peer, events, artifacts_dir, artifact_max_bytes, failed)
    except asyncio.CancelledError:
        with contextlib.suppress(SandboxError):
            await asyncio.shield(engine.stop(sandbox.id, timeout_seconds=1))
        raise


async def _stop_and_say(
    engine: ContainerEngine,
    sandbox: Sandbox,
    peer: Peer,
    events: EventSink,
    failed: Callable[[str, Exception], None],
) -> None:
    stopped = False
    try:
        await engine.stop(sandbox.id, timeout_seconds=1)
        stopped = True
    except SandboxGone:
        pass
    except SandboxError as exc:
        failed("stop", exc)
    events.emit(SandboxReleased(peer=peer, container_id=sandbox.id, stopped=stopped))


async def _record(
    engine: ContainerEngine,
    sandbox: Sandbox,
    peer: Peer,
    events: EventSink,
    artifacts_dir: Path,
    artifact_max_bytes: int,
    failed: Callable[[str, Exception], None],
) -> None:
    # Only the pool's own sandboxes carry the baseline that keeps our preparation out of the diff.
    if isinstance(sandbox, ContainerSandbox):
        try:
            await capture_changes(engine, sandbox, peer, events, artifacts_dir, artifact_max_bytes)
        except SandboxError as exc:
            failed("diff", exc)
