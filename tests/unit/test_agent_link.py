"""The agent's frames and the front's link to it, against hostile agents (no engine)."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandtrap.sandbox import agentproto as proto
from sandtrap.sandbox.agent import AgentLink, AgentLinkLost, AgentUnavailable
from sandtrap.sandbox.base import STDERR, STDOUT, Chunk


def reply(kind: int, channel: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) + 5, kind, channel) + payload


HELLO = reply(proto.A_HELLO, 0, proto.HELLO_TEXT)


class ScriptedAgent:
    """An exec stream whose agent answers HELLO and OPEN, then says what the test scripts."""

    def __init__(self, after_open: list[bytes] | None = None, *, opened: bool = True) -> None:
        self.out: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.sent: list[proto.Frame] = []
        self.after_open = after_open or []
        self.opened = opened
        self.aborted = False
        self._parser = _FrontParser()

    async def read(self) -> Chunk | None:
        if self.aborted:
            return None
        return await self.out.get()

    async def write(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            self.sent.append(item)
            if item.kind == proto.HELLO:
                self.out.put_nowait(Chunk(STDOUT, HELLO))
            elif item.kind == proto.OPEN and self.opened:
                self.out.put_nowait(
                    Chunk(STDOUT, reply(proto.A_OPENED, item.channel, b"\0\0\0\x07pts/0"))
                )
                for data_out in self.after_open:
                    self.out.put_nowait(Chunk(STDOUT, data_out))

    def say(self, data: bytes | None) -> None:
        self.out.put_nowait(None if data is None else Chunk(STDOUT, data))

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True
        self.out.put_nowait(None)

    async def close(self) -> None: ...


class _FrontParser:
    """Parses what the front sends (the agent's side of the protocol, for the fake)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[proto.Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 9:
            length, kind, channel = struct.unpack_from(">IBI", self._buffer)
            if len(self._buffer) < 4 + length:
                break
            frames.append(proto.Frame(kind, channel, self._buffer[9 : 4 + length]))
            self._buffer = self._buffer[4 + length :]
        return frames


async def linked(agent: ScriptedAgent) -> tuple[AgentLink, list[str]]:
    failures: list[str] = []
    link = AgentLink(agent, "c" * 64, failures.append)
    assert await link.handshake()
    return link, failures


async def open_one(link: AgentLink, tty: bool = True) -> object:
    return await link.open(
        ["/bin/bash", "-c", "id"],
        user="root",
        tty=tty,
        env={"TERM": "xterm"},
        workdir="/root",
        size=(80, 24),
    )


async def test_channel_output_exit_and_input() -> None:
    agent = ScriptedAgent(
        [
            reply(proto.A_STDOUT, 1, b"uid=0(root)\n"),
            reply(proto.A_STDERR, 1, b"warn\n"),
            reply(proto.A_EXIT, 1, b"\0\0\0\x03"),
        ]
    )
    link, failures = await linked(agent)
    channel = await link.open(
        ["/bin/bash"], user="root", tty=False, env={"LANG": "C"}, workdir="/root", size=None
    )
    assert channel.opened == proto.Opened(7, "pts/0")
    await channel.write(b"x" * (proto.MAX_DATA + 1))
    await channel.close_stdin()
    assert await channel.read() == Chunk(STDOUT, b"uid=0(root)\n")
    assert await channel.read() == Chunk(STDERR, b"warn\n")
    assert await channel.read() is None
    assert await channel.wait() == 3
    await channel.close()
    kinds = [f.kind for f in agent.sent]
    assert kinds == [proto.HELLO, proto.OPEN, proto.DATA, proto.DATA, proto.EOF]
    opened = agent.sent[1].payload
    assert opened[9:] == b"root\0/root\0/bin/bash\0LANG=C\0"
    assert failures == []
    assert link.is_alive


@pytest.mark.parametrize(
    "hostile",
    [
        reply(proto.A_STDOUT, 9, b"not open"),  # a channel the front never opened
        reply(0x7F, 1, b""),  # an unknown type
        struct.pack(">IBI", proto.MAX_FRAME + 1, proto.A_STDOUT, 1),  # over 64 KiB
        reply(proto.A_EXIT, 1, b"\0\0\1\0"),  # exit status 256
        reply(proto.A_EXIT, 1, b"\0"),  # a short status
        reply(proto.A_OPENED, 1, b"\0\0\0\x01pts/0"),  # a second OPENED
        reply(proto.A_HELLO, 0, proto.HELLO_TEXT),  # a second HELLO
        struct.pack(">IBI", 2, proto.A_STDOUT, 1),  # a length shorter than the header
    ],
)
async def test_hostile_frame_ends_the_link(hostile: bytes) -> None:
    agent = ScriptedAgent([hostile])
    link, failures = await linked(agent)
    channel = await open_one(link)
    assert await channel.read() is None
    with pytest.raises(AgentLinkLost):
        await channel.wait()
    await channel.close()
    assert len(failures) == 1 and not link.is_alive
    assert agent.aborted
    with pytest.raises(AgentUnavailable):
        await open_one(link)


async def test_frame_after_exit_ends_the_link() -> None:
    agent = ScriptedAgent([reply(proto.A_EXIT, 1, b"\0\0\0\0"), reply(proto.A_STDOUT, 1, b"x")])
    link, failures = await linked(agent)
    channel = await open_one(link)
    assert await channel.read() is None
    assert await channel.wait() == 0
    with pytest.raises(AgentUnavailable):
        await open_one(link)  # its read meets the frame after EXIT
    assert len(failures) == 1 and "after the end" in failures[0]


async def test_output_on_stderr_ends_the_link() -> None:
    agent = ScriptedAgent()
    link, failures = await linked(agent)
    channel = await open_one(link)
    agent.out.put_nowait(Chunk(STDERR, b"hello"))
    assert await channel.read() is None
    assert len(failures) == 1 and "stderr" in failures[0]


async def test_late_frames_after_close_are_bounded() -> None:
    agent = ScriptedAgent()
    link, failures = await linked(agent)
    channel = await open_one(link)
    await channel.close()
    assert agent.sent[-1].kind == proto.CLOSE
    other = await open_one(link)
    for _ in range(200):
        agent.say(reply(proto.A_STDOUT, 1, b"flood"))
    assert await other.read() is None
    assert len(failures) == 1 and "not open" in failures[0]


async def test_agent_that_dies_ends_channels_without_status() -> None:
    agent = ScriptedAgent()
    link, failures = await linked(agent)
    channel = await open_one(link)
    agent.say(None)  # kill -9: the exec's stream ends
    assert await channel.read() is None
    with pytest.raises(AgentLinkLost):
        await channel.wait()
    assert failures == ["the agent's stream ended"]


async def test_refused_open_and_silent_agent() -> None:
    agent = ScriptedAgent(opened=False)
    link, _ = await linked(agent)
    agent.say(reply(proto.A_FAILED, 1, b"no such user"))
    with pytest.raises(AgentUnavailable, match="no such user"):
        await open_one(link)
    assert link.is_alive
    silent = ScriptedAgent(opened=False)
    link2, failures = await linked(silent)
    with pytest.raises(AgentUnavailable):
        async with asyncio.timeout(10):
            await open_one(link2)
    assert failures == ["no answer to OPEN"]


async def test_no_agent_in_the_image() -> None:
    agent = ScriptedAgent()
    agent.write = _no_answer  # type: ignore[method-assign]  # the real sshd: exits at once
    agent.say(None)
    link = AgentLink(agent, "c" * 64, lambda reason: None)
    assert not await link.handshake()


async def _no_answer(data: bytes) -> None:
    return None


async def test_backpressure_waits_for_the_slow_channel() -> None:
    agent = ScriptedAgent()
    link, failures = await linked(agent)
    slow = await open_one(link)
    fast = await open_one(link)
    for _ in range(40):
        agent.say(reply(proto.A_STDOUT, 1, b"s" * 60000))  # 2.4 MB for the slow one
    agent.say(reply(proto.A_STDOUT, 2, b"fast"))
    reader = asyncio.create_task(fast.read())
    await asyncio.sleep(0.05)
    assert not reader.done()  # the reader waits for the slow channel's consumer
    got = 0
    while got < 40 * 60000:
        chunk = await slow.read()
        assert chunk is not None
        got += len(chunk.data)
    assert await reader == Chunk(STDOUT, b"fast")
    assert failures == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_parser_on_garbage_only_raises_its_error(chunks: list[bytes]) -> None:
    parser = proto.FrameParser()
    try:
        for data in chunks:
            for item in parser.feed(data):
                assert item.kind in range(0x41, 0x47)
                assert len(item.payload) <= proto.MAX_FRAME - 5
            assert parser.pending() <= proto.MAX_FRAME + 4 + 200
    except proto.AgentProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                reply,
                st.sampled_from([*range(0x41, 0x47), 0, 1, 0xFF]),
                st.integers(0, 3),
                st.binary(max_size=40),
            ),
        ),
        max_size=12,
    )
)
def test_link_on_hostile_agent_never_raises_or_hangs(said: list[bytes]) -> None:
    async def scenario() -> None:
        agent = ScriptedAgent(said)
        link, failures = await linked(agent)
        try:
            channel = await open_one(link)
        except AgentUnavailable:
            return
        agent.say(None)
        async with asyncio.timeout(5):
            while await channel.read() is not None:
                pass
        try:
            status = await channel.wait()
        except AgentLinkLost:
            assert not link.is_alive
        else:
            assert 0 <= status <= 255
        await channel.close()
        assert len(failures) <= 1

    asyncio.run(scenario())


def test_parse_opened_and_frames() -> None:
    assert proto.parse_opened(b"\0\0\0\x05notty") == proto.Opened(5, "notty")
    for bad in (b"", b"\0\0\0\x05tty/1", b"\0\0\0\x05pts/x", b"\0\0\0\x05pts/1\n" + b"1" * 40):
        with pytest.raises(proto.AgentProtocolError):
            proto.parse_opened(bad)
    with pytest.raises(ValueError, match="NUL"):
        proto.open_frame(1, ["a\0b"], user="root", tty=False, env=None, workdir=None, size=None)
    with pytest.raises(ValueError, match="frame limit"):
        proto.frame(proto.DATA, 1, b"x" * proto.MAX_FRAME)


async def test_a_stopped_sandbox_waits_for_the_watcher_not_an_agent_failure() -> None:
    agent = ScriptedAgent()
    failures: list[str] = []

    async def stopped() -> bool:
        return False

    link = AgentLink(agent, "c" * 64, failures.append, stopped)
    assert await link.handshake()
    channel = await open_one(link)
    agent.say(None)  # the sandbox died with everything in it
    reader = asyncio.create_task(channel.read())
    await asyncio.sleep(0.05)
    assert not reader.done()  # as an exec's stream would, until the watcher says so
    channel.abort()  # what ContainerSandbox.abort() does for the watcher (sandbox.died)
    link.close()
    assert await reader is None
    assert await channel.wait() == 255
    assert failures == []
