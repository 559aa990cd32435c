"""Health decisions and the gate child's addressing (pure parts)."""

from __future__ import annotations

from pathlib import Path

from sandtrap.config import parse_config
from sandtrap.gate.child import GateChild, auto_socket
from sandtrap.health import check_listening, evaluate_pool, listener_targets, listening_ports


def test_pool_check_needs_a_fresh_status_and_a_working_engine() -> None:
    assert not evaluate_pool(None, 100.0).ok
    pool = {"idle": 3, "busy": 0, "creating": 0, "errors_total": 0, "engine_ok": True}
    assert evaluate_pool({"time": 95.0, "pool": pool}, 100.0).ok
    assert "stale" in evaluate_pool({"time": 10.0, "pool": pool}, 100.0).detail
    failing = evaluate_pool({"time": 95.0, "pool": {**pool, "engine_ok": False}}, 100.0)
    assert not failing.ok and "engine" in failing.detail


def test_listener_targets_map_wildcards_to_loopback() -> None:
    config = parse_config({"ssh": {"listen": ["0.0.0.0:2222", "[::]:22"]}})
    assert listener_targets(config, None) == [("127.0.0.1", 2222), ("::1", 22)]
    assert listener_targets(config, {"listen": [["127.0.0.1", 40000]]}) == [("127.0.0.1", 40000)]


def test_listening_ports_from_proc(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 00000000:08AE 00000000:0000 0A 00000000:00000000\n"
        + "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000\n"
    )
    ports = listening_ports(tmp_path)
    assert ports == {2222}
    assert check_listening("127.0.0.1", 2222, ports).ok
    assert not check_listening("127.0.0.1", 8080, ports).ok
    assert listening_ports(tmp_path / "missing") is None
    assert not check_listening("127.0.0.1", 22, None).ok


def test_gate_modes_give_the_engine_url(tmp_path: Path) -> None:
    auto = parse_config({"storage": {"data_dir": str(tmp_path)}})
    assert GateChild(auto).docker_url == f"unix://{tmp_path}/run/gate.sock"
    off = parse_config({"sandbox": {"gate": "off", "docker_url": "unix:///x.sock"}})
    assert GateChild(off).docker_url == "unix:///x.sock"
    path = parse_config({"sandbox": {"gate": "/run/sandtrap/gate.sock"}})
    assert GateChild(path).docker_url == "unix:///run/sandtrap/gate.sock"
    deep = parse_config({"storage": {"data_dir": str(tmp_path / ("d" * 120))}})
    socket_path = auto_socket(deep)
    assert len(str(socket_path)) < 108 and socket_path.name == "gate.sock"


ROOT = Path(__file__).resolve().parents[2]


def test_compose_files_agree_with_the_compose_config() -> None:
    import yaml

    from sandtrap.config import load_config, parse_listen

    config = load_config(ROOT / "config" / "compose.yaml")
    gate_dir = str(Path(config.sandbox.gate).parent)
    _, port = parse_listen(config.ssh.listen[0])
    for name in ("docker-compose.yml", "docker-compose.dev.yml"):
        services = yaml.safe_load((ROOT / name).read_text())["services"]
        front, gate = services["sandtrap"], services["gate"]
        assert not any("docker.sock" in volume for volume in front["volumes"]), name
        assert "/var/run/docker.sock:/var/run/docker.sock" in gate["volumes"], name
        for service in (front, gate):
            assert f"gate-run:{gate_dir}" in service["volumes"], name
            assert any(v.startswith("data:") for v in service["volumes"]), name
            assert service["user"] == "10001:10001" and service["cap_drop"] == ["ALL"], name
        assert gate["network_mode"] == "none"
        assert all(str(item).endswith(f":{port}") for item in front["ports"]), name
        assert front["depends_on"]["gate"]["condition"] == "service_healthy"
