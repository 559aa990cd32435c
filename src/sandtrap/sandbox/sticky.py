"""Sticky mode's engine side: a returning source IP gets its own sandbox back.

The decision (share, restart, or take a fresh one) is `PoolState.sticky_action`; this waits for a
release still in progress and restarts a stopped sandbox. The pool calls it under its allocation
timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sandtrap.errors import SandboxError
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.poolstate import PoolState, StickyAction
from sandtrap.sandbox.realism import restart_argv

log = logging.getLogger(__name__)


async def sticky_sandbox(
    engine: ContainerEngine,
    state: PoolState[ContainerSandbox],
    releasing: Mapping[str, asyncio.Event],
    src_ip: str,
    *,
    daemons: bool = False,
) -> ContainerSandbox | None:
    """The source IP's own sandbox: shared while in use, restarted once it was stopped.

    Args:
        releasing: per container id, set once a release in progress has stopped and recorded it.
        daemons: start the image's cron and rsyslogd again after a restart (`sandbox.daemons`).
    """
    entry = state.sticky_entry(src_ip)
    if entry is None:
        return None
    released = releasing.get(entry.sandbox.id)
    if entry.releasing and released is not None:
        await released.wait()
    action = state.sticky_action(src_ip, entry)
    if action is StickyAction.SHARE:
        return entry.sandbox
    if action is StickyAction.FRESH:
        return None
    try:
        details = (await engine.inspect(entry.sandbox.id)).get("State", {})
        if not details.get("Running"):
            await engine.start(entry.sandbox.id)
            # As after a reboot: utmp's boot record and the daemons (sandbox/realism.py).
            status, _, _ = await engine.run(entry.sandbox.id, restart_argv(daemons))
            if status != 0:
                log.info("restarted sandbox %s: boot script exit %d", entry.sandbox.id[:12], status)
    except SandboxError as exc:
        log.info("sticky sandbox for %s unusable (%s); using a fresh one", src_ip, exc)
        state.forget_sticky(src_ip)
        return None
    return entry.sandbox
