"""Sealing a sinkhole sandbox as the gate starts it, before the front hears that it runs.

Two things that must hold before anyone can log in to the sandbox, done by the gate (root in
the host's namespaces) between the engine's answer to `containers/<id>/start` and its own:

- its port on the sensor's bridge gets the kernel's `isolated` flag at once (the keeper's loop,
  `network/isolate.py`, would within 0.2 s; this leaves no window at all);
- Docker's embedded resolver (127.0.0.11, which answers every container's name on the network,
  `sandtrap-s-<session>` and the sinkhole's included, and is a Docker tell by itself) is closed
  in the sandbox's own network namespace: every port of it is sent to a closed one, so TCP gets a
  reset and UDP an ICMP port unreachable, as on a server where nothing listens there.

The sandbox has no `NET_ADMIN`, so it cannot undo either.

What cannot be done is logged and counted by the caller; the sandbox still starts (its ARP
isolation and the keeper's loop still hold; the resolver is then only a tell).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from sandtrap.network.hostwall import run_command
from sandtrap.network.isolate import SYS_NET, bridge_ports, set_isolated

log = logging.getLogger(__name__)

DOCKER_RESOLVER = "127.0.0.11/32"
# Every port of 127.0.0.11 is sent to port 9, where nothing listens (binding it needs
# NET_BIND_SERVICE, which no sandbox has): UDP gets an ICMP port unreachable, TCP a reset, as on a
# server without that address. Inserted in the nat table ahead of Docker's own DNAT to its resolver.
RESOLVER_RULES = tuple(
    ["OUTPUT", "-d", DOCKER_RESOLVER, "-p", proto, "-j", "DNAT", "--to-destination", "127.0.0.11:9"]
    for proto in ("udp", "tcp")
)


def host_port_index(pid: int, proc: Path = Path("/proc")) -> int:
    """The host-side ifindex of the container's eth0 (its `iflink`, read through its root)."""
    path = proc / str(pid) / "root" / "sys" / "class" / "net" / "eth0" / "iflink"
    return int(path.read_text().strip()[:12])


def isolate_port(pid: int, bridge: str, sys_net: Path = SYS_NET, proc: Path = Path("/proc")) -> str:
    """Set the `isolated` flag on the bridge port of the container `pid`; the port's name.

    Raises:
        OSError: the port cannot be read or written; LookupError: not on this bridge.
    """
    index = host_port_index(pid, proc)
    for name, (port_index, isolated) in bridge_ports(bridge, sys_net).items():
        if port_index == index:
            if not isolated:
                set_isolated(name, True, sys_net)
            return name
    raise LookupError(f"no port of {bridge} has ifindex {index}")


async def close_resolver(pid: int) -> list[str]:
    """Insert the REJECT rules in the container's network namespace (once); problems."""
    problems: list[str] = []
    for match in RESOLVER_RULES:
        ns = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", "10", "-t", "nat"]
        status, _ = await run_command([*ns, "-C", *match])
        if status == 0:
            continue
        status, err = await run_command([*ns, "-I", match[0], "1", *match[1:]])
        if status != 0:
            problems.append(f"resolver rule: {err or f'exit {status}'}")
    return problems


async def seal(pid: int, bridge: str) -> list[str]:
    """Both steps for the sandbox whose init is `pid`; returns what could not be done."""
    problems: list[str] = []
    try:
        await asyncio.to_thread(isolate_port, pid, bridge)
    except (OSError, ValueError, LookupError) as exc:
        problems.append(f"port isolation: {exc}")
    missing = [tool for tool in ("nsenter", "iptables") if shutil.which(tool) is None]
    if missing:
        problems.append(f"{' and '.join(missing)} not installed: Docker's resolver stays open")
    else:
        problems += await close_resolver(pid)
    return problems
