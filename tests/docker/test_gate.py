"""The Engine API gate against the real engine: SandTrap's flows pass, hostile requests do not."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import Config
from sandtrap.errors import EngineError, EngineUnavailable, SandboxGone
from sandtrap.gate.child import GateChild
from sandtrap.sandbox.docker import Engine, exec_body
from sandtrap.sandbox.hardening import container_body
from tests.conftest import IMAGE
from tests.docker.service import RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = service_config(tmp_path_factory.mktemp("var"), sandbox={"gate": "auto"})
    service = RunningService(config).start()
    try:
        yield service
    finally:
        service.stop()
        remove_sensor_containers(config.sensor)


def _gate_url(service: RunningService) -> str:
    return GateChild(service.config).docker_url


def _refusal(service: RunningService, method: str, path: str, **kwargs: Any) -> str:
    """Send one request through the gate; return the error message (the request must fail)."""

    async def call() -> None:
        engine = Engine(_gate_url(service))
        try:
            await engine.request(method, path, operation="hostile", **kwargs)
        finally:
            await engine.close()

    with pytest.raises(EngineError) as caught:
        asyncio.run(call())
    assert caught.value.status == 403, caught.value
    return str(caught.value)


def _gate_events(service: RunningService) -> list[dict[str, Any]]:
    path = service.config.storage.data_dir / "log" / "gate.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _config_body(config: Config, **host: Any) -> dict[str, Any]:
    """The pool's own create body for this config's sensor, with HostConfig overrides."""
    body = container_body(
        config.sandbox,
        image=IMAGE,
        hostname="web-prod-01",
        sensor=config.sensor,
        created=datetime.now(UTC),
    )
    body["HostConfig"].update(host)
    return body


def _body(service: RunningService, **host: Any) -> dict[str, Any]:
    return _config_body(service.config, **host)


def test_the_service_reaches_the_engine_only_through_the_gate(gated: RunningService) -> None:
    assert gated.service.pool._engine.url == _gate_url(gated)
    assert _gate_url(gated).startswith("unix://") and "docker.sock" not in _gate_url(gated)
    mode = Path(_gate_url(gated).removeprefix("unix://")).stat().st_mode & 0o777
    assert mode == 0o660
    result = gated.ssh("id -u; echo through-the-gate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"0\nthrough-the-gate\n"
    # SandTrap's own requests are never refused.
    assert _gate_events(gated) == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ({"Privileged": True}, "Privileged must be false"),
        ({"Binds": ["/:/host"]}, "Binds must be []"),
        ({"NetworkMode": "bridge"}, 'NetworkMode must be "none"'),
        ({"CapAdd": ["SYS_ADMIN"]}, "HostConfig.CapAdd must be"),
    ],
)
def test_hostile_creates_are_refused_with_an_event(
    gated: RunningService, host: dict[str, Any], expected: str
) -> None:
    before = len(_gate_events(gated))
    message = _refusal(
        gated,
        "POST",
        "containers/create",
        params={"name": "sandtrap-pool-hostile"},
        body=_body(gated, **host),
    )
    assert "sandtrap gate: refused" in message and expected in message
    # The first create refusal is an event at once; later ones within the interval are counted
    # into one event (tests/docker/test_gate_findings.py checks the counts).
    events = _gate_events(gated)[before:]
    assert len(events) <= 1
    for event in events:
        assert event["eventid"] == "gate.refused" and event["rule"] == "create"
        assert event["method"] == "POST" and event["count"] == 1
        assert event["sensor"] == gated.config.sensor and event["client_pid"]
    names = subprocess.run(
        ["docker", "ps", "-a", "--filter", "name=sandtrap-pool-hostile", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert names == ""


def test_exec_into_a_container_without_our_labels_is_refused(gated: RunningService) -> None:
    foreign = subprocess.run(
        ["docker", "create", "--label", "sandtrap.role=sandbox", IMAGE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        message = _refusal(
            gated, "POST", f"containers/{foreign}/exec", body={"Cmd": ["id"], "User": "root"}
        )
        assert f"is not a sandbox of sensor {gated.config.sensor!r}" in message
        message = _refusal(gated, "POST", f"containers/{foreign}/start")
        assert "is not a sandbox of sensor" in message
        # Listing shows only this sensor's sandboxes, whatever filter the client asks for.
        listed = asyncio.run(_list(gated))
        assert foreign not in {item["Id"] for item in listed}
    finally:
        subprocess.run(["docker", "rm", "-f", foreign], capture_output=True, check=False)


async def _list(service: RunningService) -> list[dict[str, Any]]:
    engine = Engine(_gate_url(service))
    try:
        return await engine.containers("sandtrap.role=sandbox")
    finally:
        await engine.close()


def test_a_gone_container_is_404_not_a_refusal(gated: RunningService) -> None:
    """The engine's own answer for a vanished container, so "already gone" handling applies."""
    missing = "f" * 64

    async def calls() -> None:
        engine = Engine(_gate_url(gated))
        try:
            with pytest.raises(SandboxGone):
                await engine.inspect(missing)
            await engine.remove(missing)  # removing what is gone is not an error
        finally:
            await engine.close()

    before = len(_gate_events(gated))
    asyncio.run(calls())
    assert len(_gate_events(gated)) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "images/create?fromImage=alpine"),
        ("GET", "volumes"),
        ("POST", "containers/{id}/attach"),
        ("POST", "containers/{id}/exec?privileged=1"),
    ],
)
def test_endpoints_sandtrap_never_uses_are_refused(
    gated: RunningService, method: str, path: str
) -> None:
    own = next(iter(asyncio.run(_list(gated))))["Id"]
    target, _, query = path.format(id=own).partition("?")
    params = dict([query.split("=")]) if query else None
    message = _refusal(gated, method, target, params=params)
    assert "sandtrap gate: refused" in message
    assert "not an endpoint SandTrap uses" in message or "is not allowed" in message
    assert _gate_events(gated)[-1]["path"].startswith("/v1.")


def test_privileged_exec_into_our_own_sandbox_is_refused(gated: RunningService) -> None:
    own = next(iter(asyncio.run(_list(gated))))["Id"]
    body = exec_body(["id"], user="root", tty=False, env=None, workdir="/")
    body["Privileged"] = True
    message = _refusal(gated, "POST", f"containers/{own}/exec", body=body)
    assert "exec.Privileged must be false" in message


async def test_gate_in_process_relays_exec_bytes_and_half_close(tmp_path: Path) -> None:
    from sandtrap.gate import serve_gate
    from sandtrap.sandbox.hardening import pool_name

    config = service_config(tmp_path / "var")
    sock = tmp_path / "gate.sock"
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(
        serve_gate(config, sock, config.sandbox.docker_url, stop=stop, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 30)
    engine = Engine(f"unix://{sock}")
    container_id = ""
    try:
        await engine.version()
        body = _config_body(config)
        container_id = await engine.create(body, pool_name())
        await engine.start(container_id)
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        # `cat` ends only when our EOF (write_eof through the gate) reaches its stdin.
        status, out, err = await engine.run(
            container_id, ["/bin/sh", "-c", "cat; echo done >&2"], stdin=payload
        )
        assert (status, err) == (0, b"done\n")
        assert out == payload
        with pytest.raises(EngineError, match="sandtrap gate: refused"):
            await engine.request("GET", "networks", operation="hostile")
    finally:
        if container_id:
            await engine.remove(container_id)
        await engine.close()
        stop.set()
        await serving
    log = (tmp_path / "var" / "log" / "gate.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"].split("/", 2)[2] for line in log] == ["networks"]


def test_health_reports_listener_engine_and_pool(gated: RunningService, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sandtrap.cli import cli
    from sandtrap.config import dump_config

    path = tmp_path / "config.yaml"
    path.write_text(dump_config(gated.config))
    deadline = time.monotonic() + 20
    while not (gated.config.storage.data_dir / "run" / "status.json").exists():
        assert time.monotonic() < deadline, "no status file"
        time.sleep(0.2)
    result = CliRunner().invoke(cli, ["health", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"ok   listener 127.0.0.1:{gated.port}: listening"
    assert lines[1].startswith(f"ok   engine: {_gate_url(gated)}: Docker ")
    assert lines[2].startswith("ok   pool: idle ")
    knock = CliRunner().invoke(cli, ["health", "--config", str(path), "--knock", "--json"])
    assert knock.exit_code == 0, knock.output
    assert json.loads(knock.output.splitlines()[0])["detail"].startswith("SSH-2.0-OpenSSH_9.2p1")
    stopped = tmp_path / "other.yaml"
    stopped.write_text(dump_config(gated.config).replace(str(gated.config.storage.data_dir),
                                                         str(tmp_path / "nothing")))  # fmt: skip
    result = CliRunner().invoke(cli, ["health", "--config", str(stopped), "--check", "pool"])
    assert result.exit_code == 1 and "FAIL pool: no status file" in result.output


def test_creates_beyond_the_sensors_capacity_are_refused(tmp_path: Path) -> None:
    """A compromised front cannot create sandboxes without bound (2 x pool.max_sandboxes)."""
    config = service_config(
        tmp_path / "var",
        pool={"size": 1, "max_sandboxes": 1},
        retention={"max_count": 0},
        sandbox={"gate": "auto"},
    )
    service = RunningService(config).start()
    try:
        service.wait_warm()  # the pool's own member: 1 of the 2 allowed

        async def create(name: str) -> str:
            engine = Engine(_gate_url(service))
            try:
                return await engine.create(_body(service), name)
            finally:
                await engine.close()

        assert asyncio.run(create("sandtrap-pool-capacity-1"))
        message = _refusal(
            service,
            "POST",
            "containers/create",
            params={"name": "sandtrap-pool-capacity-2"},
            body=_body(service),
        )
        assert "capacity: 2 sandboxes of this sensor are running or created" in message
        (event,) = _gate_events(service)
        assert event["eventid"] == "gate.refused" and "capacity" in event["reason"]
        assert service.service.pool.statistics().idle == 1  # the pool itself is undisturbed
    finally:
        service.stop()
        remove_sensor_containers(config.sensor)


async def _slow_creates(listen: Path, delay: float) -> asyncio.Server:
    """An engine in front of the real one whose answers to container creates come late."""

    async def relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection("/var/run/docker.sock")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            up_writer.write(head + (await reader.readexactly(length) if length else b""))
            await up_writer.drain()
            if b"/containers/create" in head.split(b"\r\n", 1)[0]:
                await asyncio.sleep(delay)  # the engine creates it meanwhile; the gate gives up
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the server closes at the end of the test
        finally:
            up_writer.close()
            writer.close()

    return await asyncio.start_unix_server(serve, path=str(listen))


async def test_a_create_the_gate_gave_up_on_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody would own a sandbox whose create answered after the gate's timeout."""
    from sandtrap.gate import proxy, serve_gate
    from sandtrap.sandbox.hardening import pool_name

    monkeypatch.setattr(proxy, "_CREATE_TIMEOUT", 1.0)
    config = service_config(tmp_path / "var")
    slow = await _slow_creates(tmp_path / "slow.sock", delay=3)
    sock = tmp_path / "gate.sock"
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(
        serve_gate(config, sock, f"unix://{tmp_path / 'slow.sock'}", stop=stop, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 30)
    engine = Engine(f"unix://{sock}")
    name = pool_name()
    try:
        body = _config_body(config)
        with pytest.raises((EngineError, EngineUnavailable)):  # the gate hung up on it
            await engine.create(body, name)
        await asyncio.sleep(2)  # the gate gave up at 1 s, then removed what the engine made
        direct = Engine(config.sandbox.docker_url)
        try:
            left = await direct.containers(f"sandtrap.sensor={config.sensor}")
        finally:
            await direct.close()
        assert [item["Names"] for item in left] == []
    finally:
        await engine.close()
        stop.set()
        await serving
        slow.close()
        remove_sensor_containers(config.sensor)
