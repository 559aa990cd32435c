"""Bytes both ways between a client channel and a sandbox process, in order, nothing lost.

Owns the pump: client input (and terminal resizes) to the process, process output (stdout and
stderr kept apart) to the client, and the exit status. It knows `ChannelIO` (implemented over
asyncssh in ssh/channel.py) and `ExecStream`; what to run and the events are left to session.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sandtrap.sandbox.base import STDERR, ExecStream

log = logging.getLogger(__name__)

READ_SIZE = 65536


@dataclass(frozen=True)
class Resize:
    """The client's terminal changed size (a window-change request)."""

    width: int
    height: int


class PumpTap(Protocol):
    """Sees every byte the pump moves (recording, totals); its methods must not block or raise."""

    def input(self, data: bytes) -> None: ...

    def output(self, data: bytes, stream: int) -> None: ...

    def resize(self, width: int, height: int) -> None: ...


class ChannelGone(Exception):
    """The client side of the channel went away (disconnect, channel closed)."""


class ChannelIO(Protocol):
    """One client channel, as the proxy sees it.

    Every method raises `ChannelGone` when the client is gone.
    """

    async def read(self) -> bytes | Resize:
        """Next input from the client: bytes, a `Resize`, or b"" once the client sent EOF."""
        ...

    async def write(self, data: bytes, stream: int) -> None:
        """Send process output (`stream` STDOUT or STDERR), waiting for the client's window."""
        ...

    async def finish(self, exit_status: int | None) -> None:
        """Send the exit status (when known), then EOF and close the channel."""
        ...


@dataclass(frozen=True)
class PumpResult:
    """What one pump moved: `exit_status` is None when the client left before the process ended."""

    exit_status: int | None
    bytes_in: int
    bytes_out: int


class _Counters:
    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0


async def _feed_input(
    stream: ExecStream,
    io: ChannelIO,
    counters: _Counters,
    on_resize: Callable[[Resize], None] | None,
    tap: PumpTap | None,
    eof_closes_stdin: bool,
) -> None:
    while True:
        item = await io.read()
        if isinstance(item, Resize):
            if on_resize is not None:
                on_resize(item)
            if tap is not None:
                tap.resize(item.width, item.height)
            await stream.resize(item.width, item.height)
            continue
        if not item:
            # On a PTY sshd ignores the client's EOF (the terminal stays open: `printf 'cmd\n' |
            # ssh -tt` runs cmd and the shell lives on until it exits); without one the process
            # reads EOF, as from a closed pipe.
            if eof_closes_stdin:
                await stream.close_stdin()
            return
        counters.bytes_in += len(item)
        if tap is not None:
            tap.input(item)
        await stream.write(item)


async def _drain_output(
    stream: ExecStream, io: ChannelIO, counters: _Counters, tap: PumpTap | None
) -> None:
    while True:
        chunk = await stream.read()
        if chunk is None:
            return
        counters.bytes_out += len(chunk.data)
        if tap is not None:
            tap.output(chunk.data, chunk.stream)
        await io.write(chunk.data, chunk.stream)


async def pump(
    stream: ExecStream,
    io: ChannelIO,
    on_resize: Callable[[Resize], None] | None = None,
    tap: PumpTap | None = None,
    *,
    tty: bool = False,
) -> PumpResult:
    """Move bytes until the process has closed its output and exited, or the client is gone.

    Input and output run as two tasks of one TaskGroup. When output ends the input side is
    cancelled (the client may never send EOF); when the client is gone both stop and the exit
    status is None. The caller owns `stream` and closes it; `pump` does not finish the channel.
    `tap` (optional) sees input, output and resizes as they pass. With `tty`, the client's EOF
    leaves the process's terminal open, as sshd does.
    """
    counters = _Counters()
    status: int | None = None
    try:
        async with asyncio.TaskGroup() as group:
            feeder = group.create_task(
                _feed_input(stream, io, counters, on_resize, tap, eof_closes_stdin=not tty)
            )
            await _drain_output(stream, io, counters, tap)
            status = await stream.wait()
            feeder.cancel()
    except* ChannelGone:
        log.debug("client gone while pumping")
        status = None
    return PumpResult(status, counters.bytes_in, counters.bytes_out)


__all__ = [
    "READ_SIZE",
    "STDERR",
    "ChannelGone",
    "ChannelIO",
    "PumpResult",
    "PumpTap",
    "Resize",
    "pump",
]
