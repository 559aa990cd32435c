"""Sandboxes in use: their sessions end when the sandbox dies or outgrows its disk budget.

One watcher task per sandbox in use, owned by the pool and cancelled on release. It polls the
engine every `sandbox.disk_check_interval_seconds`: under runc a stopped container ends its execs
by itself, but under gVisor an OOM-killed sandbox leaves them hanging, so a dead sandbox's execs
are closed here (`sandbox.died`); a sandbox over its disk budget is stopped
(`sandbox.disk_exceeded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sandtrap.config import SandboxConfig
from sandtrap.errors import SandboxError, SandboxGone
from sandtrap.events import EventSink, SandboxDied, SandboxDiskExceeded
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.poolstate import InUse

log = logging.getLogger(__name__)


async def watch_in_use(
    busy: InUse[ContainerSandbox],
    engine: ContainerEngine,
    config: SandboxConfig,
    events: EventSink,
    failed: Callable[[str, Exception], None],
) -> None:
    """Until cancelled: end the sandbox's sessions when it dies or outgrows its disk budget.

    `failed` reports an engine error (the pool's own accounting); the watch carries on.
    """
    while True:
        await asyncio.sleep(config.disk_check_interval_seconds)
        try:
            details = await engine.inspect(busy.sandbox.id, size=True)
        except SandboxGone:
            busy.sandbox.abort()
            return
        except SandboxError as exc:
            failed("sandbox check", exc)
            continue
        state = details.get("State") or {}
        if not state.get("Running", True):
            await _died(busy, state, events)
            return
        if await _over_disk_budget(busy, details, engine, config, events):
            return


async def _died(busy: InUse[ContainerSandbox], state: dict[str, Any], events: EventSink) -> None:
    code = state.get("ExitCode")
    for peer in list(busy.sessions.values()):
        events.emit(
            SandboxDied(
                peer=peer,
                container_id=busy.sandbox.id,
                exit_code=int(code) if isinstance(code, int) else None,
                oom_killed=bool(state.get("OOMKilled")),
            )
        )
    log.warning(
        "sandbox %s died in use (exit %s, OOM-killed: %s); ending its sessions",
        busy.sandbox.id[:12],
        code,
        bool(state.get("OOMKilled")),
    )
    busy.sandbox.abort()


async def _over_disk_budget(
    busy: InUse[ContainerSandbox],
    details: dict[str, Any],
    engine: ContainerEngine,
    config: SandboxConfig,
    events: EventSink,
) -> bool:
    limit = config.disk_limit_mb
    size_mb = float(details.get("SizeRw") or 0) / (1024 * 1024)
    if size_mb <= limit:
        return False
    events.emit(
        SandboxDiskExceeded(
            peer=busy.peer,
            container_id=busy.sandbox.id,
            size_mb=round(size_mb, 1),
            limit_mb=limit,
        )
    )
    log.warning("sandbox %s over its disk budget; stopping it", busy.sandbox.id[:12])
    # Stopping the container ends every exec under runc; abort covers runtimes that do not.
    with contextlib.suppress(SandboxError):
        await engine.stop(busy.sandbox.id, timeout_seconds=1)
    busy.sandbox.abort()
    return True
