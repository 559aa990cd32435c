"""Issue 14's findings against the real engine: a compromised front speaking raw HTTP to the gate.

Each test drives an in-process gate (`serve_gate`, the engine at /var/run/docker.sock) with the
requests of one finding and checks the answer, the engine's state and the `gate.refused` events.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import Config
from sandtrap.gate import proxy, serve_gate
from sandtrap.sandbox.hardening import container_body
from tests.conftest import IMAGE
from tests.docker.service import remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

INTERVAL = 0.5
SECCOMP_ALLOW = 'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'


@dataclass
class GateUnderTest:
    config: Config
    sock: Path

    def events(self) -> list[dict[str, Any]]:
        path = self.config.storage.data_dir / "log" / "gate.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def wait_counted(self, total: int) -> None:
        """Until the events account for `total` refusals (aggregates come once per interval)."""
        async with asyncio.timeout(10):
            while sum(self.counts().values()) < total:
                await asyncio.sleep(INTERVAL / 4)
        await asyncio.sleep(INTERVAL * 2)  # and nothing more comes

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for event in self.events():
            out[event["rule"]] = out.get(event["rule"], 0) + event["count"]
        return out


async def _start(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[GateUnderTest]:
    config = service_config(tmp_path / "var", **sections)
    sock = tmp_path / "gate.sock"
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(
        serve_gate(config, sock, config.sandbox.docker_url, stop=stop, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield GateUnderTest(config, sock)
    finally:
        stop.set()
        await serving
        remove_sensor_containers(config.sensor)


@pytest.fixture
async def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GateUnderTest]:
    monkeypatch.setattr(proxy, "REFUSAL_INTERVAL_SECONDS", INTERVAL)
    async for running in _start(
        tmp_path,
        pool={"size": 1, "max_sandboxes": 1},
        retention={"max_count": 10},
        limits={"max_connections": 1},
    ):
        yield running


async def raw(gate: GateUnderTest, data: bytes, *, eof: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are (then EOF); return the answer's status and body (0: none came)."""
    reader, writer = await asyncio.open_unix_connection(str(gate.sock))
    try:
        writer.write(data)
        await writer.drain()
        if eof:
            writer.write_eof()
        async with asyncio.timeout(30):
            answer = await reader.read(-1)
    except ConnectionResetError:  # a 503 for a connection beyond the cap may overtake our bytes
        answer = b""
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return (int(head.split(b" ")[1]) if head else 0), body


def request(method: str, target: str, body: Any = None, headers: Iterable[str] = ()) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", *headers]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def sandbox_body(config: Config, **host: Any) -> dict[str, Any]:
    body = container_body(
        config.sandbox,
        image=IMAGE,
        hostname="web-prod-01",
        sensor=config.sensor,
        created=datetime.now(UTC),
    )
    body["HostConfig"].update(host)
    return body


async def create(gate: GateUnderTest, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, answer = await raw(gate, request("POST", f"/v1.41/containers/create?name={name}", body))
    return status, json.loads(answer)


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def _engine_names(sensor: str) -> list[str]:
    return sorted(
        _docker(
            "ps", "-a", "--filter", f"label=sandtrap.sensor={sensor}", "--format", "{{.Names}}"
        ).split()
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # Seccomp replaced by an allow-all profile: only `unconfined` used to be refused.
        ({"SecurityOpt": ["no-new-privileges:true", SECCOMP_ALLOW]}, "SecurityOpt must be"),
        ({"SecurityOpt": ["no-new-privileges:true", "apparmor=unconfined"]}, "SecurityOpt"),
        # Host disk through logs.
        ({"LogConfig": {"Type": "json-file", "Config": {}}}, "LogConfig.Type must be"),
        # The host's tini mounted into the sandbox.
        ({"Init": True}, "HostConfig.Init must be false"),
        # The host's cgroup tree (and /docker/<id> in /proc/1/cgroup, issue 15).
        ({"CgroupnsMode": "host"}, 'HostConfig.CgroupnsMode must be "private"'),
    ],
)
async def test_security_fields_other_than_the_pools_are_refused(
    gate: GateUnderTest, change: dict[str, Any], reason: str
) -> None:
    status, answer = await create(
        gate, "sandtrap-pool-hostile", sandbox_body(gate.config, **change)
    )
    assert status == 403 and reason in answer["message"], answer
    assert _engine_names(gate.config.sensor) == []
    (event,) = gate.events()
    assert (event["rule"], event["count"]) == ("create", 1) and reason in event["reason"]


async def test_extra_labels_are_refused_so_compose_cannot_be_aimed_at_a_sandbox(
    gate: GateUnderTest,
) -> None:
    body = sandbox_body(gate.config)
    body["Labels"] |= {"com.docker.compose.project": "sandtrap",
                       "com.docker.compose.service": "sandtrap"}  # fmt: skip
    status, answer = await create(gate, "sandtrap-pool-compose", body)
    assert status == 403 and "Labels.com.docker.compose.project is not a field" in answer["message"]
    assert _engine_names(gate.config.sensor) == []


async def test_what_the_engine_gets_is_the_pools_body(gate: GateUnderTest) -> None:
    status, answer = await create(gate, "sandtrap-pool-own", sandbox_body(gate.config))
    assert status == 201, answer
    inspected = json.loads(await asyncio.to_thread(_docker, "inspect", answer["Id"]))[0]
    image = json.loads(await asyncio.to_thread(_docker, "image", "inspect", IMAGE))[0]
    host = inspected["HostConfig"]
    assert host["LogConfig"]["Type"] == "none" and host["Init"] is False
    assert host["CgroupnsMode"] == "private"
    assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["CapDrop"] == ["ALL"]
    assert set(inspected["Config"]["Labels"]) - set(image["Config"]["Labels"]) == {
        "sandtrap.role", "sandtrap.sensor", "sandtrap.created", "sandtrap.image",
        "sandtrap.hostname",
    }  # fmt: skip
    # /info is the gate's own answer: the data root the pool needs, nothing about the host.
    status, info = await raw(gate, request("GET", "/v1.41/info"))
    assert status == 200 and set(json.loads(info)) == {"DockerRootDir"}


async def _start_stop(gate: GateUnderTest, action: str, container_id: str) -> int:
    status, _ = await raw(gate, request("POST", f"/v1.41/containers/{container_id}/{action}"))
    return status


async def test_starting_stopped_sandboxes_counts_against_the_running_cap(
    gate: GateUnderTest,
) -> None:
    """pool.max_sandboxes 1: at most 2 running or created, however they got there."""
    ids = []
    for n in range(2):
        status, answer = await create(gate, f"sandtrap-pool-cap{n}", sandbox_body(gate.config))
        assert status == 201, answer
        ids.append(answer["Id"])
        assert await _start_stop(gate, "start", answer["Id"]) == 204
    for container_id in ids:
        assert await _start_stop(gate, "stop?t=0", container_id) == 204
    for n in range(2, 4):
        status, answer = await create(gate, f"sandtrap-pool-cap{n}", sandbox_body(gate.config))
        assert status == 201, answer
        assert await _start_stop(gate, "start", answer["Id"]) == 204
    # The stopped ones may not be started on top: that was 300 running instead of 100.
    status, body = await raw(gate, request("POST", f"/v1.41/containers/{ids[0]}/start"))
    assert status == 403 and b"capacity: 2 sandboxes of this sensor are running" in body
    for action in ("restart", "unpause"):
        assert await _start_stop(gate, action, ids[0]) == 403
    running = await asyncio.to_thread(
        _docker, "ps", "-q", "--filter", f"label=sandtrap.sensor={gate.config.sensor}"
    )
    assert len(running.split()) == 2
    await asyncio.sleep(INTERVAL * 3)
    assert gate.counts() == {"capacity": 1, "route": 2}


async def test_malformed_requests_get_an_answer_and_an_event(gate: GateUnderTest) -> None:
    nested = b'{"Image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases: list[tuple[bytes, int, str]] = [
        (b"GET /v1.41 HTTP/1.1\r\n\r\n", 403, "route"),
        (b"GET /v1.41/containers/../info HTTP/1.1\r\n\r\n", 403, "route"),
        (b"GET /v1.41//info HTTP/1.1\r\n\r\n", 403, "route"),
        (b"GET /v1.41/%69nfo HTTP/1.1\r\n\r\n", 403, "route"),
        (b"POST /v1.41/containers/create?name=sandtrap-x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",
         400, "request"),
        (b"POST /v1.41/containers/create?name=sandtrap-x HTTP/1.1\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "request"),
        (b"GET /v1.41/version HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "request"),
        (b"GET /v1.41/version HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "request"),
        (b"GET /v1.41/version\nX: y HTTP/1.1\r\n\r\n", 400, "request"),
        (b"GET http://docker/v1.41/version HTTP/1.1\r\n\r\n", 400, "request"),
        (b"POST /v1.41/containers/create?name=sandtrap-x HTTP/1.1\r\nContent-Length: "
         + str(len(nested)).encode() + b"\r\n\r\n" + nested, 403, "create"),
        (request("POST", "/v1.41/containers/create?name=sandtrap-x")[:-2]
         + b"Content-Length: 9000\r\n\r\n" + b"[" * 9000, 403, "create"),
        (b"GET / HTTP/1.1\r\n\r\n", 403, "route"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "request"),
    ]  # fmt: skip
    for data, status, _rule in cases:
        got, body = await raw(gate, data)
        assert got == status, (data[:80], body)
        assert b"sandtrap gate: refused" in body
    # A client that sends half a head and closes still gets an answer and counts.
    got, _ = await raw(gate, b"GET /v1.41/version HTTP/1.1\r\nHost: x", eof=True)
    assert got == 400
    await asyncio.sleep(INTERVAL * 3)
    expected: dict[str, int] = {}
    for _data, _status, rule in cases:
        expected[rule] = expected.get(rule, 0) + 1
    expected["request"] += 1
    assert gate.counts() == expected
    # Pipelining: the second request in the same write is never parsed, let alone forwarded.
    got, body = await raw(
        gate, request("GET", "/v1.41/version") + request("POST", "/v1.41/containers/x/kill")
    )
    assert got == 200 and body.count(b"HTTP/1.1") == 0
    await asyncio.sleep(INTERVAL * 3)
    assert gate.counts() == expected


async def test_a_flood_of_refusals_makes_a_few_events_with_counts(gate: GateUnderTest) -> None:
    # 50 at a time, below the connection cap (and the kernel's accept queue).
    slots = asyncio.Semaphore(50)

    async def refused(n: int) -> int:
        async with slots:
            return (await raw(gate, request("GET", f"/v1.41/x{n}")))[0]

    assert set(await asyncio.gather(*(refused(n) for n in range(300)))) == {403}
    await gate.wait_counted(300)
    events = gate.events()
    assert gate.counts() == {"route": 300}
    assert 2 <= len(events) <= 3, events  # the first at once, then one per interval
    assert events[0]["count"] == 1 and events[0]["path"].startswith("/v1.41/x")


async def test_connections_and_buffered_bytes_are_capped(gate: GateUnderTest) -> None:
    """limits.max_connections 1: the gate serves 4 x 1 + 64 = 68 clients at once."""
    held: list[asyncio.StreamWriter] = []
    try:
        # 64 creates announcing 256 KiB bodies (the create cap) fill the 16 MiB body budget.
        head = request("POST", "/v1.41/containers/create?name=sandtrap-x")[:-2]
        for _ in range(64):
            _reader, writer = await asyncio.open_unix_connection(str(gate.sock))
            writer.write(head + b"Content-Length: 262144\r\n\r\n")
            held.append(writer)
        await asyncio.sleep(0.5)
        status, body = await raw(gate, head + b"Content-Length: 262144\r\n\r\n" + b"x" * 262144)
        assert status == 503 and b"too many body bytes buffered" in body
        # A body beyond its endpoint's cap is refused before a byte of it is read.
        status, body = await raw(gate, head + b"Content-Length: 262145\r\n\r\n")
        assert status == 413
        for _ in range(4):
            _reader, writer = await asyncio.open_unix_connection(str(gate.sock))
            held.append(writer)
        await asyncio.sleep(0.5)
        # (It says so before the client sends a byte: a request written meanwhile is dropped.)
        status, body = await raw(gate, b"")
        assert status == 503 and b"68 connections open" in body
    finally:
        for writer in held:
            writer.close()
    await asyncio.sleep(0.5)
    status, _ = await raw(gate, request("GET", "/v1.41/version"))
    assert status == 200
