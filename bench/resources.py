"""What the harness creates and must undo: labelled containers, processes, users, temp dirs.

`Cleanup` is a LIFO of undo callbacks run once, also on Ctrl-C and SIGTERM (which `__main__`
turns into KeyboardInterrupt). Every container the harness or its SandTrap instances create
carries the run's sensor label, so one label query finds them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandtrap.sandbox.sinknet import network_name

log = logging.getLogger(__name__)

BENCH_LABEL = "sandtrap.bench"
_HELD = (signal.SIGINT, signal.SIGTERM)
_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@dataclass(frozen=True)
class Run:
    """Identity of one harness run: containers are labelled `sandtrap.sensor=<sensor>`."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def sensor(self) -> str:
        return f"bench-{self.run_id}"


class Cleanup:
    """Undo callbacks, run newest first; a failing callback is logged and the rest still run."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, callback: Callable[[], object]) -> None:
        self._callbacks.append((what, callback))

    def run(self) -> None:
        # A second Ctrl-C or SIGTERM during cleanup would leak what is left: hold them until done.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _HELD}
        try:
            while self._callbacks:
                what, callback = self._callbacks.pop()
                try:
                    callback()
                except Exception as exc:  # cleanup goes on whatever failed
                    log.warning("cleanup of %s failed: %s", what, exc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def remove_sinkhole_network(sensor: str) -> None:
    """`docker network rm` the sensor's sinkhole network, when there is one; retried for a few
    seconds while the engine still holds an endpoint of a container just removed."""
    name = network_name(sensor)
    for _ in range(10):
        done = subprocess.run(["docker", "network", "rm", name], capture_output=True, text=True,
                              check=False, timeout=60)  # fmt: skip
        if done.returncode == 0 or "not found" in done.stderr.lower():
            return
        time.sleep(1)
    log.warning("network %s not removed: %s", name, done.stderr.strip()[-200:])


def remove_labelled_containers(sensor: str) -> int:
    """`docker rm -f` every container of this run (by sensor label); returns how many."""
    # The engine may be restarting (other work on this machine does that): retry for a while.
    for _ in range(30):
        listing = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=sandtrap.sensor={sensor}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if listing.returncode == 0:
            break
        time.sleep(2)
    else:
        raise RuntimeError(
            f"engine unreachable; remove by hand: docker rm -f $(docker ps -aq --filter "
            f"label=sandtrap.sensor={sensor})"
        )
    ids = listing.stdout.split()
    for start in range(0, len(ids), 50):
        subprocess.run(
            ["docker", "rm", "-f", *ids[start : start + 50]],
            capture_output=True,
            check=False,
            timeout=300,
        )
    return len(ids)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for peers that cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_seconds: float, alive: Callable[[], bool]) -> bool:
    """Wait until 127.0.0.1:port accepts and sends a first line (an SSH banner)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and alive():
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
        ):
            if sock.recv(64).startswith(b"SSH-"):
                return True
        time.sleep(0.2)
    return False


def stop_process(proc: subprocess.Popen[bytes], grace_seconds: float = 5) -> None:
    """Terminate a process we started (its whole process group), then kill it after a grace."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_seconds)


def stop_tree(proc: subprocess.Popen[bytes], grace_seconds: float = 5) -> None:
    """Stop a server and every process below it; sshd's per-connection children call setsid,
    so its process group alone does not reach them."""
    below = [pid for pid in descendants(proc.pid) if pid != proc.pid]
    stop_process(proc, grace_seconds)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while any(Path(f"/proc/{pid}").exists() for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def become_subreaper() -> None:
    """Adopt orphaned descendants (PR_SET_CHILD_SUBREAPER), so a shell orphaned when sshd's
    session process dies is reaped by `reap_orphans` rather than left a zombie under a PID 1
    that may not reap (common in containers and sandboxes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a child subreaper: errno %d", ctypes.get_errno())


def reap_orphans() -> None:
    """Collect every exited child without blocking (call only once our Popen children are done)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def descendants(pid: int) -> Iterator[int]:
    """`pid` and every process below it (children found through /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    todo = [pid]
    while todo:
        current = todo.pop()
        yield current
        todo.extend(parents.get(current, []))


def tree_rss_kib(pid: int) -> int:
    """Summed RSS of a process tree (shared pages counted once per process, an upper bound)."""
    return sum(rss_kib(child) for child in descendants(pid))
