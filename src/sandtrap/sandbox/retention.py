"""Retention of stopped session sandboxes: a pure planner and the call that applies it.

Kept sandboxes are evidence; the policy removes the oldest first when there are too many, when they
are too old, or when together they use too much disk. Running sandboxes are never touched.
"""

from __future__ import annotations

import logging
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


async def list_kept(engine: ContainerEngine, sensor: str, with_sizes: bool = True) -> list[Kept]:
    """Stopped session sandboxes of this sensor (never running ones, never pool members).

    Age counts from when the sandbox last stopped, i.e. the end of its last session.
    """
    items = await engine.containers(*sandbox_labels(sensor))
    kept = []
    for item in items:
        name = (item.get("Names") or ["/"])[0].lstrip("/")
        if not name.startswith(SESSION_PREFIX) or item.get("State") == "running":
            continue
        try:
            details = await engine.inspect(str(item["Id"]), size=with_sizes)
        except SandboxError:
            continue
        state = details.get("State") or {}
        labels = item.get("Labels") or {}
        moment = (
            parse_engine_time(state.get("FinishedAt"))
            or parse_engine_time(labels.get(LABEL_CREATED))
            or datetime.fromtimestamp(int(item.get("Created") or 0), UTC)
        )
        kept.append(Kept(str(item["Id"]), name, moment, int(details.get("SizeRw") or 0)))
    return kept


async def enforce_retention(
    engine: ContainerEngine, policy: RetentionConfig, events: EventSink, sensor: str
) -> list[str]:
    """Remove what the policy says; returns the removed container ids."""
    kept = await list_kept(engine, sensor, with_sizes=policy.max_disk_mb > 0)
    removed = []
    for item, reason in plan_prune(kept, policy, datetime.now(UTC)):
        log.info("retention: removing %s (%s)", item.name, reason)
        await engine.remove(item.container_id)
        events.emit(SandboxPruned(container_id=item.container_id, reason=reason))
        removed.append(item.container_id)
    return removed
