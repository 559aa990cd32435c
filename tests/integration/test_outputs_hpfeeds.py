"""The hpfeeds output against the `hpfeeds` package's own broker, read by a subscriber.

The broker runs as a subprocess (`python -m hpfeeds.scripts.broker`, env authentication): ident
`sandtrap` may publish to `cowrie.sessions`, ident `reader` subscribes to it with the hpfeeds
wire protocol (the package's framing).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hpfeeds import protocol

from sandtrap.config import parse_config
from sandtrap.events import (
    AuthFailed,
    AuthSuccess,
    ClientKex,
    Peer,
    SandboxArtifact,
    SessionClosed,
    SessionCommand,
    SessionConnect,
)
from sandtrap.outputs import Outputs

PEER = Peer("3f2a9c1b7d4e", "203.0.113.45", 51234, 22)


@pytest.fixture(scope="module")
def broker() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {
        **os.environ,
        "HPFEEDS_SANDTRAP_SECRET": "s3cret",
        "HPFEEDS_SANDTRAP_PUBCHANS": "cowrie.sessions",
        "HPFEEDS_READER_SECRET": "r3ader",
        "HPFEEDS_READER_SUBCHANS": "cowrie.sessions",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hpfeeds.scripts.broker", "--bind", f"127.0.0.1:{port}",
         "--auth", "env"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no broker"
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
async def subscriber(broker: int) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker)
    unpacker = protocol.Unpacker()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    ready = asyncio.Event()

    async def pump() -> None:
        while data := await reader.read(65536):
            unpacker.feed(data)
            for opcode, body in unpacker:
                if opcode == protocol.OP_INFO:
                    _name, rand = protocol.readinfo(body)
                    writer.write(protocol.msgauth(rand, "reader", "r3ader"))
                    writer.write(protocol.msgsubscribe("reader", "cowrie.sessions"))
                    ready.set()
                elif opcode == protocol.OP_PUBLISH:
                    ident, channel, payload = protocol.readpublish(body)
                    received.put_nowait(
                        {"ident": ident, "channel": channel, "payload": json.loads(payload)}
                    )

    task = asyncio.create_task(pump())
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.2)  # the broker has the subscription before anything is published
    yield received
    task.cancel()
    writer.close()


def _outputs(tmp_path: Path, port: int, secret: str) -> Outputs:
    config = parse_config(
        {
            "sensor": "honeypot-01",
            "storage": {"data_dir": str(tmp_path)},
            "outputs": [
                {
                    "type": "hpfeeds",
                    "address": f"127.0.0.1:{port}",
                    "ident": "sandtrap",
                    "secret": secret,
                    "retry_initial_seconds": 0.1,
                }
            ],
        }
    )
    return Outputs(config)


def _session() -> list[Any]:
    return [
        SessionConnect(peer=PEER, dst_ip="192.0.2.10"),
        ClientKex(
            peer=PEER,
            client_version="SSH-2.0-Go",
            hassh="h",
            hassh_algorithms="a",
            kex_algs=[],
            enc_algs=[],
            mac_algs=[],
            comp_algs=[],
        ),
        AuthFailed(peer=PEER, username="admin", method="password", password="admin"),
        AuthSuccess(peer=PEER, username="root", method="password", password="123456"),
        SessionCommand(peer=PEER, channel=0, input="uname -a"),
        SandboxArtifact(
            peer=PEER,
            container_id="c",
            path="/tmp/x",
            size=2,
            sha256="ab" * 32,
            artifact="var/artifacts/" + "ab" * 32,
        ),
        SessionClosed(peer=PEER, duration=2.0, reason="closed"),
    ]


async def test_one_cowrie_sessions_summary_per_session(
    tmp_path: Path, broker: int, subscriber: asyncio.Queue[dict[str, Any]]
) -> None:
    outputs = _outputs(tmp_path, broker, "s3cret")
    task = asyncio.create_task(outputs.run())
    for event in _session():
        outputs.offer(event)
    message = await asyncio.wait_for(subscriber.get(), 10)
    outputs.stop()
    await task
    assert message["ident"] == "sandtrap" and message["channel"] == "cowrie.sessions"
    summary = message["payload"]
    assert summary["session"] == PEER.session_id
    assert (summary["peerIP"], summary["peerPort"]) == ("203.0.113.45", 51234)
    assert (summary["hostIP"], summary["hostPort"]) == ("192.0.2.10", 22)
    assert summary["loggedin"] == ["root", "123456"]
    assert summary["credentials"] == [["admin", "admin"]]
    assert summary["commands"] == ["uname -a"] and summary["hashes"] == ["ab" * 32]
    assert summary["version"] == "SSH-2.0-Go" and summary["protocol"] == "ssh"
    assert summary["startTime"] < summary["endTime"]
    assert outputs.statistics()[0].delivered == 1


async def test_a_wrong_secret_is_a_failure_and_the_summary_waits(
    tmp_path: Path, broker: int
) -> None:
    outputs = _outputs(tmp_path, broker, "wrong")
    task = asyncio.create_task(outputs.run())
    for event in _session():
        outputs.offer(event)
    async with asyncio.timeout(10):
        while outputs.statistics()[0].failures < 1:
            await asyncio.sleep(0.05)
    outputs.stop()
    await task
    stats = outputs.statistics()[0]
    assert stats.delivered == 0 and stats.dropped == 0 and stats.spool_bytes > 0
