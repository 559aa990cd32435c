"""Retention of stopped session sandboxes: a pure planner, the call that applies it, and the
service's runner that coalesces the passes releases ask for.

Kept sandboxes are evidence; the policy removes the oldest first when there are too many, when they
are too old, or when together they use too much disk. Running sandboxes are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sandtrap.config import RetentionConfig
from sandtrap.errors import SandboxError
from sandtrap.events import EventSink, SandboxPruned
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.hardening import (
    LABEL_CREATED,
    SESSION_PREFIX,
    parse_engine_time,
    sandbox_labels,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    container_id: str
    name: str
    created: datetime
    size_bytes: int


def plan_prune(kept: list[Kept], policy: RetentionConfig, now: datetime) -> list[tuple[Kept, str]]:
    """Which kept sandboxes to remove, oldest first, and why."""
    ordered = sorted(kept, key=lambda item: item.created)
    doomed: list[tuple[Kept, str]] = []
    survivors: list[Kept] = []
    for item in ordered:
        age_days = (now - item.created).total_seconds() / 86400
        if age_days > policy.max_age_days:
            doomed.append((item, "max_age_days"))
        else:
            survivors.append(item)
    while len(survivors) > policy.max_count:
        doomed.append((survivors.pop(0), "max_count"))
    limit = policy.max_disk_mb * 1024 * 1024
    while survivors and sum(item.size_bytes for item in survivors) > limit:
        doomed.append((survivors.pop(0), "max_disk_mb"))
    return doomed


async def list_kept(
    engine: ContainerEngine,
    sensor: str,
    with_sizes: bool = True,
    known: dict[str, Kept] | None = None,
) -> list[Kept]:
    """Stopped session sandboxes of this sensor (never running ones, never pool members).

    Age counts from when the sandbox last stopped, i.e. the end of its last session.

    Args:
        known: what earlier calls learnt, by container id, updated in place. A stopped sandbox
            neither ages differently nor grows, so each is inspected once (with its size, which
            the engine computes by walking the writable layer) instead of on every call; one
            seen running (a sticky restart) is forgotten and inspected again once it stops.
    """
    items = await engine.containers(*sandbox_labels(sensor))
    known = {} if known is None else known
    seen = set()
    kept = []
    for item in items:
        container_id = str(item["Id"])
        name = (item.get("Names") or ["/"])[0].lstrip("/")
        if not name.startswith(SESSION_PREFIX) or item.get("State") in ("running", "paused"):
            continue  # paused: released while logins waited, stopped in its forensics turn
        seen.add(container_id)
        if container_id in known:
            kept.append(known[container_id])
            continue
        try:
            details = await engine.inspect(container_id, size=with_sizes)
        except SandboxError:
            continue
        state = details.get("State") or {}
        labels = item.get("Labels") or {}
        moment = (
            parse_engine_time(state.get("FinishedAt"))
            or parse_engine_time(labels.get(LABEL_CREATED))
            or datetime.fromtimestamp(int(item.get("Created") or 0), UTC)
        )
        known[container_id] = Kept(container_id, name, moment, int(details.get("SizeRw") or 0))
        kept.append(known[container_id])
    for gone in set(known) - seen:
        del known[gone]
    return kept


async def enforce_retention(
    engine: ContainerEngine,
    policy: RetentionConfig,
    events: EventSink,
    sensor: str,
    known: dict[str, Kept] | None = None,
    held: frozenset[str] = frozenset(),
) -> list[str]:
    """Remove what the policy says; returns the removed container ids (`known`: see list_kept).

    `held`: stopped sandboxes whose forensics (diff, artifacts) are still to run. They count
    towards the limits but are never removed: the next pass removes what is then over them."""
    kept = await list_kept(engine, sensor, with_sizes=policy.max_disk_mb > 0, known=known)
    removed = []
    for item, reason in plan_prune(kept, policy, datetime.now(UTC)):
        if item.container_id in held:
            continue
        log.info("retention: removing %s (%s)", item.name, reason)
        await engine.remove(item.container_id)
        events.emit(SandboxPruned(container_id=item.container_id, reason=reason))
        removed.append(item.container_id)
    return removed


# Retention after releases runs at most this often (the limits may be overshot for that long).
RETENTION_COALESCE_SECONDS = 5.0


class Retention:
    """The service's retention: prunes one at a time, coalesced after releases, with what it
    learnt of each stopped sandbox kept between passes (see `list_kept`)."""

    def __init__(
        self, engine: ContainerEngine, policy: RetentionConfig, events: EventSink, sensor: str
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._events = events
        self._sensor = sensor
        self._known: dict[str, Kept] = {}
        self._held: set[str] = set()
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()

    async def prune(self) -> list[str]:
        """Apply the policy now. One at a time: sessions that end together would otherwise race
        to remove the same oldest sandbox."""
        async with self._lock:
            return await enforce_retention(
                self._engine,
                self._policy,
                self._events,
                self._sensor,
                known=self._known,
                held=frozenset(self._held),
            )

    @contextlib.contextmanager
    def holding(self, container_id: str) -> Iterator[None]:
        """While a released sandbox is stopped and its forensics wait their turn (a burst delays
        diffs while logins wait), retention must not remove it: that would lose its diff."""
        self._held.add(container_id)
        try:
            yield
        finally:
            self._held.discard(container_id)

    def wanted(self) -> None:
        """A sandbox was kept: prune soon (never from the releasing session's own path)."""
        self._wanted.set()

    async def run(self, failed: Callable[[SandboxError], None]) -> None:
        """Until cancelled: a burst of releases is served by one prune, at most every
        RETENTION_COALESCE_SECONDS, since each lists every kept sandbox."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.prune()
            except SandboxError as exc:
                failed(exc)
            await asyncio.sleep(RETENTION_COALESCE_SECONDS)
