"""SSH figures (issue 8): connect-to-first-output, exec throughput, memory with idle sessions.

Each figure measures every target in the same run, interleaved where it matters (connect latency
is measured round-robin so drift hits every target alike). Targets are `Peer`s; SandTrap is one,
with this process as its pid since it runs in a thread of the harness.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.peers import Peer
from bench.resources import rss_kib, tree_rss_kib
from bench.sshclient import IdleSessions, Timing, ssh_argv, timed_run
from bench.stats import Figure, Row, Summary

SANDTRAP = "SandTrap"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SshPlan:
    connects: int
    connect_warmups: int
    throughput_bytes: int
    throughput_runs: int
    session_levels: tuple[int, ...]


def plan(quick: bool) -> SshPlan:
    if quick:
        return SshPlan(5, 1, 16 * _MIB, 2, (5,))
    return SshPlan(60, 3, 256 * _MIB, 3, (50, 100))


def _split(targets: Sequence[Peer]) -> tuple[Peer, list[Peer]]:
    ours = next(t for t in targets if t.name == SANDTRAP)
    return ours, [t for t in targets if t.name != SANDTRAP]


# The key exchange both sides can do fast: sntrup761 (OpenSSH 9.2's first choice, offered by
# SandTrap and Debian's sshd, not by Cowrie) costs the client about 60 ms of key generation.
FORCED_KEX = "curve25519-sha256"


def connect_figure(targets: Sequence[Peer], steps: SshPlan, kex: str | None = None) -> Figure:
    """`ssh host 'echo hi'` sequentially, targets interleaved; ms to the first output byte.
    With `kex`, every client is made to use that key exchange (`-o KexAlgorithms=`)."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    failures: dict[str, int] = dict.fromkeys(samples, 0)
    forced = ["-o", f"KexAlgorithms={kex}"] if kex else []
    for index in range(steps.connect_warmups + steps.connects):
        for target in targets:
            argv = ssh_argv(target.port, target.user, target.password, "echo hi")
            at = argv.index("ssh") + 1
            argv = [*argv[:at], *forced, *argv[at:]]
            try:
                timing = timed_run(argv, timeout_seconds=60)
            except TimeoutError:
                failures[target.name] += 1
                continue
            if timing.status != 0 or timing.output_bytes != 3:
                failures[target.name] += 1
            elif index >= steps.connect_warmups:
                samples[target.name].append(timing.first_output * 1000)
    summaries = {name: Summary.of(values) for name, values in samples.items()}
    ours, peers = _split(targets)
    figure = Figure(
        key=f"connect-{kex}" if kex else "connect",
        title="Connect-to-first-output: ssh host 'echo hi' (OpenSSH client via sshpass"
        + (f", {kex} forced)" if kex else ", default key exchange)"),
        unit="ms",
        higher_is_better=False,
        rows=[
            Row(
                stat,
                getattr(summaries[ours.name], stat),
                {p.name: getattr(summaries[p.name], stat) for p in peers},
            )
            for stat in ("p50", "p95", "p99")
        ],
    )
    counts = ", ".join(f"{name} n={summary.n}" for name, summary in summaries.items())
    figure.notes.append(
        f"{counts}; {steps.connect_warmups} warm-up round(s) excluded; "
        "time from client start (sshpass + ssh, TCP, kex, password auth, exec) to the first "
        "stdout byte; SandTrap's pool at its default size."
    )
    failed = {name: count for name, count in failures.items() if count}
    if failed:
        figure.notes.append(f"failed runs (excluded): {failed}")
    return figure


def _throughput(target: Peer, steps: SshPlan) -> tuple[list[float], int]:
    command = f"head -c {steps.throughput_bytes} /dev/zero"
    rates: list[float] = []
    failures = 0
    for index in range(1 + steps.throughput_runs):
        argv = ssh_argv(target.port, target.user, target.password, command)
        try:
            timing: Timing = timed_run(argv, timeout_seconds=600)
        except TimeoutError:
            failures += 1
            continue
        if timing.status != 0 or timing.output_bytes != steps.throughput_bytes:
            failures += 1
        elif index >= 1:
            rates.append(timing.output_bytes / _MIB / (timing.total - timing.first_output))
    return rates, failures


def throughput_figure(targets: Sequence[Peer], steps: SshPlan) -> Figure:
    """`head -c SIZE /dev/zero` through exec, MiB/s from the first byte to the client's exit."""
    results = {t.name: _throughput(t, steps) for t in targets}
    ours, peers = _split(targets)

    def median(name: str) -> float:
        return Summary.of(results[name][0]).p50

    figure = Figure(
        key="throughput",
        title=f"Throughput: head -c {steps.throughput_bytes // _MIB}M /dev/zero through exec",
        unit="MiB/s",
        higher_is_better=True,
        rows=[Row("median", median(ours.name), {p.name: median(p.name) for p in peers})],
    )
    figure.notes.append(
        f"{steps.throughput_runs} run(s) per target after 1 warm-up; both run `head` in a "
        "container with SandTrap's hardening (0.5 CPU); login time excluded."
    )
    failed = {name: r[1] for name, r in results.items() if r[1]}
    if failed:
        figure.notes.append(f"failed runs (excluded): {failed}")
    return figure


_PHASES = ("session.connect", "auth.success", "session.exec", "sandbox.allocated")


def phase_breakdown(events_path: Path, command: str = "echo hi") -> str | None:
    """Median ms between SandTrap's own events for sessions that ran `command`, from its log."""
    if not events_path.exists():
        return None
    stamps: dict[str, dict[str, datetime]] = {}
    ran: set[str] = set()
    for line in events_path.read_text().splitlines():
        record = json.loads(line)
        session = record.get("session")
        if not session or record.get("eventid") not in _PHASES:
            continue
        stamps.setdefault(session, {}).setdefault(
            record["eventid"], datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        )
        if record["eventid"] == "session.exec" and record.get("input") == command:
            ran.add(session)
    complete = [stamps[s] for s in ran if all(p in stamps[s] for p in _PHASES)]
    if not complete:
        return None
    parts = []
    for before, after in itertools.pairwise(_PHASES):
        gaps = [(s[after] - s[before]).total_seconds() * 1000 for s in complete]
        parts.append(f"{before} -> {after} {statistics.median(gaps):.1f} ms")
    return f"SandTrap phases (median of {len(complete)} sessions, from its events): " + "; ".join(
        parts
    )


@dataclass(frozen=True)
class MemoryTarget:
    peer: Peer
    rss: Callable[[], int]  # KiB
    settle: Callable[[], None]  # after sessions close: wait until the target has let go


def memory_target(peer: Peer, settle: Callable[[], None] | None = None) -> MemoryTarget:
    if peer.name == SANDTRAP:
        return MemoryTarget(peer, rss_kib, settle or (lambda: None))
    return MemoryTarget(peer, lambda: tree_rss_kib(peer.pid), settle or (lambda: None))


def _memory_levels(target: MemoryTarget, levels: Sequence[int]) -> tuple[list[float], list[int]]:
    """RSS (MiB) idle and at each level of open idle sessions; sessions ready per level."""
    peer = target.peer
    sessions = IdleSessions(peer.port, peer.user, peer.password, hold_seconds=900)
    time.sleep(1)
    values = [target.rss() / 1024]
    ready_counts: list[int] = []
    ready = 0
    try:
        for level in levels:
            ready += sessions.open(level - len(sessions.procs), batch=3, timeout_seconds=300)
            ready_counts.append(ready)
            time.sleep(2)  # let the server finish setting up the last sessions
            values.append(target.rss() / 1024)
    finally:
        sessions.close()
        target.settle()
    return values, ready_counts


def memory_figure(targets: Sequence[MemoryTarget], steps: SshPlan) -> Figure:
    """RSS idle and with N idle sessions open, plus the per-session cost at the top level."""
    levels = steps.session_levels
    results = {t.peer.name: _memory_levels(t, levels) for t in targets}
    labels = ["idle"] + [f"{level} sessions" for level in levels]

    def per_session(name: str) -> float:
        values, ready = results[name]
        return (values[-1] - values[0]) / ready[-1] if ready[-1] else math.nan

    rows = [
        Row(
            label,
            results[SANDTRAP][0][i],
            {n: v[0][i] for n, v in results.items() if n != SANDTRAP},
        )
        for i, label in enumerate(labels)
    ]
    rows.append(
        Row(
            f"per session (at {levels[-1]})",
            per_session(SANDTRAP),
            {n: per_session(n) for n in results if n != SANDTRAP},
        )
    )
    figure = Figure(
        key="memory",
        title="Memory: server RSS idle and with open idle sessions (`echo ready; sleep`)",
        unit="MiB",
        higher_is_better=False,
        rows=rows,
    )
    ready = {name: r[1] for name, r in results.items()}
    figure.notes += [
        f"sessions ready per level: {ready}",
        "SandTrap runs in a thread of the harness: its figure is the harness process's RSS "
        "(interpreter, harness and service together), so the per-session delta is the figure "
        "to compare. OpenSSH+docker exec: summed RSS of sshd and every process below it (per-"
        "connection sshd, shell, docker CLI); Cowrie: runuser + twistd. Containers, dockerd "
        "and containerd-shim are not counted for anyone.",
    ]
    return figure
