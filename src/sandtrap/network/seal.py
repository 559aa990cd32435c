"""Sealing a sinkhole sandbox as the gate starts it, before the front hears that it runs.

Two things that must hold before anyone can log in to the sandbox, done by the gate (root in
the host's namespaces) between the engine's answer to `containers/<id>/start` and its own:

- its port on the sensor's bridge gets the kernel's `isolated` flag at once (the keeper's loop,
  `network/isolate.py`, would within 0.2 s; this leaves no window at all);
- Docker's embedded resolver (127.0.0.11, which answers every container's name on the network,
  `sandtrap-s-<session>` and the sinkhole's included, and is a Docker tell by itself) is closed
  in the sandbox's own network namespace: port 53 and the resolver's own ports answer like
  closed ones (TCP reset, UDP port unreachable), as on a server where nothing listens there.

The sandbox has no `NET_ADMIN`, so it cannot undo either.

What cannot be done is logged and counted by the caller; the sandbox still starts (its ARP
isolation and the keeper's loop still hold; the resolver is then only a tell).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

from sandtrap.config import Config
from sandtrap.errors import SandboxError
from sandtrap.network.hostwall import run_command
from sandtrap.network.isolate import SYS_NET, bridge_ports, host_port_index, set_isolated
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.sinknet import container_name, network_name

log = logging.getLogger(__name__)

DOCKER_RESOLVER = "127.0.0.11/32"
# Docker DNATs 127.0.0.11:53 to its resolver's own ports (`DOCKER_OUTPUT` in the nat table).
# Closing it: a nat RETURN ahead of that jump (port 53 then has nothing behind it, as on any
# server: TCP reset, UDP port unreachable; a user's own service on 127.0.0.11 works as anywhere),
# and a REJECT in INPUT for the resolver's own two ports, so they answer like closed ones.
SKIP_DOCKER_DNAT = ["OUTPUT", "-d", DOCKER_RESOLVER, "-j", "RETURN"]
_DOCKER_DNAT = re.compile(r"-p (tcp|udp) .*--to-destination 127\.0\.0\.11:(\d{1,5})\b")


def resolver_ports(nat_rules: str) -> dict[str, int]:
    """The resolver's own ports by protocol, from `iptables -t nat -S DOCKER_OUTPUT` (pure)."""
    found: dict[str, int] = {}
    for line in nat_rules.splitlines()[:64]:
        match = _DOCKER_DNAT.search(line)
        if match and 0 < int(match.group(2)) < 65536:
            found.setdefault(match.group(1), int(match.group(2)))
    return found


def reject_rules(ports: dict[str, int]) -> list[list[str]]:
    """filter INPUT rules that make the resolver's ports answer like closed ones (pure)."""
    how = {"tcp": "tcp-reset", "udp": "icmp-port-unreachable"}
    return [
        ["INPUT", "-i", "lo", "-d", DOCKER_RESOLVER, "-p", proto, "-m", proto, "--dport",
         str(port), "-j", "REJECT", "--reject-with", how[proto]]
        for proto, port in sorted(ports.items())
    ]  # fmt: skip


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


def _option_groups(tokens: list[str]) -> list[tuple[str, ...]]:
    """A rule's options as groups (`-p tcp`, `! -o br0`), in a canonical order (pure)."""
    groups: list[list[str]] = []
    negate = False
    for word in tokens:
        if word == "!":
            negate = True
        elif word.startswith("-") or not groups:
            groups.append(["!", word] if negate else [word])
            negate = False
        else:
            groups[-1].append(word)
    return sorted(tuple(group) for group in groups)


def saved_rules(saved: str) -> dict[str, list[list[str]]]:
    """`iptables-save` output as table -> its `-A` lines split into words (pure, bounded)."""
    tables: dict[str, list[list[str]]] = {}
    table = ""
    for line in saved.splitlines()[:4096]:
        if line.startswith("*"):
            table = line[1:].strip()
            tables.setdefault(table, [])
        elif line.startswith("-A ") and table:
            tables[table].append(line.split()[1:])
    return tables


def missing_rules(saved: str) -> list[tuple[str, list[str]]]:
    """The (table, rule) pairs that close the resolver and are not in the namespace yet, from
    its `iptables-save` (pure; a rule counts as there whatever the order of its options)."""
    tables = saved_rules(saved)
    dnat = "\n".join(" ".join(["-A", *rule]) for rule in tables.get("nat", []))
    wanted = [("nat", SKIP_DOCKER_DNAT)]
    wanted += [("filter", rule) for rule in reject_rules(resolver_ports(dnat))]
    missing = []
    for table, rule in wanted:
        have = {
            (line[0], tuple(_option_groups(line[1:]))) for line in tables.get(table, []) if line
        }
        if (rule[0], tuple(_option_groups(rule[1:]))) not in have:
            missing.append((table, rule))
    return missing


def restore_input(rules: list[tuple[str, list[str]]]) -> str:
    """`iptables-restore --noflush` input inserting each rule at the top of its chain (pure)."""
    out: list[str] = []
    for table in dict.fromkeys(table for table, _ in rules):
        out.append(f"*{table}")
        out += [" ".join(["-I", rule[0], "1", *rule[1:]]) for t, rule in rules if t == table]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


async def close_resolver(pid: int) -> list[str]:
    """Close Docker's resolver in the network namespace of `pid` (idempotent); problems.

    Two processes at most: one `iptables-save` to read the namespace's rules (the resolver's
    ports, and which of ours are there), one `iptables-restore --noflush` for what is missing.
    """
    ns = ["nsenter", "-t", str(pid), "-n"]
    status, saved = await run_command([*ns, "iptables-save"], output=True)
    if status != 0:
        return [f"cannot read the sandbox's nat rules (exit {status})"]
    missing = missing_rules(saved)
    if not missing:
        return []
    status, err = await run_command(
        [*ns, "iptables-restore", "--noflush", "-w", "10"], stdin=restore_input(missing)
    )
    return [] if status == 0 else [f"resolver rules: {err or f'exit {status}'}"]


async def seal(pid: int, bridge: str) -> list[str]:
    """Both steps for the sandbox whose init is `pid`; returns what could not be done."""
    problems: list[str] = []
    try:
        await asyncio.to_thread(isolate_port, pid, bridge)
    except (OSError, ValueError, LookupError) as exc:
        problems.append(f"port isolation: {exc}")
    tools = ("nsenter", "iptables-save", "iptables-restore")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        problems.append(f"{' and '.join(missing)} not installed: Docker's resolver stays open")
    else:
        problems += await close_resolver(pid)
    return problems


class ResolverKeeper:
    """The keeper's second look (`deploy.supervise`, when a new port appears on the bridge):
    every sandbox on the network whose process is new (one started outside the gate, e.g. an
    operator's `docker restart`) gets its resolver closed too. One network listing per new port,
    and one inspect per sandbox not seen before or whose process has gone. `sealed` is the gate's
    record of what it sealed as it started them (`gate/sealing.py`, same process): those are not
    looked at again while their process lives."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        proc: Path = Path("/proc"),
        sealed: dict[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.proc = proc
        self._pids: dict[str, int] = {}  # container id -> the process whose namespace is closed
        self._sealed = sealed if sealed is not None else {}
        self._said: set[str] = set()

    async def check(self) -> None:
        sensor = self.config.sensor
        try:
            network = await self.engine.request(
                "GET", f"networks/{network_name(sensor)}", operation="network"
            )
        except (SandboxError, TimeoutError):
            return
        members = network.get("Containers") if isinstance(network, dict) else None
        ids = [str(cid) for cid in (members or {}) if len(str(cid)) == 64]
        self._pids = {cid: pid for cid, pid in self._pids.items() if cid in ids}
        for cid in [cid for cid in self._sealed if cid not in ids]:
            del self._sealed[cid]  # gone from the network (the gate adds, this prunes)
        for cid in ids:
            known = self._pids.get(cid, self._sealed.get(cid))
            if known is not None and (known < 0 or (self.proc / str(known)).exists()):
                continue
            try:
                details = await self.engine.inspect(cid)
            except (SandboxError, TimeoutError):
                continue
            if details.get("Name", "").lstrip("/") == container_name(sensor):
                self._pids[cid] = -1  # the sinkhole: not a sandbox
                continue
            pid = (details.get("State") or {}).get("Pid")
            if not isinstance(pid, int) or pid <= 0:
                continue
            problems = await close_resolver(pid)
            self._pids[cid] = pid
            fresh = [p for p in problems if p not in self._said]
            if fresh:
                self._said.update(fresh)
                log.warning("keeper: resolver of %s not closed: %s", cid[:12], "; ".join(fresh))
