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

log = logging.getLogger(__name__)


async def sticky_sandbox(
    engine: ContainerEngine,
    state: PoolState[ContainerSandbox],
    releasing: Mapping[str, asyncio.Event],
    src_ip: str,
) -> ContainerSandbox | None:
    """The source IP's own sandbox: shared while in use, restarted once it was stopped.

    Args:
        releasing: per container id, set once a release in progress has stopped and recorded it.
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
    except SandboxError as exc:
        log.info("sticky sandbox for %s unusable (%s); using a fresh one", src_ip, exc)
        state.forget_sticky(src_ip)
        return None
    return entry.sandbox
