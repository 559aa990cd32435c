"""Load figures (issue 8): a burst of logins at once, and one login's latency under CPU noise.

Clients are real OpenSSH clients (sshpass + ssh) in their own processes, so the SandTrap service
(a thread of this process) does not share an interpreter with them. Every wait is bounded and
every client is killed on the way out.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.peers import Peer
from bench.resources import stop_process
from bench.sshclient import IdleSessions, ssh_argv, timed_run
from bench.stats import Figure, Row, Summary

SANDTRAP = "SandTrap"
_BURST_WORD = b"burst-ok"
# Each noise session prints `ready`, then spins one CPU; `timeout` bounds it even when a peer
# leaves the command running after its client is gone.
NOISE_COMMAND = "echo ready; exec timeout 900 yes > /dev/null"


@dataclass(frozen=True)
class LoadPlan:
    bursts: tuple[int, ...]
    burst_warmup: int  # logins in the warm-up burst (not reported)
    big_pool: int  # the pool size of the second SandTrap configuration
    noise_levels: tuple[int, ...]
    scaling_samples: int
    scaling_warmups: int


def plan(quick: bool) -> LoadPlan:
    if quick:
        return LoadPlan((10,), 3, 10, (0, 5), 3, 1)
    return LoadPlan((100, 200), 10, 100, (0, 50, 100), 10, 1)


@dataclass(frozen=True)
class LoadTarget:
    """A peer plus what to do after load: wait until it has let go (SandTrap), kill leftovers."""

    peer: Peer
    settle: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class BurstResult:
    logins: int
    shells: int  # clients that ran `echo` in a shell and exited 0
    seconds: float  # from the first client's start until the last one finished


def source_address(n: int) -> str:
    """The loopback source of the burst's n-th client (0-based): 127.0.1.1, 127.0.1.2, ...

    A burst of distinct attackers comes from distinct addresses; on loopback every 127/8 address
    is local, so `ssh -b` binds each client to its own (up to 250 per /24, then the next /24).
    """
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def burst(peer: Peer, count: int, timeout_seconds: float = 240) -> BurstResult:
    """Start `count` `ssh host 'echo burst-ok'` clients at once, each from its own source address
    (`ssh -b`); count those that got a shell."""
    argv = ssh_argv(peer.port, peer.user, peer.password, f"echo {_BURST_WORD.decode()}")
    ssh_at = argv.index("ssh") + 1
    started = time.monotonic()
    deadline = started + timeout_seconds
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            bound = [*argv[:ssh_at], "-b", source_address(n), *argv[ssh_at:]]
            procs.append(
                subprocess.Popen(
                    bound, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
                )
            )
        outputs = _collect(procs, deadline)
        shells = 0
        for proc in procs:
            try:
                status = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            if status == 0 and _BURST_WORD in outputs.get(proc.pid, b""):
                shells += 1
        return BurstResult(count, shells, time.monotonic() - started)
    finally:
        for proc in procs:
            stop_process(proc, grace_seconds=2)
            if proc.stdout is not None:
                proc.stdout.close()


def _collect(procs: list[subprocess.Popen[bytes]], deadline: float) -> dict[int, bytes]:
    """Every client's stdout until EOF (or the deadline), by pid."""
    open_fds = {p.stdout.fileno(): p.pid for p in procs if p.stdout is not None}
    outputs: dict[int, bytes] = dict.fromkeys(open_fds.values(), b"")
    with selectors.DefaultSelector() as selector:
        for fd in open_fds:
            selector.register(fd, selectors.EVENT_READ)
        while open_fds and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(remaining, 1.0)):
                fd = int(key.fd)
                data = os.read(fd, 4096)
                if data:
                    outputs[open_fds[fd]] += data[:4096]
                else:
                    selector.unregister(fd)
                    del open_fds[fd]
    return outputs


def burst_results(target: LoadTarget, sizes: Sequence[int], warmup: int) -> dict[int, BurstResult]:
    """One warm-up burst (not reported), then one burst per size, settling between them."""
    results: dict[int, BurstResult] = {}
    burst(target.peer, warmup)
    target.settle()
    for size in sizes:
        results[size] = burst(target.peer, size)
        print(f"   burst {target.peer.name}: {results[size]}", flush=True)
        target.settle()
    return results


def burst_figures(
    ours: dict[str, dict[int, BurstResult]],
    peers: dict[str, dict[int, BurstResult]],
    sizes: Sequence[int],
) -> list[Figure]:
    """Two figures (shells got, seconds until all done); a row per (SandTrap pool, burst size).

    `ours` maps a SandTrap configuration label (e.g. "pool 3") to its results; each peer has one
    result per size, repeated on every configuration's row.
    """
    shells = Figure(
        key="burst-shells",
        title="Burst: logins at once that got a working shell",
        unit="",
        higher_is_better=True,
    )
    seconds = Figure(
        key="burst-time",
        title="Burst: time until every login of the burst was done",
        unit="s",
        higher_is_better=False,
    )
    for label, results in ours.items():
        for size in sizes:
            row = f"{size} at once, SandTrap {label}"
            shells.rows.append(
                Row(
                    row,
                    results[size].shells,
                    {name: r[size].shells for name, r in peers.items()},
                )
            )
            seconds.rows.append(
                Row(
                    row,
                    results[size].seconds,
                    {name: r[size].seconds for name, r in peers.items()},
                )
            )
    note = (
        "Each burst starts N `ssh host 'echo burst-ok'` clients (sshpass + OpenSSH) at once, each "
        "bound to its own loopback source address (`ssh -b 127.0.1.N`): N distinct attackers. A "
        "login counts when its client printed `burst-ok` and exited 0. Time: from the first "
        "client's start until the last one finished (got a shell or gave up); bounded at 240 s. "
        "One burst per row after a small warm-up burst, the target settled (sessions closed, "
        "pool refilled) in between. SandTrap `default config`: Config() as shipped (pool.size, "
        "max_warm, max_sandboxes, allocate_timeout_seconds, create_concurrency and every limit "
        "at their defaults); `pool N`: the same with pool.size N and max_sandboxes 220. The "
        "peers have no pool (one shared container)."
    )
    shells.notes.append(note)
    seconds.notes.append("See the note of the figure above.")
    return [shells, seconds]


def _noise_sessions(peer: Peer) -> IdleSessions:
    return IdleSessions(peer.port, peer.user, peer.password, 900, command=NOISE_COMMAND)


def _scaling_levels(
    target: LoadTarget, levels: Sequence[int], samples: int, warmups: int
) -> tuple[list[list[float]], list[int], int]:
    """Per level: connect latencies (ms) while that many noise sessions run; noise ready counts."""
    peer = target.peer
    noise = _noise_sessions(peer)
    latencies: list[list[float]] = []
    ready_counts: list[int] = []
    failures = 0
    ready = 0
    try:
        for level in levels:
            if level > len(noise.procs):
                ready += noise.open(level - len(noise.procs), batch=5, timeout_seconds=300)
            ready_counts.append(ready)
            time.sleep(2)  # let the noise reach its steady state
            values: list[float] = []
            for index in range(warmups + samples):
                argv = ssh_argv(peer.port, peer.user, peer.password, "echo hi")
                try:
                    timing = timed_run(argv, timeout_seconds=120)
                except TimeoutError:
                    failures += 1
                    continue
                if timing.status != 0 or timing.output_bytes != 3:
                    failures += 1
                elif index >= warmups:
                    values.append(timing.first_output * 1000)
            latencies.append(values)
    finally:
        noise.close()
        target.settle()
    return latencies, ready_counts, failures


def scaling_figure(targets: Sequence[LoadTarget], plan_: LoadPlan) -> Figure:
    """Connect-to-first-output p50 of `echo hi` with 0 / N / M sessions spinning a CPU each."""
    levels = plan_.noise_levels
    results = {
        t.peer.name: _scaling_levels(t, levels, plan_.scaling_samples, plan_.scaling_warmups)
        for t in targets
    }
    others = [name for name in results if name != SANDTRAP]
    rows: list[Row] = []
    for i, level in enumerate(levels):
        summaries = {name: Summary.of(r[0][i]) for name, r in results.items()}
        for stat in ("p50", "p95"):
            rows.append(
                Row(
                    f"{level} noisy sessions, {stat}",
                    getattr(summaries[SANDTRAP], stat),
                    {name: getattr(summaries[name], stat) for name in others},
                )
            )
    figure = Figure(
        key="scaling",
        title="Scaling: ssh host 'echo hi' while N sessions run `yes > /dev/null`",
        unit="ms",
        higher_is_better=False,
        rows=rows,
    )
    ready = {name: r[1] for name, r in results.items()}
    counts = {name: [len(v) for v in r[0]] for name, r in results.items()}
    figure.notes += [
        f"noise sessions running per level: {ready}; samples per level: {counts} "
        f"({plan_.scaling_warmups} warm-up excluded per level); each target measured on its "
        "own, levels rising.",
        "Noise: `yes > /dev/null` in each session. SandTrap gives every session its own "
        "sandbox capped at 0.5 CPU, so N noisy sessions ask for N/2 CPUs; the naive peer runs "
        "them all in its one shared container, capped at 0.5 CPU in total. Latency is to the "
        "first output byte, as in the connect figure.",
    ]
    failed = {name: r[2] for name, r in results.items() if r[2]}
    if failed:
        figure.notes.append(f"failed runs (excluded): {failed}")
    return figure


def kill_noise(container_id: str) -> Callable[[], None]:
    """For the peer with one shared container: end `yes` left running after its clients left."""

    def settle() -> None:
        subprocess.run(
            ["docker", "exec", container_id, "pkill", "-x", "yes"],
            capture_output=True,
            check=False,
            timeout=60,
        )

    return settle
