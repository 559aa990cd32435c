"""`python -m bench`: run the side-by-side benchmarks, print each figure, optionally write markdown.

Owns the run's order and its cleanup: every container (by label), process, user and temp dir the
harness creates is undone at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import (
    brute_bench,
    load_bench,
    machine,
    network_bench,
    peers,
    pool_bench,
    pty_bench,
    report,
    ssh_bench,
    web_bench,
)
from bench.peers import Peer
from bench.resources import (
    Cleanup,
    Run,
    become_subreaper,
    remove_labelled_containers,
    remove_sinkhole_network,
)
from bench.service import BENCH_PASSWORD, BENCH_USER, RunningService, bench_config
from bench.stats import Figure, render_text
from sandtrap.config import DEFAULT_IMAGE, Config

BENCHMARKS = (
    "pool",
    "connect",
    "interactive",
    "throughput",
    "memory",
    "scaling",
    "burst",
    "bruteforce",
    "network",
)
SSH_BENCHMARKS = BENCHMARKS[1:-1]
# Cap on SandTrap's sandboxes: a burst of 200 logins plus a refilling pool (pool.max_sandboxes).
MAX_SANDBOXES = 220
NOT_MEASURED = [
    "Bursts are one burst per row (after a small warm-up burst), not a median of several: a "
    "burst of 200 logins takes minutes to run and settle on this machine.",
    "Runs on a shared machine see other work on the same Docker engine (a restarted engine "
    "marks a peer's figures INVALID); quote ratios from a quiet run.",
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run, CI)")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"of {BENCHMARKS}"
    )
    parser.add_argument("--write", type=Path, metavar="FILE", help="write a markdown report")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="target image")
    parser.add_argument(
        "--cowrie",
        choices=("auto", "build", "off"),
        default=None,
        help="Cowrie peer: build its venv if missing (default without --quick), use it only if "
        "already built (auto; default with --quick), or leave it out",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _emit(figure: Figure, figures: list[Figure], targets: list[Peer] | None = None) -> None:
    for target in targets or []:
        if target.container_id and not peers.container_running(target.container_id):
            figure.notes.append(
                f"INVALID for {target.name}: its container stopped during the run (the engine "
                "restarted?); rerun on a quiet engine."
            )
    figures.append(figure)
    print(f"\n{render_text(figure)}", flush=True)


def _settle(running: RunningService, timeout_seconds: float = 300) -> None:
    """Wait until SandTrap has closed every session and its pool is warm again."""
    deadline = time.monotonic() + timeout_seconds
    while running.busy() and time.monotonic() < deadline:
        time.sleep(0.5)
    running.wait_warm(max(1.0, deadline - time.monotonic()))


def _bursts_of(
    config: Config, label: str, cleanup: Cleanup, sizes: Sequence[int], warmup: int
) -> dict[int, load_bench.BurstResult]:
    """A SandTrap started on `config` for the bursts alone, stopped after them."""
    service = RunningService(config)
    cleanup.push(f"SandTrap service ({label})", service.stop)
    service.start()
    try:
        service.wait_warm(600)
        target = load_bench.LoadTarget(
            Peer(ssh_bench.SANDTRAP, service.port, BENCH_USER, BENCH_PASSWORD, os.getpid()),
            lambda: _settle(service, 600),
        )
        return load_bench.burst_results(target, sizes, warmup)
    finally:
        service.stop()


def _emit_all(new: list[Figure], figures: list[Figure], targets: list[Peer]) -> None:
    for figure in new:
        _emit(figure, figures, targets)


def _brute_force(
    args: argparse.Namespace, run: Run, workdir: Path, cleanup: Cleanup, others: list[Peer]
) -> list[Figure]:
    """SandTrap with its default limits (its own service: the harness's lifts per-IP limits)
    against the peers that keep a log of attempts (Cowrie)."""
    service = RunningService(
        bench_config(
            workdir / "sandtrap-defaults", run.sensor, args.image, 4, pool_size=1, lift_limits=False
        )
    )
    cleanup.push("SandTrap service (default limits)", service.stop)
    service.start()
    try:
        events = service.config.storage.data_dir / "log" / "events.jsonl"
        peer = Peer(ssh_bench.SANDTRAP, service.port, BENCH_USER, BENCH_PASSWORD, os.getpid())
        targets = [brute_bench.BruteTarget(peer, brute_bench.sandtrap_recorded(events))]
        targets += [
            brute_bench.BruteTarget(p, brute_bench.cowrie_recorded(p.log))
            for p in others
            if p.log is not None
        ]
        return brute_bench.figures(targets, brute_bench.plan(args.quick))
    finally:
        service.stop()


def _ssh_benchmarks(
    args: argparse.Namespace,
    run: Run,
    workdir: Path,
    cleanup: Cleanup,
    selected: list[str],
    gaps: list[str],
) -> list[Figure]:
    figures: list[Figure] = []
    steps = ssh_bench.plan(args.quick)
    pty_steps = pty_bench.plan(args.quick)
    load_steps = load_bench.plan(args.quick)
    top = max(*steps.session_levels, *load_steps.noise_levels, *load_steps.bursts)
    running = RunningService(
        bench_config(workdir / "sandtrap", run.sensor, args.image, max_sandboxes=MAX_SANDBOXES)
    )
    cleanup.push("SandTrap service", running.stop)
    running.start()
    running.wait_warm()
    sandtrap = Peer(ssh_bench.SANDTRAP, running.port, BENCH_USER, BENCH_PASSWORD, os.getpid())
    openssh = peers.start_openssh(run, args.image, cleanup, sessions=top)
    targets = [sandtrap, openssh]
    cowrie_mode = args.cowrie or ("auto" if args.quick else "build")
    if cowrie_mode != "off" and any(
        n in selected for n in ("connect", "memory", "burst", "bruteforce")
    ):
        executable = peers.ensure_cowrie_venv(build=cowrie_mode == "build")
        if executable is None:
            gaps.append(f"Cowrie peer left out (--cowrie {cowrie_mode}; venv not available).")
        else:
            try:
                targets.append(peers.start_cowrie(executable, cleanup))
            except RuntimeError as exc:
                gaps.append(f"Cowrie did not start: {exc}")
    print(f"\nSSH targets: {', '.join(f'{t.name} :{t.port}' for t in targets)}", flush=True)
    if "connect" in selected:
        figure = ssh_bench.connect_figure(targets, steps)
        events = running.config.storage.data_dir / "log" / "events.jsonl"
        breakdown = ssh_bench.phase_breakdown(events)
        if breakdown:
            figure.notes.append(breakdown)
        _emit(figure, figures, targets)
        _emit(ssh_bench.connect_figure(targets, steps, ssh_bench.FORCED_KEX), figures, targets)
    if "interactive" in selected:
        _emit(pty_bench.interactive_figure(targets[:2], pty_steps), figures, targets)
    if "throughput" in selected:
        # Cowrie emulates `head`; a byte-stream figure only means something for real shells.
        _emit(ssh_bench.throughput_figure(targets[:2], steps), figures, targets)
        _emit(pty_bench.pty_throughput_figure(targets[:2], pty_steps), figures, targets)
    if "memory" in selected:

        def settle() -> None:
            deadline = time.monotonic() + 120
            while running.busy() and time.monotonic() < deadline:
                time.sleep(0.5)

        memory_targets = [ssh_bench.memory_target(sandtrap, settle)]
        memory_targets += [ssh_bench.memory_target(t) for t in targets[1:]]
        _emit(ssh_bench.memory_figure(memory_targets, steps), figures, targets)
    ours = load_bench.LoadTarget(sandtrap, lambda: _settle(running))
    naive = load_bench.LoadTarget(openssh, load_bench.kill_noise(openssh.container_id))
    if "scaling" in selected:
        # Cowrie emulates the shell (no `yes` runs): noise only means something for real shells.
        _emit(load_bench.scaling_figure([ours, naive], load_steps), figures, targets)
    if "bruteforce" in selected:
        _emit_all(_brute_force(args, run, workdir, cleanup, targets[2:]), figures, targets)
    if "burst" in selected:
        sizes = load_steps.bursts
        others = [naive] + [load_bench.LoadTarget(t) for t in targets[2:]]
        peer_results = {
            t.peer.name: load_bench.burst_results(t, sizes, load_steps.burst_warmup) for t in others
        }
        running.stop()  # one SandTrap at a time: first on its shipped defaults, then a big pool
        configs = {
            "default config": bench_config(
                workdir / "sandtrap-default", run.sensor, args.image, None, lift_limits=False
            ),
            f"pool {load_steps.big_pool}": bench_config(
                workdir / "sandtrap-big-pool",
                run.sensor,
                args.image,
                max_sandboxes=MAX_SANDBOXES,
                pool_size=load_steps.big_pool,
            ),
        }
        our_results = {
            label: _bursts_of(config, label, cleanup, sizes, load_steps.burst_warmup)
            for label, config in configs.items()
        }
        for figure in load_bench.burst_figures(our_results, peer_results, sizes):
            _emit(figure, figures, targets[:2])
    return figures


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    selected = list(args.only or BENCHMARKS)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _interrupt)
    become_subreaper()
    run = Run()
    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{run.run_id}-"))
    cleanup.push("work dir", lambda: shutil.rmtree(workdir, ignore_errors=True))
    # The sinkhole's network (sandbox.network defaults to sinkhole), after the containers on it.
    cleanup.push("sinkhole network", lambda: remove_sinkhole_network(run.sensor))
    cleanup.push("containers", lambda: remove_labelled_containers(run.sensor))
    figures: list[Figure] = []
    gaps = list(NOT_MEASURED)
    started = time.monotonic()
    try:
        cowrie = peers.cowrie_version()
        facts = machine.describe("runc", cowrie)
        print(machine.render_text(facts), flush=True)
        print(f"run {run.run_id}: {'quick' if args.quick else 'full'}; {', '.join(selected)}")
        if "pool" in selected:
            for figure in asyncio.run(
                pool_bench.pool_figures(run, workdir / "pool", args.image, args.quick)
            ):
                _emit(figure, figures)
        if any(name in selected for name in SSH_BENCHMARKS):
            figures += _ssh_benchmarks(args, run, workdir, cleanup, selected, gaps)
            facts["Cowrie"] = peers.cowrie_version() or "not available"
        if "network" in selected:
            for figure in network_bench.figures(
                run, workdir / "network", args.image, cleanup, args.quick
            ):
                _emit(figure, figures)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.run()
    print(f"\ndone in {time.monotonic() - started:.0f}s; gaps:", *gaps, sep="\n- ")
    if args.write is not None:
        command = "python -m bench" + (" --quick" if args.quick else "")
        args.write.parent.mkdir(parents=True, exist_ok=True)
        text = report.render(facts, figures, command, gaps)
        # The web console's figures (python -m bench.web_bench) are a block of their own: kept.
        args.write.write_text(web_bench.keep_section(args.write, text))
        print(f"wrote {args.write}")
    # Slow figures are results; a figure without a single SandTrap sample means the harness
    # (or the service it drives) broke, which is what the CI smoke run is there to catch.
    empty = [f.key for f in figures if all(math.isnan(row.ours) for row in f.rows)]
    if empty:
        print(f"harness broken: no SandTrap measurement in {', '.join(empty)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
