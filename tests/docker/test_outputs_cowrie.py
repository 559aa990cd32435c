"""The `cowrie` output read as T-Pot and ewsposter read Cowrie's `cowrie.json` (issue 17).

A real service on the real engine, real OpenSSH clients (ssh, scp), one session of each kind an
attacker makes; then our cowrie.json is checked against what the consumers expect of Cowrie's
file. Their expectations are written down here from their sources:

- T-Pot's Logstash (telekom-security/tpotce docker/elk/logstash/dist/logstash.conf, `# Cowrie`):
  `file { path => "/data/cowrie/log/cowrie.json" codec => json }` (a line that is not one JSON
  object becomes `_jsonparsefailure` and is dropped); `date { match => ["timestamp", "ISO8601"] }`;
  `mutate { rename => {"dst_port" => "dest_port", "dst_ip" => "dest_ip"} }`; `geoip` on
  `src_ip`; `convert dest_port/src_port => integer`. Its Kibana dashboards read `src_ip`,
  `hassh`, `version`, `protocol`, `dest_port`, `username`, `password`, `input`, `url`,
  `outfile`, `filename`.
- ewsposter (telekom-security/ewsposter honeypots/cowrie.py): for every line `line['session']`
  and `line['eventid']` (a missing key raises); per session `cowrie.session.connect` gives
  `timestamp` (through `datetime.fromisoformat`), `src_ip`, `src_port`, `dst_ip`, `dst_port`,
  `protocol`; `cowrie.login.success`/`failed` give `username`, `password` and `timestamp`
  (sliced `[0:10]` and `[11:19]`); `cowrie.session.closed` `timestamp`; `cowrie.command.input`
  `input`; `cowrie.client.version` `version`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sandtrap.cli import cli
from sandtrap.config import dump_config
from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

COWRIE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
SHARED = ("eventid", "message", "sensor", "uuid", "timestamp", "session", "src_ip", "src_port",
          "dst_ip", "dst_port", "protocol")  # fmt: skip
UPLOAD = b"#!/bin/sh\necho uploaded by scp\n"


def ewsposter_sessions(lines: list[str]) -> dict[str, dict[str, Any]]:
    """ewsposter's Cowrie reader (first loop), restated: what it takes from each line."""
    sessions: dict[str, dict[str, Any]] = {}
    for text in lines:
        line = json.loads(text)
        if not line["session"]:
            continue
        sid = line["session"]
        if line["eventid"] == "cowrie.session.connect" and sid not in sessions:
            sessions[sid] = {
                "timestamp_start": line.get("timestamp"),
                "source_ip": line.get("src_ip"),
                "source_port": line.get("src_port"),
                "target_ip": line.get("dst_ip"),
                "target_port": line.get("dst_port"),
                "protocol": line.get("protocol"),
            }
        if sid not in sessions:
            continue
        if line["eventid"] in ("cowrie.login.success", "cowrie.login.failed"):
            sessions[sid]["login"] = "Success" if line["eventid"].endswith("success") else "Fail"
            sessions[sid]["username"] = line.get("username")
            sessions[sid]["password"] = line.get("password")
            sessions[sid]["timestamp_login"] = line.get("timestamp")
        if line["eventid"] == "cowrie.session.closed":
            sessions[sid]["timestamp_close"] = line.get("timestamp")
        if line["eventid"] == "cowrie.command.input":
            sessions[sid].setdefault("input", []).append(line["input"])
        if line["eventid"] == "cowrie.client.version":
            sessions[sid]["version"] = line.get("version")
    # ewsposter's second loop: these must not raise.
    for info in sessions.values():
        datetime.fromisoformat(info["timestamp_start"]).strftime("%Y-%m-%d %H:%M:%S")
        if "timestamp_login" in info:
            stamp = info["timestamp_login"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", f"{stamp[0:10]} {stamp[11:19]}")
    return sessions


def logstash_view(record: dict[str, Any]) -> dict[str, Any]:
    """What T-Pot's Cowrie filter makes of one record (rename, integer conversion)."""
    out = dict(record)
    datetime.strptime(out["timestamp"], COWRIE_TIME)  # date { match => ISO8601 }
    for ours, theirs in (("dst_port", "dest_port"), ("dst_ip", "dest_ip")):
        if ours in out:
            out[theirs] = out.pop(ours)
    for key in ("dest_port", "src_port"):
        if out.get(key) is not None:
            assert isinstance(out[key], int), (key, record)
    return out


@pytest.fixture(scope="module")
def honeypot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = service_config(
        tmp_path_factory.mktemp("var"),
        outputs=[{"type": "cowrie"}],
        metrics={"listen": "127.0.0.1:0"},
    )
    running = RunningService(config).start()
    running.call(running.service.pool.wait_warm)
    yield running
    running.stop()
    remove_sensor_containers(config.sensor)


def _cowrie_lines(honeypot: RunningService, sessions: int) -> list[str]:
    path = honeypot.config.storage.data_dir / "log" / "cowrie.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        closed = sum('"cowrie.session.closed"' in line for line in lines)
        artifacts = len(honeypot.events("sandbox.artifact"))
        if closed >= sessions and artifacts >= 2:
            return lines
        time.sleep(0.5)
    raise AssertionError(f"cowrie.json has {closed} closed sessions, wanted {sessions}")


def test_cowrie_json_reads_as_tpot_and_ewsposter_expect(
    honeypot: RunningService, tmp_path: Path
) -> None:
    # 1. a wrong password, then an interactive shell with an env request and a dropped file
    wrong = honeypot.ssh("true", password="not-the-password", timeout=30)
    assert wrong.returncode != 0
    shell = honeypot.ssh(
        None,
        stdin=b"echo hi there\nprintf 'xx' > /root/dropper.sh\nexit\n",
        extra=["-tt", "-o", "SetEnv=LANG=C.UTF-8"],
    )
    assert b"hi there" in shell.stdout, shell.stderr
    # 2. an scp upload (the classic protocol: scp -t on the far end)
    upload = tmp_path / "up.sh"
    upload.write_bytes(UPLOAD)
    scp = subprocess.run(
        [
            "sshpass",
            "-p",
            "123456",
            "scp",
            "-O",
            "-P",
            str(honeypot.port),
            *SSH_OPTS,
            str(upload),
            "root@127.0.0.1:/root/up.sh",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert scp.returncode == 0, scp.stderr
    # 3. a forwarding attempt (refused: nothing leaves the sensor)
    forward = honeypot.ssh(None, extra=["-W", "198.51.100.7:25"], timeout=30)
    assert forward.returncode != 0

    lines = _cowrie_lines(honeypot, sessions=4)
    records = [json.loads(line) for line in lines]  # codec => json: every line one object
    assert all(isinstance(r, dict) for r in records)
    for record in records:
        for key in SHARED:
            assert key in record, (key, record)
        assert record["eventid"].startswith(("cowrie.", "sandtrap.")), record
        assert re.fullmatch(r"[0-9a-f]{12}", record["session"]), record
        assert record["protocol"] == "ssh"
        assert record["sensor"] == honeypot.config.sensor
        logstash_view(record)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["eventid"], []).append(record)

    connect = by_id["cowrie.session.connect"][0]
    assert connect["dst_ip"] == "127.0.0.1" and connect["dst_port"] == honeypot.port
    assert connect["message"].startswith("New connection: 127.0.0.1:")
    version = by_id["cowrie.client.version"][0]
    assert version["version"].startswith("SSH-2.0-OpenSSH_")
    kex = by_id["cowrie.client.kex"][0]
    assert re.fullmatch(r"[0-9a-f]{32}", kex["hassh"])
    assert hashlib.md5(kex["hasshAlgorithms"].encode()).hexdigest() == kex["hassh"]  # noqa: S324
    assert kex["kexAlgs"] and kex["encCS"] and kex["macCS"] and kex["compCS"]
    assert "ssh-ed25519" in kex["keyAlgs"]
    failed = by_id["cowrie.login.failed"][0]
    assert (failed["username"], failed["password"]) == ("root", "not-the-password")
    assert failed["message"] == "login attempt [root/not-the-password] failed"
    success = by_id["cowrie.login.success"][0]
    assert success["message"] == "login attempt [root/123456] succeeded"
    commands = {r["input"]: r for r in by_id["cowrie.command.input"]}
    assert commands["echo hi there"]["message"] == "CMD: echo hi there"
    size = by_id["cowrie.client.size"][0]
    assert isinstance(size["width"], int) and isinstance(size["height"], int)
    var = next(r for r in by_id["cowrie.client.var"] if r["name"] == "LANG")
    assert var["value"] == "C.UTF-8" and var["message"] == "request_env: LANG=C.UTF-8"
    tcpip = by_id["cowrie.direct-tcpip.request"][0]
    assert (tcpip["dst_ip"], tcpip["dst_port"]) == ("198.51.100.7", 25)
    uploads = {r["filename"]: r for r in by_id["cowrie.session.file_upload"]}
    assert uploads["up.sh"]["shasum"] == hashlib.sha256(UPLOAD).hexdigest()
    assert Path(uploads["up.sh"]["outfile"]).read_bytes() == UPLOAD
    download = next(
        r for r in by_id["cowrie.session.file_download"] if r["destfile"] == "/root/dropper.sh"
    )
    assert download["shasum"] == hashlib.sha256(b"xx").hexdigest()
    assert Path(download["outfile"]).read_bytes() == b"xx"
    closed = by_id["cowrie.session.closed"]
    for record in closed:
        assert isinstance(record["duration"], float) and isinstance(record["duration_ms"], int)
        assert abs(record["duration"] * 1000 - record["duration_ms"]) < 1
    cast = by_id["cowrie.log.closed"][0]
    assert Path(cast["ttylog"]).exists() and cast["duration_ms"] >= 0

    sessions = ewsposter_sessions(lines)
    assert len(sessions) >= 4
    logged_in = [s for s in sessions.values() if s.get("login") == "Success"]
    assert logged_in and all(s["password"] == "123456" for s in logged_in)
    assert any("echo hi there" in s.get("input", []) for s in logged_in)
    assert all(s["version"].startswith("SSH-2.0-") for s in sessions.values())
    assert all("timestamp_close" in s for s in sessions.values())
    assert all(s["target_port"] == honeypot.port for s in sessions.values())


def test_metrics_scrape_with_bounded_labels(honeypot: RunningService, tmp_path: Path) -> None:
    """Issue 17: /metrics read with Prometheus' own text parser; no attacker value as a label."""
    assert honeypot.ssh("true", user="admin", password="hunter2-\x1b", timeout=30).returncode
    assert honeypot.ssh("id").returncode == 0
    metrics = honeypot.service.metrics
    assert metrics is not None
    host, port = metrics.addresses[0]
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        if samples.get(("sandtrap_sessions_active", ()), 1) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("sandtrap_connections_total") >= 2
    assert value("sandtrap_auth_attempts_total", result="failed", method="password") >= 1
    assert value("sandtrap_auth_attempts_total", result="success", method="password") >= 1
    assert value("sandtrap_sessions_total") >= 2 and value("sandtrap_sessions_active") == 0
    assert value("sandtrap_sandbox_allocation_seconds_count") >= 1
    assert value("sandtrap_login_seconds_count") >= 1
    assert value("sandtrap_sandboxes", state="warm") >= 0
    assert value("sandtrap_output_delivered_total", output="cowrie") > 0
    assert value("sandtrap_output_dropped_total", output="cowrie") == 0
    assert ("sandtrap_event_loop_lag_seconds", ()) in samples
    assert value("sandtrap_events_total", eventid="session.connect") >= 2
    labels = {v for (_, pairs) in samples for (_, v) in pairs}
    for hostile in ("admin", "root", "hunter2", "127.0.0.1", "not-the-password"):
        assert not any(hostile in label for label in labels), hostile
    # `sandtrap health` scrapes it the same way.
    config = honeypot.config.model_copy(
        update={"metrics": honeypot.config.metrics.model_copy(update={"listen": f"{host}:{port}"})}
    )
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    result = CliRunner().invoke(cli, ["health", "--config", str(path), "--check", "metrics"])
    assert result.exit_code == 0, result.output
    assert "metric families; sessions active 0, output drops 0" in result.output
