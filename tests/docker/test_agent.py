"""The in-sandbox agent (issue 15) through the whole service, a real engine and OpenSSH clients.

The process tree a login sees, exec channels' status and stderr, piped input, the agent killed
mid-session (fallback to docker exec) and a hostile agent (bounded; the service carries on).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from tests.conftest import IMAGE
from tests.docker.service import (
    SSH_OPTS,
    RunningService,
    remove_sensor_containers,
    runsc_registered,
    service_config,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

LISTENER = "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
PROMPT = re.compile(rb"[#$] ")


def _service(tmp: Path, image: str = IMAGE, **sandbox: object) -> RunningService:
    config = service_config(
        tmp, pool={"size": 1}, sandbox={"agent": True, "image": image, **sandbox}
    )
    running = RunningService(config).start()
    running.call(running.service.pool.wait_warm)
    return running


@pytest.fixture(scope="module")
def honeypot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    running = _service(tmp_path_factory.mktemp("var"))
    yield running
    running.stop()
    remove_sensor_containers(running.config.sensor)


def _tree(text: str) -> dict[int, tuple[int, str]]:
    """`ps -o pid=,ppid=,args=` output as pid -> (ppid, args)."""
    tree = {}
    for line in text.replace("\r\n", "\n").splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            tree[int(parts[0])] = (int(parts[1]), parts[2].rstrip())
    return tree


def _ancestry(tree: dict[int, tuple[int, str]], pid: int) -> list[str]:
    """The args of `pid`'s parent, its parent's, and so on."""
    names = []
    pid = tree[pid][0]
    while pid in tree:
        names.append(tree[pid][1])
        pid = tree[pid][0]
    return names


def _wait_events(service: RunningService, eventid: str, count: int) -> list[dict[str, object]]:
    """The service writes session.closed once it has finished the connection, after the client."""
    for _ in range(100):
        found = service.events(eventid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} {eventid} events")


def test_a_pty_login_sits_below_sshd_as_on_debian(honeypot: RunningService) -> None:
    argv = ["-p", "123456", "ssh", "-tt", "-p", str(honeypot.port), *SSH_OPTS, "root@127.0.0.1"]
    child = pexpect.spawn("sshpass", argv, timeout=30, dimensions=(30, 100))
    try:
        child.expect(PROMPT)
        child.sendline("echo SELF=$$; ps -e -o pid=,ppid=,args=; tty; echo TREE-$((40+2))")
        child.expect("TREE-42\r\n")
        out = child.before.decode("utf-8", "replace")
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert "SELF=" in out, out
    assert "SELF=" in out, out
    shell = int(re.search(r"SELF=(\d+)\r\n", out).group(1))  # type: ignore[union-attr]
    tree = _tree(out)
    line = re.search(r"/dev/(pts/\d+)", out).group(1)  # type: ignore[union-attr]
    assert tree[shell][1] == "-bash"
    assert _ancestry(tree, shell)[:2] == [f"sshd: root@{line}", LISTENER], out
    listener = tree[tree[shell][0]][0]
    assert tree[listener][0] == 0  # the pool's exec (docs/fingerprinting.md)
    closed = _wait_events(honeypot, "session.closed", 1)[-1]
    assert closed["exit_status"] == 4
    assert not [e for e in honeypot.events("sandbox.error") if e.get("operation") == "agent"]


def test_a_users_login_has_a_priv_parent(honeypot: RunningService) -> None:
    done = honeypot.ssh(
        "echo SELF=$$; ps -e -o pid=,ppid=,args=; id -un; tty",
        user="oracle",
        password="anything",
        extra=["-tt"],
    )
    out = done.stdout.decode()
    assert done.returncode == 0, (done.stdout, done.stderr)
    shell = int(re.search(r"SELF=(\d+)", out).group(1))  # type: ignore[union-attr]
    line = re.search(r"/dev/(pts/\d+)", out).group(1)  # type: ignore[union-attr]
    assert _ancestry(_tree(out), shell)[:3] == [
        f"sshd: oracle@{line}",
        "sshd: oracle [priv]",
        LISTENER,
    ], out
    assert "\noracle\r\n" in out


@pytest.mark.parametrize("user", ["root", "oracle"])
def test_an_exec_channel_keeps_status_stderr_and_stdin(honeypot: RunningService, user: str) -> None:
    done = honeypot.ssh(
        "echo SELF=$$; ps -e -o pid=,ppid=,args=; tty; cat; echo to-err >&2; exit 7",
        stdin=b"piped-input\n",
        user=user,
        password="123456" if user == "root" else "any",
        timeout=30,
    )
    out = done.stdout.decode()
    assert done.returncode == 7, done.stderr
    assert done.stderr.endswith(b"to-err\n"), done.stderr
    assert "not a tty\npiped-input\n" in out
    shell = int(re.search(r"SELF=(\d+)", out).group(1))  # type: ignore[union-attr]
    parents = (
        ["sshd: root@notty"] if user == "root" else ["sshd: oracle@notty", "sshd: oracle [priv]"]
    )
    assert _ancestry(_tree(out), shell)[: len(parents) + 1] == [*parents, LISTENER], out


def test_piped_input_to_a_pty_runs_every_command(honeypot: RunningService) -> None:
    script = b"".join(b"echo step-%d-done\n" % n for n in range(8)) + b"exit 0\n"
    done = honeypot.ssh(None, stdin=script, extra=["-tt"])
    assert done.returncode == 0, (done.stdout, done.stderr)
    for n in range(8):
        assert b"step-%d-done\r\n" % n in done.stdout


def _ctl(port: int, sock: Path, command: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["ssh", "-S", str(sock), "-p", str(port), *SSH_OPTS, "root@127.0.0.1", command]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False)


def test_a_killed_agent_ends_its_channels_and_the_session_falls_back(
    honeypot: RunningService, tmp_path: Path
) -> None:
    sock = tmp_path / "ctl"
    master = subprocess.Popen(  # one SSH connection (one session, one sandbox), many channels
        ["sshpass", "-p", "123456", "ssh", "-M", "-N", "-S", str(sock), "-p", str(honeypot.port),
         *SSH_OPTS, "root@127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        first = _ctl(honeypot.port, sock, "ps -o ppid= -p $$")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() != b"0"  # a child of the agent
        # The listener is the parent of this shell's `sshd: root@notty`.
        killed = _ctl(honeypot.port, sock, "kill -9 $(ps -o ppid= -p $PPID); sleep 1")
        assert killed.returncode == 255, killed  # no exit status: it ended with the agent
        after = _ctl(
            honeypot.port,
            sock,
            "echo fallback-ok; ps -o ppid= -p $$; ps -eo args= | grep -c '^sshd: /usr/sbin/sshd'",
        )
        assert after.stdout.split() == [b"fallback-ok", b"0", b"0"], after  # docker exec again
        assert master.poll() is None  # the connection lived through it
    finally:
        _ctl(honeypot.port, sock, "true")
        subprocess.run(
            ["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True, check=False
        )
        master.wait(timeout=30)
    failures = [e for e in honeypot.events("sandbox.error") if e.get("operation") == "agent"]
    assert [e["error"] for e in failures] == ["the agent's stream ended"]
    execs = honeypot.events("session.exec")
    assert any("kill -9" in e["input"] for e in execs)  # recorded at the front
    casts = [Path(e["recording"]) for e in execs if e.get("recording")]
    assert casts and all(cast.exists() for cast in casts)


# A replaced agent: greets as the real one would, takes a request, names a terminal, then floods
# garbage (octal escapes: dash's printf).
HOSTILE = r"""#!/bin/sh
printf '\000\000\000\025A\000\000\000\000sandtrap-agent 1'
head -c 9 >/dev/null
head -c 20 >/dev/null
printf '\000\000\000\016B\000\000\000\001\000\000\000\001pts/0'
exec cat /dev/urandom
"""


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = f"sandtrap/test-hostile-agent:{uuid.uuid4().hex[:8]}"
    context = tmp_path_factory.mktemp("hostile")
    (context / "sshd").write_text(HOSTILE)
    (context / "Dockerfile").write_text(
        f"FROM {IMAGE}\nCOPY sshd /usr/sbin/sshd\nRUN chmod 0755 /usr/sbin/sshd\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)], check=True, capture_output=True
    )
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_a_hostile_agent_is_bounded_and_the_service_carries_on(
    hostile_image: str, tmp_path: Path
) -> None:
    running = _service(tmp_path, hostile_image)
    try:
        started = time.monotonic()
        done = running.ssh("echo never", timeout=60)
        assert time.monotonic() - started < 30
        assert done.returncode == 255 or b"never" in done.stdout, done
        failures = [e for e in running.events("sandbox.error") if e.get("operation") == "agent"]
        assert failures and "protocol violation" in failures[0]["error"]
        _wait_events(running, "session.closed", 1)
        # The service still answers: the next login gets in (and meets the next hostile agent).
        again = running.ssh("echo again", timeout=60)
        assert again.returncode == 255 or b"again" in again.stdout, again
        assert len(running.events("auth.success")) == 2
        _wait_events(running, "session.closed", 2)
    finally:
        running.stop()
        remove_sensor_containers(running.config.sensor)


def test_under_gvisor_channels_are_the_agents_children_too(tmp_path: Path) -> None:
    if not runsc_registered():
        pytest.skip("runtime runsc is not registered (scripts/ensure-docker --runsc)")
    running = _service(tmp_path, runtime="runsc", memory_mb=128)
    try:
        done = running.ssh("echo SELF=$$; ps -e -o pid=,ppid=,args=; cat; exit 5", stdin=b"in\n")
        out = done.stdout.decode()
        assert done.returncode == 5, (done.stdout, done.stderr)
        shell = int(re.search(r"SELF=(\d+)", out).group(1))  # type: ignore[union-attr]
        assert _ancestry(_tree(out), shell)[:2] == ["sshd: root@notty", LISTENER], out
        assert out.endswith("in\n")
        pty = running.ssh("ps -o args= -p $PPID; tty", extra=["-tt"])
        assert re.match(rb"sshd: root@pts/\d+\r\n/dev/pts/\d+\r\n$", pty.stdout), pty
    finally:
        running.stop()
        remove_sensor_containers(running.config.sensor)


def test_verify_realism_passes_the_sshd_rows_with_the_agent(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"sandbox:\n  image: {IMAGE}\n  network: none\n  agent: true\n")
    done = CliRunner().invoke(cli, ["verify-realism", "--json", "--config", str(config)])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    rows = {row["check"]: row for row in map(json.loads, lines)}
    assert done.exit_code == 0, [r for r in rows.values() if r["status"] == "FAIL"]
    for check in ("sshd listener and session processes", "login shell's parent"):
        assert rows[check]["status"] == "PASS", rows[check]
    assert rows["sshd listener's parent"]["status"] == "WARN"  # PPID 0, docs/fingerprinting.md
