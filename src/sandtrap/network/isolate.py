"""Bridge port isolation on the host: sandboxes on the sinkhole's bridge reach the sinkhole only.

Defence in depth under the sandboxes' own ARP isolation (`sandbox/sinknet.py`, which holds as
long as the kernel keeps root in a sandbox from sending frames it did not resolve): every port of
the sensor's bridge but the sinkhole's gets the kernel's `isolated` flag
(`/sys/class/net/<port>/brport/isolated`, Linux 4.18+), and the bridge forwards no frame between
two isolated ports, whatever a sandbox sends. The sinkhole's port stays open: isolated ports
talk to it and it to them.

Run by whoever keeps the sinkhole (`network/deploy.supervise`: the gate, or the service with
`sandbox.gate: off`), which must be root in the host's network namespace; elsewhere (a gate in
a container of its own) the bridge is not visible, which is said once and then checked again
quietly. Fail closed: a port is isolated unless it is known to be the sinkhole's, so a
restarted sinkhole is cut off (not its sandboxes let through) until its new port is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sandtrap.config import Config
from sandtrap.errors import SandboxError
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.sinknet import bridge_name, container_name

log = logging.getLogger(__name__)

SYS_NET = Path("/sys/class/net")
INTERVAL_SECONDS = 0.2
RESOLVE_SECONDS = 1.0  # at most one engine call a second to find the sinkhole's port
RESYNC_SECONDS = 5.0  # every port read again (a flag someone on the host changed is restored)
UNAVAILABLE_SECONDS = 5.0


def bridge_ports(
    bridge: str, sys_net: Path = SYS_NET, names: Iterable[str] | None = None
) -> dict[str, tuple[int, bool]]:
    """The bridge's ports (or those of `names`): name -> (ifindex, isolated).

    Raises:
        FileNotFoundError: the bridge is not there (or not visible from this namespace).
    """
    out: dict[str, tuple[int, bool]] = {}
    for name in os.listdir(sys_net / bridge / "brif") if names is None else names:
        with contextlib.suppress(OSError, ValueError):  # a port that just went away
            index = int((sys_net / name / "ifindex").read_text())
            isolated = (sys_net / name / "brport" / "isolated").read_text().strip() == "1"
            out[name] = (index, isolated)
    return out


def host_port_index(pid: int, proc: Path = Path("/proc")) -> int:
    """The host-side ifindex of the container's eth0 (its `iflink`, read through its root).

    Raises:
        OSError, ValueError: the process or its interface is gone, or the file is not a number.
    """
    path = proc / str(pid) / "root" / "sys" / "class" / "net" / "eth0" / "iflink"
    return int(path.read_text().strip()[:12])


def set_isolated(port: str, on: bool, sys_net: Path = SYS_NET) -> None:
    (sys_net / port / "brport" / "isolated").write_text("1" if on else "0")


def plan(ports: dict[str, tuple[int, bool]], sinkhole_index: int | None) -> dict[str, bool]:
    """Which ports to change, and to what (pure): every port isolated but the sinkhole's."""
    changes: dict[str, bool] = {}
    for name, (index, isolated) in ports.items():
        want = index != sinkhole_index
        if isolated != want:
            changes[name] = want
    return changes


@dataclass
class PortIsolation:
    """The loop's state; `run` until cancelled."""

    engine: Engine
    config: Config
    sys_net: Path = SYS_NET
    proc: Path = Path("/proc")
    sinkhole_index: int | None = None
    isolated: int = 0  # ports isolated so far (for the log and the tests)
    _resolved_at: float = field(default=-1e9, repr=False)
    _synced_at: float = field(default=-1e9, repr=False)
    _settled: dict[str, int] = field(default_factory=dict, repr=False)  # name -> ifindex
    # Called after a pass that found new ports (network/seal.py's ResolverKeeper).
    on_new_ports: Callable[[], Awaitable[None]] | None = None
    _unavailable: bool = field(default=False, repr=False)

    async def find_sinkhole(self) -> int | None:
        """The host-side ifindex of the sinkhole's eth0 (its `iflink`, read through its root)."""
        try:
            details = await self.engine.inspect(container_name(self.config.sensor))
        except (SandboxError, TimeoutError):
            return None
        pid = int((details.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            return None
        try:
            return await asyncio.to_thread(host_port_index, pid, self.proc)
        except (OSError, ValueError):
            return None

    async def step(self) -> None:
        """One pass: list the ports; read and settle the new ones (all of them every
        `RESYNC_SECONDS` or when the sinkhole's port changed), finding the sinkhole's port when
        it is not among them. A quiet bridge costs one directory listing."""
        bridge = bridge_name(self.config.sensor)
        brif = self.sys_net / bridge / "brif"
        names = set(await asyncio.to_thread(os.listdir, brif))
        now = asyncio.get_running_loop().time()
        if now - self._synced_at >= RESYNC_SECONDS:
            self._synced_at, self._settled = now, {}
        self._settled = {n: i for n, i in self._settled.items() if n in names}
        fresh = names - self._settled.keys()
        if not fresh and self.sinkhole_index in self._settled.values():
            return
        ports = await asyncio.to_thread(bridge_ports, bridge, self.sys_net, fresh)
        known = set(self._settled.values()) | {index for index, _ in ports.values()}
        if self.sinkhole_index not in known and now - self._resolved_at >= RESOLVE_SECONDS:
            self._resolved_at = now
            found = await self.find_sinkhole()
            if found != self.sinkhole_index:  # the sinkhole came back on another port
                self.sinkhole_index, self._settled = found, {}
                ports = await asyncio.to_thread(bridge_ports, bridge, self.sys_net)
        changes = plan(ports, self.sinkhole_index)
        for port, (index, _) in ports.items():
            if port in changes:
                try:
                    await asyncio.to_thread(set_isolated, port, changes[port], self.sys_net)
                except FileNotFoundError:
                    continue  # the port went away meanwhile
                self.isolated += changes[port]
                log.debug("bridge %s port %s isolated=%s", bridge, port, changes[port])
            self._settled[port] = index
        if fresh and self.on_new_ports is not None:
            await self.on_new_ports()

    async def run(self, interval: float = INTERVAL_SECONDS) -> None:
        bridge = bridge_name(self.config.sensor)
        while True:
            try:
                await self.step()
            except FileNotFoundError:
                if not self._unavailable:
                    self._unavailable = True
                    log.warning(
                        "bridge port isolation unavailable: bridge %s is not visible here (not "
                        "the host's network namespace?); sandboxes rely on their ARP isolation",
                        bridge,
                    )
                await asyncio.sleep(UNAVAILABLE_SECONDS)
                continue
            except OSError as exc:  # EPERM, EACCES, EROFS: not root on the host's /sys
                log.warning(
                    "bridge port isolation unavailable on %s (%s): needs root in the host's "
                    "network namespace; sandboxes rely on their ARP isolation",
                    bridge,
                    exc,
                )
                return
            if self._unavailable:
                self._unavailable = False
                log.info("bridge port isolation on %s active", bridge)
            await asyncio.sleep(interval)
