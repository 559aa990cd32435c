"""Drive a real OpenSSH client (through sshpass) against any peer on 127.0.0.1.

Every call is bounded by a timeout; processes run in their own session so a stuck client and its
sshpass parent are killed together.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass

from bench.resources import stop_process
from sandtrap.testing import OPENSSH_CLIENT_OPTIONS

SSH_OPTIONS = [
    *OPENSSH_CLIENT_OPTIONS,
    "-o",
    "PreferredAuthentications=password",
    "-o",
    "NumberOfPasswordPrompts=1",
    "-o",
    "ConnectTimeout=20",
]
_CHUNK = 1024 * 1024


def ssh_argv(port: int, user: str, password: str, command: str) -> list[str]:
    return [
        "sshpass",
        "-p",
        password,
        "ssh",
        "-p",
        str(port),
        *SSH_OPTIONS,
        f"{user}@127.0.0.1",
        command,
    ]


@dataclass(frozen=True)
class Timing:
    """One `ssh host cmd`: seconds to its first stdout byte and to its exit; bytes read."""

    first_output: float
    total: float
    output_bytes: int
    status: int


def timed_run(argv: list[str], timeout_seconds: float) -> Timing:
    """Run a client, time its first stdout byte and its exit; raise TimeoutError past the bound."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert proc.stdout is not None
    first = float("nan")
    total_bytes = 0
    deadline = started + timeout_seconds
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{argv[-1]!r} took over {timeout_seconds}s")
                if not selector.select(remaining):
                    continue
                data = os.read(proc.stdout.fileno(), _CHUNK)
                if not data:
                    break
                if total_bytes == 0:
                    first = time.monotonic() - started
                total_bytes += len(data)
        status = proc.wait(max(0.1, deadline - time.monotonic()))
        return Timing(first, time.monotonic() - started, total_bytes, status)
    finally:
        stop_process(proc, grace_seconds=2)
        proc.stdout.close()


class IdleSessions:
    """Sessions held open by `echo ready; sleep N` clients (memory figures), or by any command
    that prints `ready` first (`command`, e.g. CPU noise for the scaling figure)."""

    def __init__(
        self, port: int, user: str, password: str, hold_seconds: int, command: str | None = None
    ) -> None:
        command = command or f"echo ready; sleep {hold_seconds}"
        self._argv = ssh_argv(port, user, password, command)
        self.procs: list[subprocess.Popen[bytes]] = []

    def open(self, count: int, batch: int, timeout_seconds: float) -> int:
        """Open `count` more sessions, `batch` at a time, each waiting for its `ready` line.

        Returns how many became ready within the time bound.
        """
        ready = 0
        deadline = time.monotonic() + timeout_seconds
        for start in range(0, count, batch):
            wave = [
                subprocess.Popen(
                    self._argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                for _ in range(min(batch, count - start))
            ]
            self.procs.extend(wave)
            ready += _wait_ready(wave, deadline)
            if time.monotonic() >= deadline:
                break
        return ready

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, grace_seconds=2)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


def _wait_ready(procs: list[subprocess.Popen[bytes]], deadline: float) -> int:
    waiting = {proc.stdout.fileno(): proc for proc in procs if proc.stdout is not None}
    buffers: dict[int, bytes] = dict.fromkeys(waiting, b"")
    ready = 0
    with selectors.DefaultSelector() as selector:
        for fd in waiting:
            selector.register(fd, selectors.EVENT_READ)
        while waiting and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(min(remaining, 1.0)):
                fd = int(key.fd)
                data = os.read(fd, 4096)
                buffers[fd] += data
                if b"ready" in buffers[fd] or not data:
                    ready += b"ready" in buffers[fd]
                    selector.unregister(fd)
                    del waiting[fd]
    return ready
