"""One SSH connection's life, from its first byte to `session.closed`.

Owns the connection's linear coroutine (`Session.run`): a TaskGroup of channel tasks, the idle and
absolute deadlines and the byte budgets (decided by limits.py on an injected clock), the idle
logout, the shielded release of the sandbox and the closing event. The SSH protocol is left to
ssh/, which drives a Session through its methods and hands it a `Link` to drop the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sandtrap import events as ev
from sandtrap.config import LimitsConfig
from sandtrap.errors import AllocationFailed
from sandtrap.events import EventSink, Peer
from sandtrap.limits import ByteBudget, TimeoutKind, expired
from sandtrap.persona import Persona
from sandtrap.proxy import ChannelGone, ChannelIO
from sandtrap.sandbox.base import STDOUT, SandboxProvider
from sandtrap.session.channel import ChannelRequest, run_channel
from sandtrap.session.lease import SandboxLease
from sandtrap.session.totals import SessionTotals

log = logging.getLogger(__name__)

# Named timeout `channel_drain`: how long a closed connection's channels get to unwind (close their
# process streams) before the sandbox is released anyway.
CHANNEL_DRAIN_SECONDS = 5.0
# Named timeout `logout_write`: how long one channel gets to take the logout text and its close.
LOGOUT_WRITE_SECONDS = 1.0
# Named timeout `logout_close`: after the channels of a timed-out session are closed, how long the
# client gets to disconnect itself (as it does when its last channel closes) before we drop it.
LOGOUT_CLOSE_SECONDS = 3.0


class Link(Protocol):
    """The SSH connection as its session sees it (asyncssh's connection object fits as it is)."""

    def abort(self) -> None:
        """Drop the connection now, without a goodbye (the client sees "closed by remote host");
        idempotent. The front then reports `Session.lost`."""
        ...


@dataclass(frozen=True)
class SessionSettings:
    """What shapes every session of a front; built once from the configuration.

    `persona` says what runs for each request and how the idle logout looks; `recordings` is the
    root of the cast files (None: no recording).
    """

    limits: LimitsConfig
    allocate_timeout_seconds: float
    persona: Persona
    recordings: Path | None


class Session:
    """One connection. Its front calls `run()` once (as the connection's supervisor), reports
    `logged_in` and `lost`, and hands each session channel to `serve_channel`.

    Cancelling `run()` ends the connection: its channels are cancelled, and the sandbox is still
    released (shielded) and `session.closed` still recorded before `run()` returns.
    """

    def __init__(
        self,
        peer: Peer,
        link: Link,
        provider: SandboxProvider,
        events: EventSink,
        settings: SessionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.peer = peer
        self._link = link
        self._events = events
        self._settings = settings
        self._clock = clock
        self._on_disconnected = on_disconnected
        self.started = clock()
        self.username: str | None = None
        self.reason: str | None = None
        self._closed = asyncio.Event()
        # Set by `lost`, a spent byte budget and `wake`: the watch looks at the limits again.
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._accepting = True
        self._dropped = False
        self._tasks: asyncio.TaskGroup | None = None
        self._channels: set[asyncio.Task[None]] = set()
        self._open: dict[int, tuple[ChannelRequest, ChannelIO]] = {}
        self._next_channel = 0
        self.lease = SandboxLease(provider, events, peer, settings.allocate_timeout_seconds)
        limits = settings.limits
        self.totals = SessionTotals(
            clock=clock,
            budget=ByteBudget(limits.max_bytes_in, limits.max_bytes_out),
            on_exceeded=self._wake.set,
        )

    # --- what the front reports -----------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    def logged_in(self, username: str) -> None:
        """Authentication accepted `username`; channels run as this user."""
        self.username = username

    def lost(self, reason: str) -> None:
        """The connection is gone (`reason` says how, unless a limit already named why)."""
        if self.reason is None:
            self.reason = reason
        self._closed.set()
        self._wake.set()

    def abort(self, reason: str) -> None:
        """End the connection now (shutdown); its cleanup runs in `run()`."""
        if not self._closed.is_set():
            self.reason = self.reason or reason
            self._drop()

    def wake(self) -> None:
        """Look at the deadlines now (they are read from the injected clock)."""
        self._wake.set()

    def next_channel(self) -> int:
        """The number of the connection's next session channel (0, 1, ...)."""
        number = self._next_channel
        self._next_channel += 1
        return number

    async def serve_channel(self, request: ChannelRequest, io: ChannelIO) -> None:
        """Run one session channel as a task of this session; returns when it has ended.

        Cancelling the caller cancels the channel. A channel opened while the session is ending
        is closed at once.
        """
        await self._ready.wait()
        if self._tasks is None or not self._accepting:
            with contextlib.suppress(ChannelGone):
                await io.finish(None)
            return
        task = self._tasks.create_task(
            self._channel(request, io), name=f"channel-{self.peer.session_id}-{request.channel}"
        )
        self._channels.add(task)
        task.add_done_callback(self._channels.discard)
        await task

    async def _channel(self, request: ChannelRequest, io: ChannelIO) -> None:
        self._open[request.channel] = (request, io)
        settings = self._settings
        try:
            await run_channel(
                request,
                io,
                self.lease,
                self._events,
                self.peer,
                settings.persona,
                recordings=settings.recordings,
                totals=self.totals,
            )
        except AllocationFailed as exc:
            # A loaded sshd that cannot start the session drops the connection without a word;
            # the client prints "Connection to ... closed by remote host."
            log.warning("session %s: no sandbox (%s); closing", self.peer.session_id, exc)
            self._end(f"allocation failed: {exc}")
        except Exception:
            # One broken channel ends its connection, as an internal error ends an sshd child.
            log.exception("session %s: channel failed", self.peer.session_id)
            self._end("internal error")
        finally:
            self._open.pop(request.channel, None)

    # --- the connection's life ----------------------------------------------------------------

    async def run(self) -> None:
        """Until the connection ends (or a limit ends it), then release and record the close."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._ready.set()
                try:
                    await self._watch()
                finally:
                    await self._stop_channels()
        finally:
            await asyncio.shield(self._finish())

    async def _watch(self) -> None:
        limits = self._settings.limits
        totals = self.totals
        while not self._closed.is_set():
            budget = totals.budget
            if budget is not None and budget.exceeded is not None:
                self._end_for_bytes(budget)
                return
            now = self._clock()
            kind, due = expired(
                now,
                self.started,
                totals.last_activity,
                limits.session_idle_timeout_seconds,
                limits.session_max_seconds,
            )
            if kind is not None:
                await self._end_for_time(kind)
                return
            self._wake.clear()
            # Named timeouts `session_idle` and `session_max`: wake at the next deadline.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - now)):
                    await self._wake.wait()

    def _end(self, reason: str) -> None:
        self.reason = reason
        self._drop()

    def _drop(self) -> None:
        if not self._dropped:
            self._dropped = True
            self._link.abort()

    def _end_for_bytes(self, budget: ByteBudget) -> None:
        direction = budget.exceeded or "in"
        limit = budget.max_in if direction == "in" else budget.max_out
        count = budget.bytes_in if direction == "in" else budget.bytes_out
        log.info("session %s: %d bytes %s; closing", self.peer.session_id, count, direction)
        self._events.emit(
            ev.SessionBytesExceeded(peer=self.peer, direction=direction, limit=limit, bytes=count)
        )
        self._end(f"bytes {direction} exceeded")

    async def _end_for_time(self, kind: TimeoutKind) -> None:
        limits = self._settings.limits
        limit = (
            limits.session_idle_timeout_seconds if kind == "idle" else limits.session_max_seconds
        )
        log.info("session %s: %s timeout; closing", self.peer.session_id, kind)
        self._events.emit(ev.SessionTimeout(peer=self.peer, kind=kind, limit_seconds=limit))
        if kind == "absolute" or not self._open:
            # As when sshd is killed: the client sees "Connection ... closed by remote host."
            self._end(f"{kind} timeout")
            return
        self.reason = f"{kind} timeout"
        # Idle: interactive shells log out as bash does at TMOUT; other channels close silently
        # (sshd's ChannelTimeout). The client then disconnects by itself, as at any logout.
        for request, io in list(self._open.values()):
            with contextlib.suppress(ChannelGone, TimeoutError):
                async with asyncio.timeout(LOGOUT_WRITE_SECONDS):
                    if request.kind == "shell" and request.has_pty:
                        await io.write(self._settings.persona.idle_logout_text, STDOUT)
                        await io.finish(0)
                    else:
                        await io.finish(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOGOUT_CLOSE_SECONDS):
                await self._closed.wait()

    async def _stop_channels(self) -> None:
        """The connection is over: drop it if still open, then cancel and drain its channels."""
        self._accepting = False
        if not self._closed.is_set():
            self.reason = self.reason or "shutdown"
            self._drop()
        channels = set(self._channels)
        for task in channels:
            task.cancel()
        if channels:
            _, pending = await asyncio.wait(channels, timeout=CHANNEL_DRAIN_SECONDS)
            if pending:
                log.warning(
                    "session %s: %d channels did not unwind", self.peer.session_id, len(pending)
                )

    async def _finish(self) -> None:
        """Release the sandbox (the provider records it: sandbox.released, diff, artifacts), then
        record the close."""
        if self._on_disconnected is not None:
            self._on_disconnected()
        container_id = self.lease.container_id
        await self.lease.release()
        self._events.emit(
            ev.SessionClosed(
                peer=self.peer,
                duration=round(self._clock() - self.started, 3),
                reason=self.reason or "closed",
                username=self.username,
                container_id=container_id,
                bytes_in=self.totals.bytes_in,
                bytes_out=self.totals.bytes_out,
                exit_status=self.totals.exit_status,
            )
        )
        log.info("session %s: closed (%s)", self.peer.session_id, self.reason)


__all__ = [
    "CHANNEL_DRAIN_SECONDS",
    "LOGOUT_CLOSE_SECONDS",
    "Link",
    "Session",
    "SessionSettings",
]
