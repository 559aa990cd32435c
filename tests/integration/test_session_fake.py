"""A connection's life (session/) without SSH: limits on an injected clock, release, close.

The pool on the fake engine and a scripted channel stand in for Docker and the client; the same
behaviours are tested end to end with real clients in tests/integration and tests/docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandtrap import events as ev
from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable
from sandtrap.events import Peer
from sandtrap.persona import DEBIAN12
from sandtrap.proxy import ChannelGone, Resize
from sandtrap.sandbox.fake import FakeEngine
from sandtrap.session import ChannelRequest, Session, SessionSettings
from tests.fakepool import RecordingPool, running_pool

PEER = Peer("0123456789ab", "203.0.113.9", 40000, 22)
LOGOUT = DEBIAN12.idle_logout_text
# Each test must end well within this: nothing here waits on a wall clock.
DEADLINE = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)

    def of(self, kind: type[ev.Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


class Link:
    """The SSH connection: abort drops it, and the front then reports the loss."""

    def __init__(self) -> None:
        self.aborted = 0
        self.session: Session | None = None

    def abort(self) -> None:
        self.aborted += 1
        if self.session is not None:
            asyncio.get_running_loop().call_soon(self.session.lost, "aborted")


@dataclass
class Channel:
    """A client channel fed from a queue; `finish` is what the client sees last."""

    inbox: asyncio.Queue[bytes | Resize] = field(default_factory=asyncio.Queue)
    written: bytearray = field(default_factory=bytearray)
    finished: list[int | None] = field(default_factory=list)
    on_finish: Callable[[], None] | None = None
    got_output: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> bytes | Resize:
        if self.finished:
            raise ChannelGone("closed")
        return await self.inbox.get()

    async def write(self, data: bytes, stream: int) -> None:
        if self.finished:
            raise ChannelGone("closed")
        self.written += data
        self.got_output.set()

    async def finish(self, exit_status: int | None) -> None:
        self.finished.append(exit_status)
        self.done.set()
        if self.on_finish is not None:
            self.on_finish()


def shell(channel: int = 0) -> ChannelRequest:
    return ChannelRequest(channel, "shell", "root", term="xterm", size=(80, 24))


def exec_request(command: str, channel: int = 0) -> ChannelRequest:
    return ChannelRequest(channel, "exec", "root", command=command)


@dataclass
class Harness:
    session: Session
    link: Link
    sink: Sink
    provider: RecordingPool
    clock: Clock
    disconnected: list[bool]

    async def open(self, request: ChannelRequest, channel: Channel) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self.session.serve_channel(request, channel))
        await channel.got_output.wait()
        return task


@asynccontextmanager
async def running(
    engine: FakeEngine | None = None, **limits: Any
) -> AsyncIterator[tuple[Harness, asyncio.Task[None]]]:
    """A Session on a warm pool of `engine`, running; cancelled (if still running) at the end."""
    clock = Clock()
    sink = Sink()
    link = Link()
    disconnected: list[bool] = []
    async with contextlib.AsyncExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        config = Config.model_validate(
            {
                "limits": limits,
                "pool": {"size": 2, "allocate_timeout_seconds": 0.05},
                "storage": {"data_dir": data_dir},
            }
        )
        settings = SessionSettings(
            limits=config.limits,
            allocate_timeout_seconds=config.pool.allocate_timeout_seconds,
            persona=DEBIAN12,
            recordings=None,
        )
        warm = engine is None or engine.create_error is None
        provider = await stack.enter_async_context(running_pool(config, sink, engine, warm=warm))
        session = Session(
            PEER,
            link,
            provider,
            sink,
            settings,
            clock=clock,
            on_disconnected=lambda: disconnected.append(True),
        )
        link.session = session
        task = asyncio.get_running_loop().create_task(session.run())
        try:
            async with asyncio.timeout(DEADLINE):
                yield Harness(session, link, sink, provider, clock, disconnected), task
        finally:
            if not task.done():
                task.cancel()
            await asyncio.wait([task])


async def test_idle_shell_logs_out_like_bash_then_the_client_leaves() -> None:
    async with running(session_idle_timeout_seconds=60) as (h, run):
        client = Channel()
        # The client disconnects once its last channel closes, as OpenSSH does.
        client.on_finish = lambda: h.session.lost("closed")
        await h.open(shell(), client)
        h.clock.now += 59
        h.session.wake()
        await asyncio.sleep(0)
        assert not h.sink.of(ev.SessionTimeout)
        h.clock.now += 2
        h.session.wake()
        await run
    assert client.written.endswith(LOGOUT)
    assert client.finished == [0]
    (timeout,) = h.sink.of(ev.SessionTimeout)
    assert (timeout.kind, timeout.limit_seconds) == ("idle", 60)
    (closed,) = h.sink.of(ev.SessionClosed)
    assert closed.reason == "idle timeout"
    assert closed.duration == 61
    assert h.link.aborted == 0
    assert len(h.provider.released) == 1
    assert h.disconnected == [True]


async def test_activity_defers_idle_but_not_the_absolute_limit() -> None:
    async with running(session_idle_timeout_seconds=60, session_max_seconds=100) as (h, run):
        client = Channel()
        await h.open(shell(), client)
        for _ in range(3):
            h.clock.now += 40
            await client.inbox.put(b"x")
            await asyncio.sleep(0.01)
            h.session.wake()
        await run
    (timeout,) = h.sink.of(ev.SessionTimeout)
    assert timeout.kind == "absolute"
    assert h.link.aborted == 1
    assert h.sink.of(ev.SessionClosed)[0].reason == "absolute timeout"


async def test_idle_exec_channel_closes_silently() -> None:
    async with running(session_idle_timeout_seconds=30) as (h, run):
        client = Channel()
        client.on_finish = lambda: h.session.lost("closed")
        await h.open(exec_request("echo hi; sleep 100"), client)
        h.clock.now += 31
        h.session.wake()
        await run
    assert bytes(client.written) == b"hi\n"
    assert client.finished == [None]


async def test_output_budget_ends_the_connection() -> None:
    async with running(max_bytes_out=4096) as (h, run):
        await h.open(exec_request("yes"), Channel())
        await run
    (exceeded,) = h.sink.of(ev.SessionBytesExceeded)
    assert (exceeded.direction, exceeded.limit) == ("out", 4096)
    assert exceeded.bytes > 4096
    closed = h.sink.of(ev.SessionClosed)[0]
    assert closed.reason == "bytes out exceeded"
    assert closed.bytes_out == exceeded.bytes
    assert h.link.aborted == 1


async def test_input_budget_ends_the_connection() -> None:
    async with running(max_bytes_in=2048) as (h, run):
        client = Channel()
        await h.open(shell(), client)
        for _ in range(3):
            await client.inbox.put(b"a" * 1000)
        await run
    (exceeded,) = h.sink.of(ev.SessionBytesExceeded)
    assert exceeded.direction == "in"
    assert h.sink.of(ev.SessionClosed)[0].reason == "bytes in exceeded"


async def test_cancelled_session_still_releases_and_records_the_close() -> None:
    async with running() as (h, run):
        client = Channel()
        channel = await h.open(shell(), client)
        run.cancel()
        await asyncio.wait([run])
    assert channel.cancelled()
    (sandbox, peer) = h.provider.released[0]
    assert peer == PEER
    assert all(stream.record.closed for stream in sandbox.streams)
    closed = h.sink.of(ev.SessionClosed)[0]
    assert (closed.reason, closed.username, closed.container_id) == (
        "shutdown",
        None,
        sandbox.id,
    )
    assert h.link.aborted == 1


async def test_channels_share_one_sandbox_and_the_close_counts_them_all() -> None:
    async with running() as (h, run):
        h.session.logged_in("admin")
        first, second = Channel(), Channel()
        await h.open(exec_request("echo one; sleep 100", channel=0), first)
        await h.open(exec_request("echo two; exit 3", channel=1), second)
        await second.done.wait()
        h.session.lost("closed")
        await run
    assert len(h.provider.allocated) == 1
    assert second.finished == [3]
    closed = h.sink.of(ev.SessionClosed)[0]
    assert (closed.reason, closed.username, closed.exit_status) == ("closed", "admin", 3)
    assert closed.bytes_out == len(b"one\ntwo\n")


async def test_no_sandbox_drops_the_connection() -> None:
    engine = FakeEngine()
    engine.create_error = EngineUnavailable("create: engine unreachable")
    async with running(engine) as (h, run):
        task = asyncio.get_running_loop().create_task(h.session.serve_channel(shell(), Channel()))
        await run
        await task
    (failed,) = h.sink.of(ev.SandboxAllocationFailed)
    assert failed.reason.startswith("pool exhausted: no sandbox within 0.05s")
    assert h.link.aborted == 1
    assert h.sink.of(ev.SessionClosed)[0].reason.startswith("allocation failed")


async def test_a_channel_opened_while_ending_is_closed_at_once() -> None:
    async with running() as (h, run):
        h.session.lost("closed")
        await run
        late = Channel()
        await h.session.serve_channel(shell(), late)
    assert late.finished == [None]
    assert not h.provider.allocated


@pytest.mark.parametrize("reason", ["shutdown", "grace over"])
async def test_abort_names_the_reason_once(reason: str) -> None:
    async with running() as (h, run):
        h.session.abort(reason)
        h.session.abort("again")
        await run
    assert h.sink.of(ev.SessionClosed)[0].reason == reason
