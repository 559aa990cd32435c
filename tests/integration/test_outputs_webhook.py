"""The webhook output and alert rules against a real HTTP server (aiohttp on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sandtrap.config import parse_config
from sandtrap.events import AuthSuccess, Peer, SandboxArtifact, SessionCommand
from sandtrap.outputs import Outputs

PEER = Peer("3f2a9c1b7d4e", "203.0.113.45", 51234, 22)


@dataclass
class Receiver:
    """Records every POST; `answers` (statuses) and `stall_seconds` script its misbehaviour."""

    url: str = ""
    bodies: list[Any] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    stall_seconds: float = 0.0
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.stall_seconds:
            stall, self.stall_seconds = self.stall_seconds, 0.0
            await asyncio.sleep(stall)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.bodies.append(await request.json())
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got.url = f"http://127.0.0.1:{port}/hook"
    yield got
    await runner.cleanup()


def _outputs(tmp_path: Path, outputs: list[dict[str, Any]], **sections: Any) -> Outputs:
    data = {"sensor": "honeypot-01", "storage": {"data_dir": str(tmp_path)}, "outputs": outputs}
    return Outputs(parse_config({**data, **sections}))


async def _until(predicate: Any, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


def _commands(count: int) -> list[SessionCommand]:
    return [SessionCommand(peer=PEER, channel=0, input=f"echo {n}") for n in range(count)]


async def test_batches_retries_and_order(tmp_path: Path, receiver: Receiver) -> None:
    receiver.answers = [503, 503]
    outputs = _outputs(
        tmp_path,
        [
            {
                "type": "webhook",
                "url": receiver.url,
                "batch_max_events": 10,
                "batch_max_seconds": 0.05,
                "retry_initial_seconds": 0.05,
                "headers": {"Authorization": "Bearer secret"},
            }
        ],
    )
    task = asyncio.create_task(outputs.run())
    for event in _commands(95):
        outputs.offer(event)
    await _until(lambda: outputs.statistics()[0].delivered == 95)
    outputs.stop()
    await task
    records = [r for body in receiver.bodies for r in body["events"]]
    assert [r["input"] for r in records] == [f"echo {n}" for n in range(95)]
    assert all(len(body["events"]) <= 10 for body in receiver.bodies)
    assert all(body["sensor"] == "honeypot-01" for body in receiver.bodies)
    stats = outputs.statistics()[0]
    assert stats.failures >= 1 and stats.dropped == 0 and stats.spooled >= 10


async def test_a_stalled_receiver_never_slows_offer_and_loses_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.stall_seconds = 3.0
    outputs = _outputs(
        tmp_path,
        [
            {
                "type": "webhook",
                "url": receiver.url,
                "timeout_seconds": 0.5,
                "retry_initial_seconds": 0.2,
                "batch_max_events": 500,
                "batch_max_seconds": 0,
            }
        ],
    )
    task = asyncio.create_task(outputs.run())
    took: list[float] = []
    for event in _commands(5000):
        start = time.perf_counter()
        outputs.offer(event)
        took.append(time.perf_counter() - start)
        if event.input.endswith("00"):
            await asyncio.sleep(0.01)
    # offer only appends to a deque, whatever the receiver does (a shared 2-core machine can
    # still preempt one call, hence the percentile).
    took.sort()
    assert took[len(took) * 99 // 100] < 0.001 and sum(took) < 0.5
    await _until(lambda: outputs.statistics()[0].delivered == 5000, 20)
    outputs.stop()
    await task
    inputs = [r["input"] for body in receiver.bodies for r in body["events"]]
    assert inputs == [f"echo {n}" for n in range(5000)]


async def test_refused_batch_is_dropped_and_counted(tmp_path: Path, receiver: Receiver) -> None:
    receiver.answers = [400]
    outputs = _outputs(tmp_path, [{"type": "webhook", "url": receiver.url, "batch_max_seconds": 0}])
    task = asyncio.create_task(outputs.run())
    outputs.offer(_commands(1)[0])
    await _until(lambda: outputs.statistics()[0].dropped == 1)
    outputs.offer(_commands(2)[1])
    await _until(lambda: outputs.statistics()[0].delivered == 1)
    outputs.stop()
    await task
    assert [r["input"] for b in receiver.bodies for r in b["events"]] == ["echo 1"]


HOSTILE_USER = "<!channel> @everyone [x](http://evil.example) `code` \x1b[31m"


@pytest.mark.parametrize("preset", ["slack", "discord", "telegram"])
async def test_alert_rules_rate_limit_and_digest_in_chat_presets(
    tmp_path: Path, receiver: Receiver, preset: str
) -> None:
    outputs = _outputs(
        tmp_path,
        [
            {
                "type": "webhook",
                "name": "chat",
                "url": receiver.url,
                "preset": preset,
                "chat_id": "-100123" if preset == "telegram" else None,
                "eventids": [],
                "batch_max_seconds": 0,
            }
        ],
        alerts=[
            {
                "name": "login",
                "when": "login_success",
                "output": "chat",
                "max_per_interval": 3,
                "interval_seconds": 0.5,
            },
            {"name": "miner", "when": "command", "pattern": "xmrig", "output": "chat"},
            {"name": "file", "when": "artifact", "output": "chat"},
        ],
    )
    task = asyncio.create_task(outputs.run())
    for n in range(40):
        outputs.offer(
            AuthSuccess(
                peer=Peer(f"{n:012x}", f"198.51.100.{n}", 40000, 22),
                username=HOSTILE_USER,
                method="password",
                password="123456",
            )
        )
    outputs.offer(SessionCommand(peer=PEER, channel=0, input="ls"))
    outputs.offer(SessionCommand(peer=PEER, channel=0, input="./xmrig -o pool:3333"))
    for _ in range(2):  # the same file twice: one alert
        outputs.offer(
            SandboxArtifact(
                peer=PEER, container_id="c", path="/tmp/x", size=1, sha256="ab" * 32, artifact="a"
            )
        )

    def texts() -> list[str]:
        key = {"slack": "text", "discord": "content", "telegram": "text"}[preset]
        return [line for body in receiver.bodies for line in body[key].splitlines()]

    await _until(lambda: any("digest" in line for line in texts()), 10)
    outputs.stop()
    await task
    lines = texts()
    logins = [line for line in lines if "login as" in line]
    assert len(logins) == 3
    assert len([line for line in lines if "xmrig" in line]) == 1
    assert len([line for line in lines if "new file" in line]) == 1
    digest = next(line for line in lines if "digest" in line)
    assert "37 more matches" in digest and "37 sources" in digest
    body = receiver.bodies[0]
    assert "\x1b" not in str(body)
    if preset == "slack":
        assert "<!channel>" not in body["text"] and "&lt;!channel&gt;" in body["text"]
    if preset == "discord":
        assert body["allowed_mentions"] == {"parse": []}
        assert "@everyone" not in body["content"].replace("\\@everyone", "")
        assert "\\[x\\]\\(http" in body["content"]
    if preset == "telegram":
        assert body["chat_id"] == "-100123" and "parse_mode" not in body
