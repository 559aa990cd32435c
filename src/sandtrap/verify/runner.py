"""`sandtrap verify-security`: attack a real sandbox from inside and judge what got through.

Runs the real service in-process (`app.serve`, own sensor name, temporary data dir, listening on
127.0.0.1:0), takes a sandbox from its Pool exactly as a session does, runs the probe as the login
user and as root, then the fork, memory, CPU and disk bombs, then times a fresh SSH login.
Network targets are this machine's own addresses only. Judging is `verify/checks.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandtrap.app import Service, serve
from sandtrap.config import Config, parse_config, with_sensor
from sandtrap.errors import SandboxError, SandTrapError
from sandtrap.events import Peer
from sandtrap.network.deploy import remove_sinkhole
from sandtrap.network.isolate import PortIsolation, bridge_ports
from sandtrap.paths import DataLayout
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import host_pids_limit, sandbox_labels
from sandtrap.sandbox.pool import Pool
from sandtrap.sandbox.sinknet import addresses, bridge_name, container_name, network_name
from sandtrap.ssh.client import login_and_run
from sandtrap.verify import checks, hostchecks, sinkself
from sandtrap.verify.attacks import (
    LOGIN_USER,
    cpu_stats,
    disk_fill,
    fork_bomb,
    probe,
    probe_watched,
)
from sandtrap.verify.checks import Context, Row
from sandtrap.verify.listeners import Listeners, host_addresses, icmp_targets

log = logging.getLogger(__name__)

# Small on purpose, so the disk fill trips the budget in seconds (issue 6).
DISK_LIMIT_MB = 64
DISK_CHECK_SECONDS = 0.5


def verifier_config(config: Config, data_dir: Path, runtime: str | None) -> tuple[Config, str]:
    """The operator's hardening with the verifier's own sensor, listener, login and disk budget."""
    password = secrets.token_urlsafe(16)
    data = config.model_dump(mode="json")
    with_sensor(config, data, f"{config.sensor[:200]}-verify-{secrets.token_hex(4)}")
    data["ssh"].update(listen=["127.0.0.1:0"], auth_failure_delay_seconds=0.1)
    data["auth"].update(credentials=[{"username": LOGIN_USER, "password": password}], deny=[])
    data["auth"]["accept_after_failures"] = 0
    data["pool"].update(size=1, max_sandboxes=4, allocate_timeout_seconds=120, sticky=False)
    data["sandbox"].update(
        disk_limit_mb=min(config.sandbox.disk_limit_mb, DISK_LIMIT_MB),
        disk_check_interval_seconds=DISK_CHECK_SECONDS,
    )
    if runtime is not None:
        data["sandbox"]["runtime"] = runtime
        if runtime == "runsc" and "network" not in config.sandbox.model_fields_set:
            data["sandbox"]["network"] = "none"  # the default under runsc (sandboxconfig.py)
    data["storage"]["data_dir"] = str(data_dir)
    return parse_config(data, "<verify-security>"), password


async def _ensure_user(engine: Engine, sandbox: ContainerSandbox) -> None:
    """Create the login user as a session does; a sandbox that dies meanwhile is named."""
    try:
        async with asyncio.timeout(60):
            await sandbox.ensure_user(LOGIN_USER)
    except TimeoutError:
        state = (await engine.inspect(sandbox.id)).get("State", {})
        raise SandboxError(
            f"creating the login user did not finish within 60s; sandbox {sandbox.id[:12]} is "
            f"{state.get('Status')} (exit code {state.get('ExitCode')})"
        ) from None


async def _login(port: int, password: str) -> Row:
    result = await login_and_run(
        "127.0.0.1", port, LOGIN_USER, password, "echo sandtrap-login-ok", within_seconds=30
    )
    if result.error is not None:
        return hostchecks.login_row(None, result.error)
    if "sandtrap-login-ok" not in result.stdout:
        return hostchecks.login_row(None, f"unexpected output {result.stdout[:80]!r}")
    return hostchecks.login_row(result.elapsed)


async def runtime_versions(engine: Engine, runtime: str) -> dict[str, str]:
    """Engine, containerd and runc versions from /version Components (and runsc's own)."""
    version = await engine.version()
    found = {"Engine": str(version.get("Version", "?"))}
    for item in version.get("Components") or []:
        name = str(item.get("Name", ""))
        if name in ("containerd", "runc"):
            found[name] = str(item.get("Version", "?"))
    if runtime == "runsc":
        path = ((await engine.info()).get("Runtimes") or {}).get("runsc", {}).get("path", "runsc")
        proc = await asyncio.create_subprocess_exec(
            path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        found["runsc"] = out.decode("utf-8", "replace").splitlines()[0] if out else "unknown"
    return found


async def _userns_row(engine: Engine, sandbox_id: str) -> Row:
    """Whether the engine remaps, and the uid the sandbox's PID 1 has on this host."""
    options = (await engine.info()).get("SecurityOptions") or []
    remaps = any("name=userns" in str(option) for option in options)
    pid = int((await engine.inspect(sandbox_id)).get("State", {}).get("Pid") or 0)
    return hostchecks.userns_row(remaps, _host_uid(pid, sandbox_id) if pid else None)


def _host_uid(pid: int, container_id: str) -> int | None:
    """The effective uid of the sandbox's PID 1 as this host sees it (procfs: instant).

    None when the pid is not that container's here (a remote engine, the verifier in another
    PID namespace): the engine's pid then names some unrelated process, or none.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        if container_id not in Path(f"/proc/{pid}/cgroup").read_text(encoding="ascii"):
            return None
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])
    return None


class _Lease:
    """The verifier's sandbox, taken from the pool exactly as a session takes one.

    Held from the moment the pool hands it out, so `release()` (idempotent) covers a failure
    anywhere after; after a bomb ended it (gVisor may), `renew_if_dead()` takes a fresh one.
    """

    def __init__(self, pool: Pool, engine: Engine) -> None:
        self._pool = pool
        self._engine = engine
        self._held: tuple[ContainerSandbox, Peer] | None = None

    async def take(self) -> ContainerSandbox:
        info = Peer(secrets.token_hex(8), "127.0.0.1", 0, 0)
        sandbox = await self._pool.allocate(info)
        self._held = (sandbox, info)
        if not isinstance(sandbox, ContainerSandbox):
            raise SandTrapError("the pool handed out a sandbox that is not a Docker container")
        await _ensure_user(self._engine, sandbox)
        return sandbox

    async def renew_if_dead(self, sandbox: ContainerSandbox) -> ContainerSandbox:
        if (await self._engine.inspect(sandbox.id)).get("State", {}).get("Running"):
            return sandbox
        await self.release()
        return await self.take()

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._pool.release(*held)


async def _attack(
    service: Service, engine: Engine, listeners: Listeners, report: Callable[[str], None]
) -> list[Row]:
    config, pool = service.config, service.pool
    sandbox_config = config.sandbox
    ctx = Context(
        sandbox_config.runtime, tuple(sandbox_config.cap_add), listeners.targets,
        sandbox_config.network, addresses(sandbox_config).gateway,
    )  # fmt: skip
    rows: list[Row] = []
    lease = _Lease(pool, engine)
    try:
        sandbox = await lease.take()
        subnet = sandbox_config.sinkhole.subnet if sandbox_config.network == "sinkhole" else None
        args: dict[str, Any] = {
            "targets": list(listeners.targets), "icmp_targets": icmp_targets(listeners),
            "udp_targets": listeners.udp_targets(subnet),
        }  # fmt: skip
        if sandbox_config.network == "sinkhole":
            args["sinkhole"] = {
                "name": "verify.sandtrap.example",
                "container": container_name(config.sensor),  # a name Docker's resolver knows
                # A documentation address (RFC 5737), and another warm sandbox on the same bridge.
                "tcp": {"far": "203.0.113.7:80", "peer": await _peer(engine, config, sandbox.id)},
            }
        report("probing as root")
        as_root = await probe(engine, sandbox.id, "root", args, "root", 120)
        report(f"probing as {LOGIN_USER}")
        as_user = await probe(engine, sandbox.id, "user", args, LOGIN_USER, 180)
        inspected = (await engine.inspect(sandbox.id)).get("HostConfig", {}).get("Runtime", "?")
        rows.append(
            hostchecks.runtime_row(sandbox_config.runtime, str(inspected), as_root["uname"])
        )
        rows.append(await _userns_row(engine, sandbox.id))
        rows += checks.probe_rows(as_user, "user", ctx) + checks.probe_rows(as_root, "root", ctx)
        rows.append(checks.setuid_row(as_user.get("suid_euid"), as_root.get("suid_prepared")))
        if sandbox_config.network == "sinkhole":
            report("probing the sinkhole's own reach")
            rows += await _sinkhole_reach(engine, config, listeners)
        await asyncio.sleep(0.5)  # a datagram that did arrive is counted by then
        udp_sent = sorted({t for obs in (as_root, as_user) for t, r in obs.get("udp", {}).items()
                           if r == "sent"})  # fmt: skip
        rows.append(
            checks.Row(
                "network: UDP to the host (broadcast, multicast, unicast)",
                "host",
                "no datagram reaches a host listener",
                (f"received from {', '.join(sorted(set(listeners.udp_hits)))}"
                 if listeners.udp_hits else f"none; sent to {', '.join(udp_sent) or 'nothing'}"),
                "FAIL" if listeners.udp_hits else "PASS",
            )
        )  # fmt: skip
        rows.append(
            checks.Row(
                "network: host listeners reached",
                "host",
                "no connection from the sandbox",
                ", ".join(listeners.hits) or f"none ({len(listeners.targets)} listeners)",
                "FAIL" if listeners.hits else "PASS",
            )
        )
        report("memory bomb")
        memory = await probe_watched(
            engine, sandbox.id, "membomb", {"memory_mb": sandbox_config.memory_mb}, 120
        )
        rows.append(hostchecks.membomb_row(memory, sandbox_config.memory_mb, ctx.runtime))
        sandbox = await lease.renew_if_dead(sandbox)
        report("CPU spin")
        workers = min(os.cpu_count() or 1, math.ceil(sandbox_config.cpus) + 1)
        cpu_before, throttled_before = await cpu_stats(engine, sandbox.id)
        wall = time.monotonic()
        await probe(
            engine, sandbox.id, "cpuspin", {"seconds": 4, "workers": workers}, LOGIN_USER, 60
        )
        wall = time.monotonic() - wall
        cpu_after, throttled_after = await cpu_stats(engine, sandbox.id)
        throttled = throttled_after - throttled_before
        rows.append(
            hostchecks.cpu_row(cpu_after - cpu_before, wall, sandbox_config.cpus, throttled)
        )
        report("fork bomb")
        host_limit = host_pids_limit(sandbox_config)
        rows.append(await fork_bomb(engine, sandbox.id, sandbox_config.pids_limit, host_limit, ctx))
        sandbox = await lease.renew_if_dead(sandbox)
        report("disk fill")
        rows.append(
            await disk_fill(
                engine,
                sandbox.id,
                DataLayout(config.storage.data_dir).events_log,
                sandbox_config.disk_limit_mb,
            )
        )
    finally:
        await asyncio.shield(lease.release())
    return rows


async def verify(
    config: Config,
    *,
    runtime: str | None = None,
    strict: bool = False,
    report: Callable[[str], None] = lambda _line: None,
) -> list[Row]:
    """Run every check; returns the rows (the caller prints them and picks the exit code).

    Raises:
        SandTrapError: the engine is unreachable, the image is missing, or a probe could not run.
    """
    with tempfile.TemporaryDirectory(prefix="sandtrap-verify-") as tmp:
        vconfig, password = verifier_config(config, Path(tmp), runtime)
        engine = Engine(vconfig.sandbox.docker_url)
        listeners = Listeners()
        try:
            report("reading runtime versions")
            versions = await runtime_versions(engine, vconfig.sandbox.runtime)
            addresses = host_addresses()
            gateway = await _bridge_gateway(engine)
            if gateway:
                addresses.setdefault(gateway, "docker bridge gateway")
                addresses[gateway] = "docker bridge gateway"
            await listeners.open(addresses)
            await listeners.open_udp()
            report(f"starting a SandTrap service (sensor {vconfig.sensor})")
            rows = await _with_service(
                vconfig, engine, listeners, versions, password, strict, report
            )
        finally:
            await listeners.close()
            with contextlib.suppress(SandTrapError):
                for item in await engine.containers(*sandbox_labels(vconfig.sensor)):
                    await engine.remove(str(item["Id"]))
                if vconfig.sandbox.network == "sinkhole":
                    await remove_sinkhole(engine, vconfig)
            await engine.close()
    return rows


async def _with_service(
    vconfig: Config,
    engine: Engine,
    listeners: Listeners,
    versions: dict[str, str],
    password: str,
    strict: bool,
    report: Callable[[str], None],
) -> list[Row]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    services: list[Service] = []
    try:
        async with asyncio.TaskGroup() as tasks:
            service_task = tasks.create_task(
                serve(vconfig, ready=ready, stop=stop, on_ready=services), name="verify-serve"
            )
            waiter = tasks.create_task(ready.wait())
            await asyncio.wait({service_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not services:
                waiter.cancel()
                raise SandTrapError("the service did not start")
            try:
                rows = hostchecks.version_rows(versions, strict)
                rows += await _attack(services[0], engine, listeners, report)
                report("timing a new SSH login")
                async with asyncio.timeout(120):
                    await services[0].pool.wait_warm(1)
                rows.append(await _login(services[0].front.ports[0], password))
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        # Report the first real failure, not the task group's wrapper.
        while isinstance(group, BaseExceptionGroup):
            group = group.exceptions[0]
        raise group from None
    return rows


async def _sinkhole_reach(engine: Engine, config: Config, listeners: Listeners) -> list[Row]:
    """The sinkhole probed as its service's user: the host's addresses (not its own loopback,
    which is its own), the bridge gateway, a documentation address, the engine and gate sockets.
    Hits on the listeners during this probe are the sinkhole's, and are reported as such."""
    targets = {t: what for t, what in listeners.targets.items()
               if not ipaddress.ip_address(t.rpartition(":")[0]).is_loopback}  # fmt: skip
    targets["203.0.113.7:80"] = "documentation address"
    paths = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        str(DataLayout(config.storage.data_dir).gate_socket),
    ]
    if isinstance(config.sandbox.gate, str) and config.sandbox.gate.startswith("/"):
        paths.append(config.sandbox.gate)
    before, udp_before = len(listeners.hits), len(listeners.udp_hits)
    observed = await sinkself.probe_sinkhole(
        engine, container_name(config.sensor), list(targets), paths,
        listeners.udp_targets(config.sandbox.sinkhole.subnet),
    )  # fmt: skip
    await asyncio.sleep(0.5)  # a connection or datagram that did arrive is counted by then
    hits = listeners.hits[before:] + [f"udp from {a}" for a in listeners.udp_hits[udp_before:]]
    # The sandbox's rows judge the sandbox's probes only.
    del listeners.hits[before:], listeners.udp_hits[udp_before:]
    rows = sinkself.sinkhole_self_rows(observed, hits, targets)
    isolation = PortIsolation(engine, config)
    try:
        ports = bridge_ports(bridge_name(config.sensor))
    except FileNotFoundError:
        ports = None
    rows.append(sinkself.bridge_row(ports, await isolation.find_sinkhole()))
    return rows


async def _peer(engine: Engine, config: Config, own_id: str) -> str:
    """Port 80 of another running sandbox of this sensor (nothing listens: a reachable one would
    refuse the connection), or a free address of the sandboxes' range when there is none."""
    listing = await engine.containers(*sandbox_labels(config.sensor), all_states=False)
    for item in listing:
        nets = (item.get("NetworkSettings") or {}).get("Networks") or {}
        address = (nets.get(network_name(config.sensor)) or {}).get("IPAddress")
        if item.get("Id") != own_id and address:
            return f"{address}:80"
    return f"{ipaddress.IPv4Network(addresses(config.sandbox).ip_range).broadcast_address - 1}:80"


async def _bridge_gateway(engine: Engine) -> str | None:
    try:
        network = await engine.request("GET", "networks/bridge", operation="network inspect")
    except SandTrapError:
        return None
    for item in (network.get("IPAM") or {}).get("Config") or []:
        if item.get("Gateway"):
            return str(item["Gateway"])
        if item.get("Subnet"):  # Debian's 20.10 lists no Gateway for the default bridge
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_network(str(item["Subnet"])).network_address + 1)
    return None
