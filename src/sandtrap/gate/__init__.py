"""The Engine API gate: the only holder of the Docker socket in a privilege-separated SandTrap.

`serve_gate` runs the policy-checking proxy (`gate/proxy.py`, rules in `gate/policy.py`) until
SIGTERM/SIGINT or, for the child `sandtrap run` starts (`gate/child.py`), until its stdin closes.
Refusals are `gate.refused` events in var/log/gate.jsonl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable, SandboxError
from sandtrap.gate.policy import GatePolicy
from sandtrap.gate.proxy import Gate
from sandtrap.gate.sealing import Sealer
from sandtrap.network.deploy import ensure_sinkhole, supervise
from sandtrap.paths import DataLayout
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import blkio_device_for
from sandtrap.sandbox.sinknet import bridge_name
from sandtrap.store.jsonl import open_event_log

log = logging.getLogger(__name__)

READY_LINE = b"sandtrap-gate ready\n"
ERROR_PREFIX = b"sandtrap-gate error: "


def gate_socket(config: Config) -> Path:
    """Where a standalone gate listens by default: the configured path, else var/run/gate.sock."""
    if config.sandbox.gate not in ("auto", "off"):
        return Path(config.sandbox.gate)
    return DataLayout(config.storage.data_dir).gate_socket


def gate_max_connections(config: Config) -> int:
    """How many clients the gate serves at once: every SSH channel holds one exec stream, and a
    connection has a few channels at most; beyond that, clients get a 503 at once."""
    return 4 * config.limits.max_connections + 64


async def _engine_facts(upstream: str, attempts: int) -> tuple[str, str]:
    """The engine's API version and data root (`DockerRootDir`)."""
    engine = Engine(upstream)
    try:
        for attempt in range(attempts):
            try:
                version = await engine.version()
                info = await engine.info()
                root = str(info.get("DockerRootDir") or "/var/lib/docker")
                return f"v{version.get('ApiVersion', '1.41')}", root
            except EngineUnavailable as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("gate: waiting for the engine: %s", exc)
                await asyncio.sleep(1)
    finally:
        await engine.close()
    raise AssertionError("unreachable")


async def _wait_stdin_eof() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()


async def serve_gate(
    config: Config,
    listen: Path,
    upstream: str,
    *,
    socket_group: int | None = None,
    lifeline: bool = False,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the gate until `stop` (or a signal; with `lifeline`, until stdin reaches EOF).

    With `lifeline` the gate belongs to a parent: it ignores SIGINT/SIGTERM (the parent's phased
    shutdown still needs it) and prints READY_LINE on stdout once it listens, or ERROR_PREFIX and
    the reason when the engine does not answer (standalone, it waits up to 30 s for the engine).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        api_version, root_dir = await _engine_facts(upstream, 1 if lifeline else 30)
    except EngineUnavailable as exc:
        if lifeline:
            sys.stdout.buffer.write(ERROR_PREFIX + str(exc).encode("utf-8", "replace") + b"\n")
            sys.stdout.buffer.flush()
        raise
    sinkhole_engine: Engine | None = None
    if config.sandbox.network == "sinkhole":
        # The gate, the engine's one holder, makes the sinkhole: the front cannot create it.
        sinkhole_engine = Engine(upstream)
        try:
            await ensure_sinkhole(sinkhole_engine, config)
        except SandboxError as exc:
            await sinkhole_engine.close()
            if lifeline:
                message = f"sinkhole: {exc}".encode("utf-8", "replace")
                sys.stdout.buffer.write(ERROR_PREFIX + message + b"\n")
                sys.stdout.buffer.flush()
            raise
    # The pool's own derivation of the blkio device, from the gate's view of the data root.
    blkio_device = await asyncio.to_thread(blkio_device_for, Path(root_dir))
    policy = GatePolicy.from_config(
        config, api_version, blkio_device=blkio_device, docker_root_dir=root_dir
    )
    events = open_event_log(
        config.storage, config.sensor, DataLayout(config.storage.data_dir).gate_log
    )
    sealer = Sealer(bridge_name(config.sensor)) if config.sandbox.network == "sinkhole" else None
    gate = Gate(
        policy,
        listen,
        upstream,
        events,
        socket_group,
        max_connections=gate_max_connections(config),
        sealer=sealer,
    )
    listening = ready or asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        for signum in signals:
            if lifeline:
                signal.signal(signum, signal.SIG_IGN)
            else:
                loop.add_signal_handler(signum, stop.set)
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(gate.run(stop, listening), name="gate")
            keeper = None
            if sinkhole_engine is not None:
                sealed = sealer.pids if sealer is not None else None
                keeper = tasks.create_task(
                    supervise(sinkhole_engine, config, sealed=sealed), name="sinkhole"
                )
            await listening.wait()
            watcher: asyncio.Task[None] | None = None
            if lifeline:
                sys.stdout.buffer.write(READY_LINE)
                sys.stdout.buffer.flush()
                watcher = tasks.create_task(_wait_stdin_eof(), name="gate-lifeline")
                watcher.add_done_callback(lambda _t: stop.set())
            await serving
            if watcher is not None:
                watcher.cancel()
            if keeper is not None:
                keeper.cancel()
    finally:
        events.close()
        if sinkhole_engine is not None:
            await sinkhole_engine.close()
        if not lifeline:
            for signum in signals:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
        log.info("gate stopped: %d forwarded, %d refused", gate.forwarded, gate.refused)


__all__ = [
    "ERROR_PREFIX",
    "READY_LINE",
    "Gate",
    "GatePolicy",
    "gate_max_connections",
    "gate_socket",
    "serve_gate",
]
