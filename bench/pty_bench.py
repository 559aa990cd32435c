"""PTY figures (issue 8): interactive login to a visible prompt and `exit`, and `cat` of a file
through a PTY shell.

A real OpenSSH client (through sshpass) runs on a pseudo-terminal driven by pexpect, so it asks
for a PTY and a login shell like a person at a terminal. Every wait is bounded; every client is
closed (and its process group killed) whatever happens.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pexpect

from bench.peers import Peer
from bench.sshclient import SSH_OPTIONS
from bench.stats import Figure, Row, Summary

SANDTRAP = "SandTrap"
_MIB = 1024 * 1024
# bash's default Debian prompt: user@host:cwd# (or $), whatever the host name and directory.
PROMPT = re.compile(rb"[\w.-]+@[\w.-]+:[^\r\n]*[#$] ")
_DONE = b"BENCHDONE"
_READY = b"BENCHREADY"


@dataclass(frozen=True)
class PtyPlan:
    logins: int
    warmups: int
    cat_bytes: int
    cat_runs: int


def plan(quick: bool) -> PtyPlan:
    if quick:
        return PtyPlan(logins=4, warmups=1, cat_bytes=8 * _MIB, cat_runs=2)
    return PtyPlan(logins=40, warmups=3, cat_bytes=64 * _MIB, cat_runs=3)


@contextlib.contextmanager
def pty_client(target: Peer, timeout_seconds: float = 60) -> Iterator[pexpect.spawn[bytes]]:
    """`ssh host` on a fresh 24x80 pseudo-terminal; closed (forcibly if need be) on the way out."""
    argv = [
        "-p",
        target.password,
        "ssh",
        "-tt",
        "-p",
        str(target.port),
        *SSH_OPTIONS,
        f"{target.user}@127.0.0.1",
    ]
    child = pexpect.spawn("sshpass", argv, timeout=timeout_seconds, dimensions=(24, 80))
    try:
        yield child
    finally:
        child.close(force=True)


def _login_cycle(target: Peer) -> tuple[float, float]:
    """Seconds from client start to the prompt, and to the client's exit after `exit`."""
    started = time.monotonic()
    with pty_client(target) as child:
        child.expect(PROMPT, timeout=60)
        prompt = time.monotonic() - started
        child.sendline(b"exit")
        child.expect(pexpect.EOF, timeout=30)
        done = time.monotonic() - started
    return prompt, done


def _split(targets: Sequence[Peer]) -> tuple[Peer, list[Peer]]:
    ours = next(t for t in targets if t.name == SANDTRAP)
    return ours, [t for t in targets if t.name != SANDTRAP]


def interactive_figure(targets: Sequence[Peer], steps: PtyPlan) -> Figure:
    """Login with a PTY until the prompt shows, then `exit`; targets interleaved; ms."""
    prompts: dict[str, list[float]] = {t.name: [] for t in targets}
    cycles: dict[str, list[float]] = {t.name: [] for t in targets}
    failures: dict[str, int] = dict.fromkeys(prompts, 0)
    for index in range(steps.warmups + steps.logins):
        for target in targets:
            try:
                prompt, done = _login_cycle(target)
            except (pexpect.TIMEOUT, pexpect.EOF):
                failures[target.name] += 1
                continue
            if index >= steps.warmups:
                prompts[target.name].append(prompt * 1000)
                cycles[target.name].append(done * 1000)
    ours, peers = _split(targets)
    rows: list[Row] = []
    for label, samples in (("prompt", prompts), ("prompt + exit", cycles)):
        summaries = {name: Summary.of(values) for name, values in samples.items()}
        for stat in ("p50", "p99"):
            rows.append(
                Row(
                    f"{label} {stat}",
                    getattr(summaries[ours.name], stat),
                    {p.name: getattr(summaries[p.name], stat) for p in peers},
                )
            )
    figure = Figure(
        key="interactive",
        title="Interactive: PTY login until the shell prompt shows, then `exit`",
        unit="ms",
        higher_is_better=False,
        rows=rows,
    )
    counts = ", ".join(f"{name} n={len(values)}" for name, values in prompts.items())
    figure.notes.append(
        f"{counts}; {steps.warmups} warm-up round(s) excluded; targets interleaved. `prompt`: "
        "from client start (sshpass + ssh on a 24x80 pseudo-terminal, kex, password auth, PTY "
        "and shell requests) until a bash prompt `user@host:dir# ` is seen; `prompt + exit`: "
        "until the client exited after `exit`. SandTrap prints the motd before its login shell; "
        "the peer runs `docker exec -it <container> bash -l`."
    )
    failed = {name: count for name, count in failures.items() if count}
    if failed:
        figure.notes.append(f"failed runs (excluded): {failed}")
    return figure


def _read_until(child: pexpect.spawn[bytes], marker: bytes, deadline: float) -> int:
    """Read the terminal in large chunks until `marker` shows; returns the bytes read.

    What follows the marker goes back into pexpect's buffer for the next `expect`.
    """
    data: bytes = child.buffer
    child.buffer = b""
    total = 0
    tail = b""
    while True:
        total += len(data)
        window = tail + data
        found = window.find(marker)
        if found >= 0:
            child.buffer = window[found + len(marker) :]
            return total
        tail = window[-len(marker) :]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise pexpect.TIMEOUT(f"no {marker!r} in time")
        try:
            data = child.read_nonblocking(_MIB, timeout=min(remaining, 5))
        except pexpect.TIMEOUT:
            data = b""


def _cat_rate(target: Peer, size: int) -> float:
    """MiB/s of `cat` of a `size`-byte text file through a PTY shell (file made beforehand)."""
    with pty_client(target) as child:
        child.expect(PROMPT, timeout=60)
        path = "/tmp/bench-cat"  # inside the target's container
        # The markers are split in the typed command so its echo never matches them.
        child.sendline(
            f"base64 -w 76 /dev/urandom | head -c {size} > {path}; "
            f"printf '%s\\n' BENCH''READY".encode()
        )
        _read_until(child, _READY + b"\r\n", time.monotonic() + 300)
        child.expect(PROMPT, timeout=60)
        started = time.monotonic()
        child.sendline(f"cat {path}; printf '%s\\n' BENCH''DONE".encode())
        received = _read_until(child, _DONE + b"\r\n", started + 600)
        elapsed = time.monotonic() - started
        child.expect(PROMPT, timeout=60)
        child.sendline(f"rm -f {path}; exit".encode())
        child.expect(pexpect.EOF, timeout=30)
    if received < size:
        raise pexpect.EOF(f"only {received} of {size} bytes arrived")
    return size / _MIB / elapsed


def pty_throughput_figure(targets: Sequence[Peer], steps: PtyPlan) -> Figure:
    """`cat` of a text file through a PTY shell, MiB/s, one warm-up then `cat_runs` each."""
    rates: dict[str, list[float]] = {t.name: [] for t in targets}
    failures: dict[str, int] = dict.fromkeys(rates, 0)
    for index in range(1 + steps.cat_runs):
        for target in targets:
            try:
                rate = _cat_rate(target, steps.cat_bytes)
            except (pexpect.TIMEOUT, pexpect.EOF):
                failures[target.name] += 1
                continue
            if index >= 1:
                rates[target.name].append(rate)
    ours, peers = _split(targets)

    def median(name: str) -> float:
        return Summary.of(rates[name]).p50

    figure = Figure(
        key="pty-throughput",
        title=f"Throughput: cat of a {steps.cat_bytes // _MIB} MiB file through a PTY shell",
        unit="MiB/s",
        higher_is_better=True,
        rows=[Row("median", median(ours.name), {p.name: median(p.name) for p in peers})],
    )
    figure.notes.append(
        f"{steps.cat_runs} run(s) per target after 1 warm-up, targets interleaved; the file is "
        "base64 text (76-column lines) written to /tmp in the session's container beforehand; "
        "timed from sending the command until the end marker arrived at the client's terminal "
        "(the terminal adds a CR per line; the rate counts the file's size). Both containers "
        "carry SandTrap's hardening (0.5 CPU); SandTrap also records the session (asciicast)."
    )
    failed = {name: count for name, count in failures.items() if count}
    if failed:
        figure.notes.append(f"failed runs (excluded): {failed}")
    return figure
