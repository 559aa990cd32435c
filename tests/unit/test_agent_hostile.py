"""Red-team cases for the agent link: a root attacker owns the agent's stdout and stdin."""

from __future__ import annotations

import asyncio

import pytest

from sandtrap.sandbox import agent as agent_module
from sandtrap.sandbox import agentproto as proto
from sandtrap.sandbox.agent import AgentLinkLost
from sandtrap.sandbox.base import STDOUT, Chunk
from tests.unit.test_agent_link import ScriptedAgent, linked, open_one, reply


async def test_empty_output_frames_end_the_link() -> None:
    # Empty STDOUT/STDERR frames reach no consumer, so nothing pushes back on them: a flood of
    # 9-byte frames kept the reader parsing them as fast as the agent wrote them, a busy event
    # loop for every session of the service. The real agent never sends one (pump_out, n > 0).
    flood = reply(proto.A_STDOUT, 1) * 2000 + reply(proto.A_STDERR, 1)
    agent = ScriptedAgent([flood])
    link, failures = await linked(agent)
    channel = await open_one(link)
    async with asyncio.timeout(5):
        assert await channel.read() is None
    assert len(failures) == 1 and "empty" in failures[0]
    assert not link.is_alive


class DeafAgent(ScriptedAgent):
    """An agent that stops reading its stdin once the channel is open (SIGSTOP, or replaced)."""

    def __init__(self) -> None:
        super().__init__()
        self.deaf = False
        self.blocked = asyncio.Event()

    async def write(self, data: bytes) -> None:
        if self.deaf:
            self.blocked.set()
            await asyncio.Event().wait()  # the pipe is full and nobody drains it
        await super().write(data)
        if self.sent and self.sent[-1].kind == proto.OPEN:
            self.deaf = True


async def test_close_does_not_hang_on_an_agent_that_stops_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session closes its stream shielded: a CLOSE frame waiting forever on an agent that no
    # longer reads its stdin kept that close (and the session's teardown) pending for good.
    monkeypatch.setattr(agent_module, "SEND_SECONDS", 0.05)
    agent = DeafAgent()
    link, failures = await linked(agent)
    channel = await open_one(link)
    agent.say(reply(proto.A_STDOUT, 1, b"hi"))
    assert await channel.read() == Chunk(STDOUT, b"hi")
    async with asyncio.timeout(5):
        await channel.close()
    assert agent.blocked.is_set()
    assert not link.is_alive and len(failures) == 1
    with pytest.raises(AgentLinkLost):
        await channel.wait()
