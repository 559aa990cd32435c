"""Health: the running service's status file, and the checks behind `sandtrap health`.

The service rewrites var/run/status.json every few seconds (listening addresses, pool statistics);
`sandtrap health` reads it, connects to the listener and asks the engine (through the gate when
there is one). Deciding what is healthy is `evaluate`; the rest is I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandtrap.config import Config
from sandtrap.paths import DataLayout

STATUS_INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def status_path(config: Config) -> Path:
    return DataLayout(config.storage.data_dir).status_file


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def write_status(
    config: Config,
    addresses: list[tuple[str, int]],
    statistics: Callable[[], Any],
    interval: float = STATUS_INTERVAL_SECONDS,
) -> None:
    """Rewrite the status file every `interval` seconds until cancelled, then remove it."""
    path = status_path(config)
    try:
        while True:
            status = {
                "time": time.time(),
                "pid": os.getpid(),
                "sensor": config.sensor,
                "listen": [[host, port] for host, port in addresses],
                "pool": dataclasses.asdict(statistics()),
            }
            with contextlib.suppress(OSError):
                _write_atomically(path, json.dumps(status))
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def read_status(config: Config) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def evaluate_pool(status: dict[str, Any] | None, now: float) -> Check:
    """The pool is healthy when the service wrote its status lately and the engine answered."""
    if status is None:
        return Check("pool", False, "no status file: is `sandtrap run` running with this config?")
    age = now - float(status.get("time", 0))
    pool = status.get("pool") or {}
    detail = (
        f"idle {pool.get('idle')}, busy {pool.get('busy')}, creating {pool.get('creating')}, "
        f"errors {pool.get('errors_total')} (status {age:.0f}s old)"
    )
    if age > STALE_AFTER_SECONDS:
        return Check("pool", False, f"status file is stale: {detail}")
    if not pool.get("engine_ok"):
        return Check("pool", False, f"the engine is failing: {detail}")
    return Check("pool", True, detail)


def listener_targets(config: Config, status: dict[str, Any] | None) -> list[tuple[str, int]]:
    """Where to knock: the bound addresses from the status file, else the configured ones."""
    from sandtrap.config import parse_listen

    pairs = [(str(h), int(p)) for h, p in (status or {}).get("listen", [])]
    if not pairs:
        pairs = [parse_listen(item) for item in config.ssh.listen]
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - mapping wildcards to loopback
    return [(wildcard.get(host, host), port) for host, port in pairs if port]


def listening_ports(proc_net: Path = Path("/proc/net")) -> set[int] | None:
    """TCP ports in LISTEN state in this network namespace; None when /proc does not say."""
    ports: set[int] = set()
    found = False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def check_listening(host: str, port: int, ports: set[int] | None) -> Check:
    """Without touching the listener (a connection would be an attacker-looking session)."""
    name = f"listener {host}:{port}"
    if ports is None:
        return Check(name, False, "cannot read /proc/net/tcp; use --knock")
    if port not in ports:
        return Check(name, False, "nothing listens on the port")
    return Check(name, True, "listening")


async def check_listener(host: str, port: int) -> Check:
    """Connect and read the identification line (the service records it as a connection)."""
    name = f"listener {host}:{port}"
    try:
        async with asyncio.timeout(5.0):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Check(name, False, f"no answer: {exc or 'timeout'}")
    if not line.startswith(b"SSH-2.0-"):
        return Check(name, False, f"not an SSH identification: {line[:60]!r}")
    return Check(name, True, line.decode("ascii", "replace").strip())


async def check_engine(url: str) -> Check:
    from sandtrap.errors import SandboxError
    from sandtrap.sandbox.docker import Engine

    engine = Engine(url)
    try:
        async with asyncio.timeout(10.0):
            info = await engine.version()
    except (SandboxError, TimeoutError) as exc:
        return Check("engine", False, f"{url}: {exc or 'timeout'}")
    finally:
        await engine.close()
    return Check(
        "engine", True, f"{url}: Docker {info.get('Version')} API {info.get('ApiVersion')}"
    )


def summarise_metrics(text: str) -> str:
    """A line about a scrape: families, open sessions, output drops (Prometheus text parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    families = 0
    for family in text_string_to_metric_families(text):
        families += 1
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return (
        f"{families} metric families; sessions active "
        f"{values.get('sandtrap_sessions_active', 0):.0f}, output drops "
        f"{values.get('sandtrap_output_dropped_total', 0):.0f}"
    )


async def check_metrics(config: Config) -> Check:
    """Scrape /metrics as Prometheus would (only when `metrics.listen` is set)."""
    import aiohttp

    from sandtrap.config import parse_listen

    if config.metrics.listen is None:
        return Check("metrics", True, "off (set metrics.listen, e.g. 127.0.0.1:9464)")
    host, port = parse_listen(config.metrics.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - wildcard to loopback
    url = f"http://{host}:{port}/metrics" if ":" not in host else f"http://[{host}]:{port}/metrics"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client,
            client.get(url) as answer,
        ):
            text = await answer.text()
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("metrics", False, f"{url}: {exc or 'timeout'}")
    if status != 200:
        return Check("metrics", False, f"{url}: HTTP {status}")
    try:
        return Check("metrics", True, f"{url}: {summarise_metrics(text)}")
    except ValueError as exc:
        return Check("metrics", False, f"{url}: not the Prometheus text format: {exc}")


async def run_checks(config: Config, components: set[str], knock: bool = False) -> list[Check]:
    """The checks asked for, among listener, engine, pool and metrics; `knock` connects to the
    listener."""
    from sandtrap.gate.child import GateChild

    status = read_status(config)
    checks: list[Check] = []
    if "listener" in components:
        targets = listener_targets(config, status)
        if knock:
            checks += [await check_listener(host, port) for host, port in targets]
        else:
            ports = listening_ports()
            checks += [check_listening(host, port, ports) for host, port in targets]
    if "engine" in components:
        checks.append(await check_engine(GateChild(config).docker_url))
    if "pool" in components:
        checks.append(evaluate_pool(status, time.time()))
    if "metrics" in components:
        checks.append(await check_metrics(config))
    return checks
