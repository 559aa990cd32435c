"""Recording, commands, the index and the analyst CLI, end to end: real OpenSSH, real engine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml

from sandtrap.analysis.replay import read_cast
from sandtrap.store.index import read_records
from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

PROMPT = r"root@[\w-]+:[^\r\n]*# "
ASCIINEMA = Path(sys.executable).with_name("asciinema")


@pytest.fixture(scope="module")
def honeypot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = service_config(tmp_path_factory.mktemp("var"))
    running = RunningService(config).start()
    running.call(running.service.pool.wait_warm)
    yield running
    running.stop()
    remove_sensor_containers(config.sensor)


def _config_file(running: RunningService, path: Path) -> Path:
    config = running.config
    data = {
        "sensor": config.sensor,
        "storage": {"data_dir": str(config.storage.data_dir)},
        "sandbox": {"docker_url": config.sandbox.docker_url, "network": "none"},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sandtrap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _shell(port: int, size: tuple[int, int] = (24, 80)) -> pexpect.spawn[bytes]:
    argv = ["-p", "123456", "ssh", "-tt", "-p", str(port), *SSH_OPTS, "root@127.0.0.1"]
    return pexpect.spawn("sshpass", argv, timeout=30, dimensions=size)


def _wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _closed(running: RunningService, session: str) -> dict[str, Any]:
    events = _wait_for(lambda: running.events("session.closed", session=session))
    return dict(events[0])


def _cast_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_shell_cast_plays_back_what_the_client_saw(honeypot: RunningService) -> None:
    child = _shell(honeypot.port)
    seen = io.BytesIO()
    child.logfile_read = seen
    try:
        child.expect(PROMPT)
        child.sendline("echo héllo-€; yes '€ü' | head -c 90003; echo; echo done-marker")
        child.expect("done-marker\r\n")
        child.expect(PROMPT)
        child.setwinsize(40, 132)
        child.sendline("stty size")
        child.expect("40 132")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    shells = [e for e in honeypot.events("session.shell") if e["width"] == 80]
    shell = shells[-1]
    closed = _closed(honeypot, shell["session"])
    assert closed["exit_status"] == 3
    assert closed["bytes_out"] > 90000 and closed["bytes_in"] > 20
    cast = Path(shell["recording"])
    assert cast.parent.parts[-3:] == tuple(time.strftime("%Y/%m/%d", time.gmtime()).split("/"))
    lines = _cast_lines(cast)
    header, events = lines[0], lines[1:]
    assert header["version"] == 2 and (header["width"], header["height"]) == (80, 24)
    assert header["env"]["TERM"] and shell["session"] in header["title"]
    times = [e[0] for e in events]
    assert times == sorted(times) and times[-1] > 0
    codes = {e[1] for e in events}
    assert {"o", "i", "r"} <= codes
    assert [e[2] for e in events if e[1] == "r"] == ["132x40"]
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "\ufffd" not in output  # split multibyte characters survived
    assert ("€ü\n" * 15000).replace("\n", "\r\n") in output
    played = subprocess.run(
        [str(ASCIINEMA), "cat", str(cast)], capture_output=True, timeout=60, check=True
    ).stdout
    assert played.decode() == output
    # What the client's terminal showed is exactly what was recorded.
    assert seen.getvalue() == played


def test_typed_edits_become_the_right_commands(honeypot: RunningService) -> None:
    child = _shell(honeypot.port)
    try:
        child.expect(PROMPT)
        child.send("ls -la\x7f\x7fl /tmp\r")
        child.expect(PROMPT)
        child.send("cat /etc/hostn\t")
        child.expect("hostname")
        child.send("\r")
        child.expect(PROMPT)
        child.send("echo wrong\x15echo right-one\r")
        child.expect(PROMPT)
        child.send("echo aaa bbb\x17ccc\r")
        child.expect(PROMPT)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    session = honeypot.events("session.shell")[-1]["session"]
    _closed(honeypot, session)
    commands = [e["input"] for e in honeypot.events("session.command", session=session)]
    assert commands == [
        "ls -l /tmp",
        "cat /etc/hostname",
        "echo right-one",
        "echo aaa ccc",
        "exit",
    ]


def test_binary_output_gives_a_valid_cast_and_log(honeypot: RunningService) -> None:
    proc = honeypot.ssh("head -c 4096 /dev/urandom")
    assert proc.returncode == 0 and len(proc.stdout) == 4096
    execs = [e for e in honeypot.events("session.exec") if e["input"].startswith("head -c 4096")]
    cast = Path(execs[-1]["recording"])
    _closed(honeypot, execs[-1]["session"])
    raw = cast.read_bytes()
    assert raw.isascii()
    lines = _cast_lines(cast)
    assert lines[0]["version"] == 2
    assert all(e[1] == "o" for e in lines[1:])
    assert "".join(e[2] for e in lines[1:])
    log = honeypot.config.storage.data_dir / "log" / "events.jsonl"
    for line in log.read_bytes().splitlines():
        json.loads(line)


def test_analyst_cli_shows_what_the_session_did(honeypot: RunningService, tmp_path: Path) -> None:
    payload = b"#!/bin/sh\necho dropped-by-attacker\n"
    proc = honeypot.ssh(
        "cat > /root/dropper.sh; chmod +x /root/dropper.sh; echo ran-cli-marker",
        stdin=payload,
        user="oracle",
        password="hunter2-cli",
    )
    assert proc.returncode != 0 or b"ran-cli-marker" in proc.stdout
    proc = honeypot.ssh(
        "mkdir -p /tmp/.x; cat > /tmp/.x/dropper.sh; echo ran-cli-marker",
        stdin=payload,
        user="oracle",
        password="hunter2-cli",
    )
    assert b"ran-cli-marker" in proc.stdout
    execs = [e for e in honeypot.events("session.exec") if "/tmp/.x" in e["input"]]
    session = execs[-1]["session"]
    _closed(honeypot, session)
    cfg = str(_config_file(honeypot, tmp_path / "cfg.yaml"))

    def listed() -> list[dict[str, Any]]:
        out = _cli("sessions", "list", "-c", cfg, "--json", "--user", "oracle").stdout
        rows = [json.loads(line) for line in out.splitlines()]
        return [r for r in rows if r["session"] == session and r["ended"]]

    row = _wait_for(listed)[0]
    assert row["password"] == "hunter2-cli" and row["src_ip"] == "127.0.0.1"
    table = _cli("sessions", "list", "-c", cfg, "--since", "1h").stdout
    assert session in table
    shown = _cli("sessions", "show", session[:8], "-c", cfg).stdout
    assert "/tmp/.x/dropper.sh" in shown and "hunter2-cli" in shown
    stats = _cli("stats", "-c", cfg, "--json").stdout
    top = json.loads(stats)
    assert ["oracle", 2] in top["usernames"] or any(u[0] == "oracle" for u in top["usernames"])
    assert any(p[0] == "hunter2-cli" for p in top["passwords"])
    assert any("/tmp/.x/dropper.sh" in c[0] for c in top["commands"])
    assert "top usernames" in _cli("stats", "-c", cfg, "--since", "1h").stdout
    bundle = tmp_path / "bundle.tar.gz"
    _cli("export", session, "-o", str(bundle), "-c", cfg)
    with tarfile.open(bundle) as archive:
        members = {
            m.name.split("/", 1)[1]: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
        }
    manifest = json.loads(members.pop("manifest.json"))
    assert set(manifest["members"]) == set(members)
    for name, info in manifest["members"].items():
        assert hashlib.sha256(members[name]).hexdigest() == info["sha256"]
    digest = hashlib.sha256(payload).hexdigest()
    files = json.loads(members["files.json"])
    assert {"path": "/tmp/.x/dropper.sh", "sha256": digest} in [
        {"path": f["path"], "sha256": f["sha256"]} for f in files
    ]
    assert members[f"files/{digest}"] == payload
    assert all(name.startswith(("files/", "recordings/")) or "/" not in name for name in members)
    assert any(name.startswith("recordings/") for name in members)
    events = [json.loads(line) for line in members["events.jsonl"].splitlines()]
    assert {e["session"] for e in events} == {session}
    diff = json.loads(members["diff.json"])
    assert any(c["path"] == "/tmp/.x/dropper.sh" for c in diff["container_diff"])
    replayed = _cli("replay", session, "-c", cfg, "--speed", "50", timeout=30).stdout
    assert "ran-cli-marker" in replayed


def _dump(db_path: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(db_path)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
            for table in ("sessions", "auth_attempts", "channels", "commands", "diffs", "artifacts")
        }
    finally:
        db.close()


def test_index_rebuild_gives_the_same_rows(tmp_path: Path) -> None:
    config = service_config(tmp_path / "var", storage={"log_max_bytes": 8192, "log_backups": 50})
    running = RunningService(config).start()
    try:
        running.call(running.service.pool.wait_warm)
        running.ssh("id", password="wrong", extra=["-o", "NumberOfPasswordPrompts=1"])
        running.ssh("echo one > /tmp/f1; id", user="oracle", password="x")
        running.ssh("echo two > /tmp/f2; id")
        running.ssh(None, stdin=b"uname -a\necho piped > /tmp/f3\n", extra=["-T"])
        log_path = config.storage.data_dir / "log" / "events.jsonl"

        def closed() -> bool:
            records = read_records(log_path)
            return sum(r["eventid"] == "session.closed" for r in records) >= 3

        _wait_for(closed)
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)
    log_dir = config.storage.data_dir / "log"
    assert len(list(log_dir.glob("events.jsonl.*"))) >= 2  # rotation happened
    db_path = config.storage.data_dir / "sandtrap.db"
    live = _dump(db_path)
    assert live["sessions"] and live["commands"] and live["diffs"]
    assert ("uname -a",) in {(c[5],) for c in live["commands"]}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"data_dir": str(config.storage.data_dir)}}))
    _cli("index", "rebuild", "-c", str(cfg))
    assert _dump(db_path) == live


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigkill_leaves_cast_and_log_readable(tmp_path: Path) -> None:
    port = _free_port()
    config = service_config(tmp_path / "var", ssh={"listen": [f"127.0.0.1:{port}"]})
    data = json.loads(config.model_dump_json())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with (tmp_path / "service.log").open("wb") as service_log:
        service = subprocess.Popen(
            [sys.executable, "-m", "sandtrap", "run", "-c", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=service_log,
        )
    child = None
    try:

        def banner() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    return sock.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False

        _wait_for(banner, timeout=120)
        child = _shell(port)
        child.expect(PROMPT)
        child.sendline("echo before-kill-marker")
        child.expect("before-kill-marker\r\n")
        child.expect(PROMPT)
        time.sleep(1.2)  # one flush interval and more
        service.send_signal(signal.SIGKILL)
        service.wait(30)
        child.expect(pexpect.EOF, timeout=30)
    finally:
        if child is not None:
            child.close()
        if service.poll() is None:
            service.kill()
            service.wait(30)
        remove_sensor_containers(config.sensor)
    log = config.storage.data_dir / "log" / "events.jsonl"
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    commands = [r["input"] for r in records if r["eventid"] == "session.command"]
    assert "echo before-kill-marker" in commands
    shell = next(r for r in records if r["eventid"] == "session.shell")
    cast = read_cast(Path(shell["recording"]))
    output = "".join(text for _, code, text in cast.events if code == "o")
    assert "before-kill-marker\r\n" in output
    typed = "".join(text for _, code, text in cast.events if code == "i")
    assert "echo before-kill-marker" in typed
    for line in Path(shell["recording"]).read_bytes().splitlines():
        json.loads(line)
