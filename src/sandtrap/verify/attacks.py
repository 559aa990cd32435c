"""The verifier's attacks: the probe run inside a sandbox, and the resource bombs watched from the
host (its stats, its state, the disk budget's event).

Owns running and watching; judging what they saw is verify/checks.py's and verify/hostchecks.py's,
the order of the whole run verify/runner.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import time
from pathlib import Path
from typing import Any

from sandtrap.errors import SandboxError, SandTrapError
from sandtrap.sandbox.docker import Engine
from sandtrap.verify import hostchecks
from sandtrap.verify.checks import Context, Row

log = logging.getLogger(__name__)

# The unprivileged login the verifier creates in its sandbox and logs in as.
LOGIN_USER = "verify"


def probe_source() -> str:
    return importlib.resources.files("sandtrap.verify").joinpath("probe.py").read_text("utf-8")


async def probe(
    engine: Engine, sandbox_id: str, mode: str, args: dict[str, Any], user: str, deadline: float
) -> dict[str, Any]:
    argv = ["python3", "-c", probe_source(), mode, json.dumps(args)]
    try:
        async with asyncio.timeout(deadline):
            status, out, err = await engine.run(sandbox_id, argv, user=user)
    except TimeoutError:
        raise SandboxError(f"probe {mode} as {user} timed out after {deadline:.0f}s") from None
    try:
        result: dict[str, Any] = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SandboxError(
            f"probe {mode} as {user} failed (exit {status}): {err[-300:]!r}"
        ) from None
    return result


async def probe_watched(
    engine: Engine, sandbox_id: str, mode: str, args: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """A probe that may end the whole sandbox (gVisor's OOM kill leaves the exec hanging).

    Raced against the container's state: when the sandbox stops, the report says so instead.
    """
    task = asyncio.create_task(probe(engine, sandbox_id, mode, args, LOGIN_USER, deadline))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            state = (await engine.inspect(sandbox_id)).get("State", {})
            if not state.get("Running"):
                return {
                    "sandbox_ended": True,
                    "oom_killed": bool(state.get("OOMKilled")),
                    "exit_code": state.get("ExitCode"),
                }
            if done:
                return task.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SandboxError):
            await task


async def cpu_stats(engine: Engine, sandbox_id: str) -> tuple[float, int]:
    """(CPU seconds used, throttled periods) of the sandbox's cgroup, as the host sees them."""
    stats = await engine.request(
        "GET",
        f"containers/{sandbox_id}/stats",
        params={"stream": "false", "one-shot": "true"},
        operation="stats",
    )
    cpu = stats.get("cpu_stats") or {}
    usage = float((cpu.get("cpu_usage") or {}).get("total_usage") or 0) / 1e9
    throttled = int((cpu.get("throttling_data") or {}).get("throttled_periods") or 0)
    return usage, throttled


async def fork_bomb(
    engine: Engine, sandbox_id: str, pids_limit: int, host_limit: int, ctx: Context
) -> Row:
    """The bomb inside, the host's view of the sandbox's pids alongside."""
    host_peak = 0

    async def sample() -> None:
        nonlocal host_peak
        while True:
            with contextlib.suppress(SandTrapError, AttributeError):
                stats = await engine.request(
                    "GET",
                    f"containers/{sandbox_id}/stats",
                    params={"stream": "false", "one-shot": "true"},
                    operation="stats",
                )
                host_peak = max(host_peak, int((stats.get("pids_stats") or {}).get("current") or 0))
            await asyncio.sleep(0.2)

    result = None
    async with asyncio.TaskGroup() as tasks:
        sampler = tasks.create_task(sample())
        try:
            result = await probe(engine, sandbox_id, "forkbomb", {"seconds": 4}, LOGIN_USER, 30)
        except SandboxError as exc:
            log.info("fork bomb probe: %s", exc)
        finally:
            sampler.cancel()
    running = bool((await engine.inspect(sandbox_id)).get("State", {}).get("Running"))
    if not running:
        state = "stopped"
    elif await answers(engine, sandbox_id):
        state = "answers"
    else:
        state = "hung"
        await engine.stop(sandbox_id, timeout_seconds=1)
    return hostchecks.forkbomb_row(result, host_peak, pids_limit, state, ctx.runtime, host_limit)


async def answers(engine: Engine, sandbox_id: str) -> bool:
    try:
        async with asyncio.timeout(15):
            status, out, _ = await engine.run(sandbox_id, ["/bin/echo", "alive"])
    except (TimeoutError, SandboxError):
        return False
    return status == 0 and out.strip() == b"alive"


def disk_event(path: Path, container_id: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("eventid") == "sandbox.disk_exceeded" and record.get("container_id") == (
            container_id
        ):
            return dict(record)
    return None


async def disk_fill(engine: Engine, sandbox_id: str, events_log: Path, limit_mb: int) -> Row:
    # O_SYNC: every block reaches the host's upper layer as it is written, so the watcher sees the
    # size grow whatever the runtime caches. Buffered, gVisor's Sentry held the data in its own
    # memory: the sandbox could be OOM-killed before the host saw 64 MiB (a stop without the event).
    fill = f"dd if=/dev/zero of=$HOME/.fill bs=1M count={limit_mb * 4} oflag=sync 2>&1; sync"
    started = time.monotonic()
    writer = asyncio.create_task(engine.run(sandbox_id, ["/bin/sh", "-c", fill], user=LOGIN_USER))
    stopped_after = None
    try:
        # The watcher's size check is an inspect with sizes, slow on a loaded engine: be patient.
        while time.monotonic() - started < 180:
            state = (await engine.inspect(sandbox_id)).get("State", {})
            if not state.get("Running"):
                stopped_after = time.monotonic() - started
                break
            await asyncio.sleep(0.25)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, SandboxError):
            await writer
    event = None
    for _ in range(100):  # the event log is appended by the pool's task; give it a moment
        if (event := disk_event(events_log, sandbox_id)) is not None:
            break
        await asyncio.sleep(0.1)
    return hostchecks.disk_row(event, stopped_after, limit_mb)


__all__ = [
    "LOGIN_USER",
    "answers",
    "cpu_stats",
    "disk_event",
    "disk_fill",
    "fork_bomb",
    "probe",
    "probe_source",
    "probe_watched",
]
