"""The host's own wall around the sinkhole's bridge: nothing from it is delivered to the host or
routed anywhere.

The bridge's host side has no address, but the host's IP stack still takes what arrives on it
for the host: a sandbox's UDP to 255.255.255.255 or 224.0.0.1 reached UDP listeners on the host
(found by attacking it), whose answers then left through the host's uplink, and Docker accepts
forwarding from every bridge it makes (`-i <bridge> ! -o <bridge> -j ACCEPT`). So the keeper of
the sinkhole (`network/deploy.supervise`) inserts, at the top of the host's filter chains:

    iptables  INPUT   -i <bridge>               -j DROP
    iptables  FORWARD -i <bridge> ! -o <bridge> -j DROP   (bridged frames, -o <bridge>, pass)
    ip6tables INPUT   -i <bridge>               -j DROP
    ip6tables FORWARD -i <bridge>               -j DROP

each tagged with a comment naming the bridge, checked again every `RESYNC_SECONDS` (a firewall
reload that flushed them is undone) and removed with the sensor's network (`remove_rules`).
`iptables` ships with every Docker engine (docker.io depends on it). Where the keeper is not root
in the host's network namespace (the compose gate), it says so once: add the rules yourself
(docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence

log = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 20.0


def rules(bridge: str) -> list[tuple[str, str, list[str]]]:
    """(tool, chain, match) of each rule for `bridge` (pure)."""
    tag = ["-m", "comment", "--comment", f"sandtrap: nothing from {bridge} reaches the host"]
    return [
        ("iptables", "INPUT", ["-i", bridge, *tag, "-j", "DROP"]),
        ("iptables", "FORWARD", ["-i", bridge, "!", "-o", bridge, *tag, "-j", "DROP"]),
        ("ip6tables", "INPUT", ["-i", bridge, *tag, "-j", "DROP"]),
        ("ip6tables", "FORWARD", ["-i", bridge, *tag, "-j", "DROP"]),
    ]


async def run_command(
    argv: Sequence[str], *, output: bool = False, stdin: str | None = None
) -> tuple[int, str]:
    """Run a short host command, with `stdin` as its input: (exit status, the end of its stderr,
    or with `output` its stdout up to 64 KiB); 124 on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE if output else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            out, err = await proc.communicate(None if stdin is None else stdin.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"{argv[0]} timed out"
    if output:
        return proc.returncode or 0, (out or b"")[:65536].decode("utf-8", "replace")
    return proc.returncode or 0, err.decode("utf-8", "replace").strip()[-300:]


async def ensure_rules(bridge: str) -> list[str]:
    """Insert each rule that is missing; returns what could not be done (empty: all in place)."""
    problems: list[str] = []
    for tool, chain, match in rules(bridge):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed")
            continue
        status, _ = await run_command([tool, "-w", "10", "-C", chain, *match])
        if status == 0:
            continue
        status, err = await run_command([tool, "-w", "10", "-I", chain, "1", *match])
        if status != 0:
            problems.append(f"{tool} -I {chain}: {err or f'exit {status}'}")
        else:
            log.info("host firewall: %s %s drops what comes from %s", tool, chain, bridge)
    return problems


async def remove_rules(bridge: str) -> None:
    """Delete the rules of `bridge` (every copy); missing tools or rules are not an error."""
    for tool, chain, match in rules(bridge):
        if shutil.which(tool) is None:
            continue
        for _ in range(8):  # a rule inserted twice by two keepers is there twice
            status, _ = await run_command([tool, "-w", "10", "-D", chain, *match])
            if status != 0:
                break


async def keep_rules(bridge: str, interval: float = RESYNC_SECONDS) -> None:
    """Keep the rules in place until cancelled; a failure is said once (and again when it
    changes), and the rules are retried every interval."""
    said: list[str] = []
    while True:
        problems = await ensure_rules(bridge)
        if problems and problems != said:
            log.warning(
                "host firewall for the sinkhole's bridge %s incomplete (%s): add the rules of "
                "docs/deployment.md by hand; sandboxes may reach host UDP services by broadcast",
                bridge,
                "; ".join(problems),
            )
        elif said and not problems:
            log.info("host firewall for %s in place", bridge)
        said = problems
        await asyncio.sleep(interval)
