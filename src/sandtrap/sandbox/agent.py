"""The link to a sandbox's in-sandbox agent: channels multiplexed over one exec stream.

Owns the agent's exec stream (started by the pool's maker), the open channels and every check
on what the agent says; framing is left to sandbox/agentproto.py. The agent is attacker-controlled
(root in the sandbox can kill, ptrace or replace it): anything it says outside the protocol ends
the link, after which the sandbox falls back to `docker exec` and open channels end with no exit
status. No task of its own: whichever channel wants output reads the stream for all of them, one
reader at a time, so back-pressure reaches the agent and nothing outlives the channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sandtrap.errors import SandboxError, SandboxGone
from sandtrap.sandbox import agentproto as proto
from sandtrap.sandbox.base import STDERR, STDOUT, Chunk
from sandtrap.sandbox.engine import ContainerEngine, EngineStream

log = logging.getLogger(__name__)

AGENT_ARGV = ("/usr/sbin/sshd", "--sandtrap-agent")
HANDSHAKE_SECONDS = 5.0
OPEN_SECONDS = 5.0
# Output queued for one channel before the reader waits for its consumer (back-pressure).
CHANNEL_BUFFER = 1024 * 1024
# Frames still tolerated for a channel the front closed (those in flight before the CLOSE).
LATE_FRAMES = 64
MAX_LATE_CHANNELS = 64
MAX_CHANNELS = 32
# Asking the engine whether the sandbox still runs, when the agent's stream ends; and how long
# channels then wait for the pool's watcher to report a dead sandbox.
STATE_SECONDS = 5.0
STATE_DELAYS = (0.0, 0.5, 1.0, 1.5)
STOPPED_SECONDS = 10.0
# One write of frames to the agent's stdin, when the front cannot wait on it forever (CLOSE from a
# shielded close): an agent that stops reading (SIGSTOP, replaced) would keep that close pending.
SEND_SECONDS = 5.0


class AgentUnavailable(SandboxError):
    """The agent cannot take this channel (link gone, refused, or no answer): use docker exec."""


class AgentLinkLost(SandboxError):
    """The link ended while the channel was open: it has no exit status."""


class AgentChannel:
    """One process run by the agent; the `EngineStream` the session pumps."""

    def __init__(self, link: AgentLink, channel: int) -> None:
        self._link = link
        self.channel = channel
        self.opened: proto.Opened | None = None
        self.refusal: str | None = None
        self.status: int | None = None
        self._chunks: deque[Chunk] = deque()
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False  # EXIT, abort, link lost or closed: no more output
        self._aborted = False
        self._closed = False
        self._stdin_closed = False

    # --- fed by the link -------------------------------------------------------------------

    def _put(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._queued += len(chunk.data)
        if self._queued >= CHANNEL_BUFFER:
            self._room.clear()

    def _end(self) -> None:
        self._ended = True
        self._room.set()

    async def _wait_room(self) -> None:
        await self._room.wait()

    # --- ExecStream ------------------------------------------------------------------------

    async def read(self) -> Chunk | None:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._queued -= len(chunk.data)
                if self._queued < CHANNEL_BUFFER:
                    self._room.set()
                return chunk
            if self._ended or self._closed:
                return None
            await self._link.pull_for(self)

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or self._ended or self._closed or not data:
            return
        await self._link.send(*proto.data_frames(self.channel, data))

    async def close_stdin(self) -> None:
        if self._stdin_closed or self._ended or self._closed:
            return
        self._stdin_closed = True
        await self._link.send(proto.frame(proto.EOF, self.channel))

    async def resize(self, width: int, height: int) -> None:
        if self._ended or self._closed:
            return
        await self._link.send(proto.resize_frame(self.channel, width, height))

    async def wait(self) -> int:
        if self._aborted:
            return 255  # the sandbox died, as DockerExecStream reports it
        if self.status is None:
            raise AgentLinkLost("the agent's link ended before the process's exit status")
        return self.status

    def abort(self) -> None:
        """The sandbox died: end the channel now."""
        self._aborted = True
        self._end()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ended = self._ended
        self._end()
        self._link.forget(self, tell_agent=not ended)
        if not ended:
            with contextlib.suppress(SandboxError, OSError):
                await self._link.send_bounded(proto.frame(proto.CLOSE, self.channel))


class AgentLink:
    """The front's side of one agent: open channels, the single reader, hostile-input checks.

    `on_failure(reason)` is called once when the agent breaks the protocol or goes away while
    the link is in use (not when the front closes it).
    """

    def __init__(
        self,
        stream: EngineStream,
        container_id: str,
        on_failure: Callable[[str], None],
        is_running: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._stream = stream
        self._container = container_id[:12]
        self._is_running = is_running
        self._closed = asyncio.Event()
        self._on_failure = on_failure
        self._parser = proto.FrameParser()
        self._channels: dict[int, AgentChannel] = {}
        self._late: dict[int, int] = {}  # closed channel -> late frames still tolerated
        self._next_channel = 1
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._greeted = False
        self.lost: str | None = None

    @property
    def is_alive(self) -> bool:
        return self.lost is None

    async def handshake(self) -> bool:
        """Whether the agent answers HELLO (an image without it runs the real sshd, which
        refuses the option and exits)."""
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                await self.send(proto.frame(proto.HELLO, 0))
                while self.is_alive and not self._greeted:
                    await self.pull_for(None)
        except TimeoutError:
            self._lose("no answer to HELLO", report=False)
        return self.is_alive and self._greeted

    async def open(
        self,
        argv: Sequence[str],
        *,
        user: str,
        tty: bool,
        env: Mapping[str, str] | None,
        workdir: str | None,
        size: tuple[int, int] | None,
    ) -> AgentChannel:
        """Run `argv` as a child of the agent.

        Raises:
            AgentUnavailable: the link is gone, the agent refused or did not answer in time
                (the caller falls back to docker exec).
        """
        if not self.is_alive:
            raise AgentUnavailable(f"agent link lost: {self.lost}")
        if len(self._channels) >= MAX_CHANNELS:
            raise AgentUnavailable("too many agent channels")
        try:
            request = proto.open_frame(
                self._next_channel, argv, user=user, tty=tty, env=env, workdir=workdir, size=size
            )
        except ValueError as exc:
            raise AgentUnavailable(str(exc)) from None
        channel = AgentChannel(self, self._next_channel)
        self._next_channel += 1
        self._channels[channel.channel] = channel
        try:
            async with asyncio.timeout(OPEN_SECONDS):
                await self.send(request)
                while self.is_alive and channel.opened is None and channel.refusal is None:
                    await self.pull_for(None)
        except TimeoutError:
            self._lose("no answer to OPEN")
        except BaseException:
            self.forget(channel, tell_agent=True)
            raise
        if channel.opened is None:
            self.forget(channel, tell_agent=False)
            raise AgentUnavailable(channel.refusal or f"agent link lost: {self.lost}")
        return channel

    async def send(self, *frames: bytes) -> None:
        if not self.is_alive:
            return
        async with self._write_lock:
            for data in frames:
                await self._stream.write(data)

    async def send_bounded(self, *frames: bytes) -> None:
        """`send`, but an agent that does not take the frames in SEND_SECONDS loses the link
        (its stream is aborted, so the blocked write and anyone queued on the lock return)."""
        try:
            async with asyncio.timeout(SEND_SECONDS):
                await self.send(*frames)
        except TimeoutError:
            self._lose("the agent stopped reading its input")

    def forget(self, channel: AgentChannel, *, tell_agent: bool) -> None:
        if self._channels.get(channel.channel) is channel:
            del self._channels[channel.channel]
            if tell_agent:
                # The agent answers a CLOSE with silence: keep the newest few, bounded.
                if len(self._late) >= MAX_LATE_CHANNELS:
                    del self._late[next(iter(self._late))]
                self._late[channel.channel] = LATE_FRAMES

    async def pull_for(self, channel: AgentChannel | None) -> None:
        """Read the stream once for every channel (one reader at a time); returns early when
        another reader already brought `channel` something."""
        async with self._read_lock:
            if channel is not None and (channel._chunks or channel._ended):
                return
            if not self.is_alive:
                if channel is not None:
                    channel._end()
                return
            chunk = await self._stream.read()
            try:
                if chunk is None:
                    raise EOFError("the agent's stream ended")
                if chunk.stream != STDOUT:
                    # The runtime's own last words (runsc when the sandbox dies) or the agent's.
                    raise EOFError("protocol violation: the agent wrote to stderr")
                for item in self._parser.feed(chunk.data):
                    target = self._dispatch(item)
                    # Never wait for our own consumer: that is us.
                    if target is not None and target is not channel:
                        await target._wait_room()
            except EOFError as end:
                if await self._sandbox_running():
                    self._lose(str(end))
                else:
                    await self._sandbox_stopped()
            except proto.AgentProtocolError as exc:
                self._lose(f"protocol violation: {exc}")

    def _dispatch(self, item: proto.Frame) -> AgentChannel | None:
        """Apply one frame; returns the channel that got output (to wait for its room)."""
        if item.kind == proto.A_HELLO:
            if self._greeted or item.channel != 0 or item.payload != proto.HELLO_TEXT:
                raise proto.AgentProtocolError(f"HELLO {item.payload[:40]!r}")
            self._greeted = True
            return None
        if not self._greeted:
            raise proto.AgentProtocolError("a frame before HELLO")
        channel = self._channels.get(item.channel)
        if channel is None:
            left = self._late.get(item.channel, 0)
            if left <= 0:
                raise proto.AgentProtocolError(f"frame for channel {item.channel} not open")
            self._late[item.channel] = left - 1
            if item.kind in (proto.A_EXIT, proto.A_FAILED):
                del self._late[item.channel]  # the agent's last word on it
            return None
        if channel._ended:
            raise proto.AgentProtocolError(f"frame after the end of channel {item.channel}")
        if channel.opened is None:
            if item.kind == proto.A_OPENED:
                channel.opened = proto.parse_opened(item.payload)
            elif item.kind == proto.A_FAILED:
                channel.refusal = item.payload[:200].decode("utf-8", "replace")
                channel._end()
            else:
                raise proto.AgentProtocolError(f"frame {item.kind:#x} before OPENED")
            return None
        if item.kind in (proto.A_STDOUT, proto.A_STDERR):
            # The agent sends output only when it read some (agent.c pump_out). An empty frame
            # reaches no consumer, so nothing pushes back on it: a flood of them would keep the
            # reader (and the event loop every session shares) parsing as fast as root writes.
            if not item.payload:
                raise proto.AgentProtocolError(f"empty output frame on channel {item.channel}")
            kind = STDERR if item.kind == proto.A_STDERR else STDOUT
            channel._put(Chunk(kind, item.payload))
            return channel
        if item.kind == proto.A_EXIT:
            channel.status = proto.parse_exit(item.payload)
            channel._end()
            return None
        raise proto.AgentProtocolError(f"frame {item.kind:#x} on open channel {item.channel}")

    async def _sandbox_running(self) -> bool:
        """Whether the agent's stream ended in a sandbox that still runs (its own fault)."""
        if self._is_running is None:
            return True
        # A dying sandbox (gVisor after an OOM) can end its processes a moment before the engine
        # marks it stopped: look a few times before blaming the agent.
        for delay in STATE_DELAYS:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(STATE_SECONDS):
                    if not await self._is_running():
                        return False
            except TimeoutError:
                pass
        return True

    async def _sandbox_stopped(self) -> None:
        """The sandbox itself stopped: as with an exec, the pool's watcher reports it
        (`sandbox.died`) and aborts the sandbox's channels; without one, they end so after a while.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOPPED_SECONDS):
                await self._closed.wait()
        self._lose("the sandbox stopped", report=False, aborted=True)

    def _lose(self, reason: str, *, report: bool = True, aborted: bool = False) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self._closed.set()
        for channel in list(self._channels.values()):
            if aborted:
                channel.abort()
            channel._end()
        self._channels.clear()
        self._stream.abort()
        # Before its HELLO there is no agent to blame: an image without one runs the real sshd,
        # which refuses the option on stderr and exits (start_agent then logs it at INFO).
        if report and self._greeted:
            log.warning("sandbox %s: agent link ended: %r", self._container, reason)
            self._on_failure(reason)

    def close(self) -> None:
        """The front is done with the sandbox (stopped or removed): drop the stream quietly."""
        self._lose("closed by the front", report=False)


async def start_agent(
    engine: ContainerEngine, container_id: str, on_failure: Callable[[str], None]
) -> AgentLink | None:
    """Start the image's agent in a prepared sandbox; None when the image has none."""
    stream = await engine.exec(
        container_id, list(AGENT_ARGV), user="root", tty=False, env=None, workdir="/"
    )

    async def is_running() -> bool:
        try:
            details = await engine.inspect(container_id)
        except SandboxGone:
            return False
        except SandboxError:
            return True  # unknown: the agent's fault until the engine says otherwise
        return bool((details.get("State") or {}).get("Running", True))

    link = AgentLink(stream, container_id, on_failure, is_running)
    try:
        ok = await link.handshake()
    except BaseException:
        link.close()
        raise
    if not ok:
        log.info("sandbox %s: no agent answered (%r)", container_id[:12], link.lost)
        link.close()
        return None
    return link


__all__ = [
    "AGENT_ARGV",
    "AgentChannel",
    "AgentLink",
    "AgentLinkLost",
    "AgentUnavailable",
    "start_agent",
]
