"""Brute force (issue 13): password attempts from one address; how many each target recorded, and
how long the attacker needed.

The guesser (`sandtrap.ssh.client.guess_passwords`, hydra-like: a few connections at once, several
passwords each, a refused connection's passwords retried on the next) runs in its own process
(`python -m bench.brute_bench`), so it shares no interpreter with SandTrap (a thread of the
harness). SandTrap runs with its default limits and failed-password delay, not the harness's lifted
limits: the figure is what an operator gets. Each target's own log says what it recorded: SandTrap's
events.jsonl (`auth.failed`/`auth.success`), Cowrie's cowrie.json (`cowrie.login.*`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.peers import Peer
from bench.stats import Figure, Row

SOURCE = "127.0.0.2"  # every attempt from this one loopback address
# No account of either target accepts these (SandTrap's bench login is root/benchpass; Cowrie's
# default user database accepts only listed names, see bench/peers.py).
USER = "brute"


@dataclass(frozen=True)
class BrutePlan:
    attempts: int
    concurrency: int
    per_connection: int


def plan(quick: bool) -> BrutePlan:
    return BrutePlan(100 if quick else 1000, 8, 6)


@dataclass(frozen=True)
class BruteTarget:
    """A peer plus how to read the passwords it recorded from its own log."""

    peer: Peer
    recorded: Callable[[], list[str]]


@dataclass(frozen=True)
class BruteResult:
    sent: int
    recorded: int  # distinct passwords of this run found in the target's log
    connections: int
    refused: int
    seconds: float


def passwords(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n:04d}" for n in range(count)]


def sandtrap_recorded(events: Path) -> Callable[[], list[str]]:
    def read() -> list[str]:
        if not events.exists():
            return []
        records = (json.loads(line) for line in events.read_text().splitlines())
        return [
            r["password"]
            for r in records
            if r["eventid"] in ("auth.failed", "auth.success") and r.get("password") is not None
        ]

    return read


def cowrie_recorded(log: Path) -> Callable[[], list[str]]:
    def read() -> list[str]:
        if not log.exists():
            return []
        records = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
        return [
            r["password"]
            for r in records
            if r.get("eventid") in ("cowrie.login.failed", "cowrie.login.success")
        ]

    return read


def run(target: BruteTarget, steps: BrutePlan, timeout_seconds: float = 1800) -> BruteResult:
    """One brute force against `target` from SOURCE; counts what its log recorded."""
    prefix = f"bf{target.peer.port}"
    argv = [sys.executable, "-m", "bench.brute_bench", "--port", str(target.peer.port)]
    argv += ["--prefix", prefix, "--count", str(steps.attempts)]
    argv += ["--concurrency", str(steps.concurrency), "--per-connection", str(steps.per_connection)]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=timeout_seconds
    ).stdout
    guessed = json.loads(out)
    wanted = set(passwords(prefix, steps.attempts))
    recorded = wanted & set(target.recorded())
    result = BruteResult(
        sent=guessed["sent"],
        recorded=len(recorded),
        connections=guessed["connections"],
        refused=guessed["refused"],
        seconds=guessed["elapsed"],
    )
    print(f"   brute force {target.peer.name}: {result}", flush=True)
    return result


def figures(targets: Sequence[BruteTarget], steps: BrutePlan) -> list[Figure]:
    """Share of attempts recorded and the attacker's time, SandTrap (first) against the others."""
    results = {t.peer.name: run(t, steps) for t in targets}
    ours, *others = results
    what = (
        f"{steps.attempts} password attempts from one address, {steps.concurrency} connections "
        f"at a time, up to {steps.per_connection} each"
    )
    recorded = Figure(
        key="bruteforce",
        title=f"Brute force: attempts recorded ({what})",
        unit="%",
        higher_is_better=True,
        rows=[
            Row(
                "recorded",
                100 * results[ours].recorded / steps.attempts,
                {n: 100 * results[n].recorded / steps.attempts for n in others},
            )
        ],
    )
    timing = Figure(
        key="bruteforce-time",
        title=f"Brute force: the attacker's time ({what})",
        unit="s",
        higher_is_better=False,
        rows=[Row("all sent", results[ours].seconds, {n: results[n].seconds for n in others})],
    )
    detail = {name: asdict(r) for name, r in results.items()}
    recorded.notes.append(f"per target: {detail}")
    timing.notes.append(
        "SandTrap answers a failed password after 2 s (+ up to 25% jitter), as Debian's PAM does "
        "(`ssh.auth_failure_delay_seconds`), Cowrie (Twisted) after 1 s; that delay, not "
        "admission, sets the time."
    )
    return [recorded, timing]


def _main() -> None:
    """The guesser process: prints its GuessResult as JSON (counts, not the passwords)."""
    from sandtrap.ssh.client import guess_passwords

    parser = argparse.ArgumentParser(prog="python -m bench.brute_bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--per-connection", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(
        guess_passwords(
            "127.0.0.1",
            args.port,
            USER,
            passwords(args.prefix, args.count),
            concurrency=args.concurrency,
            per_connection=args.per_connection,
            local_addr=(SOURCE, 0),
            within_seconds=1700,
        )
    )
    summary = {
        "sent": len(set(result.sent)),
        "connections": result.connections,
        "refused": result.refused,
        "elapsed": result.elapsed,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    _main()
