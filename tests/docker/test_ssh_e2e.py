"""End to end: real OpenSSH and asyncssh clients against SandTrap on the real Docker engine."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pexpect
import pytest

from sandtrap.config import SSHConfig
from sandtrap.ssh.client import guess_passwords
from tests.docker.service import SSH_OPTS, RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


def _service(tmp_path_factory: pytest.TempPathFactory, sticky: bool) -> Iterator[RunningService]:
    config = service_config(tmp_path_factory.mktemp("var"), pool={"sticky": sticky})
    running = RunningService(config).start()
    running.call(running.service.pool.wait_warm)
    yield running
    running.stop()
    remove_sensor_containers(config.sensor)


@pytest.fixture(scope="module")
def honeypot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One sandbox per source address (the default), fresh for each new connection."""
    yield from _service(tmp_path_factory, sticky=False)


@pytest.fixture(scope="module")
def sticky_honeypot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """Sticky mode: a source IP keeps its sandbox across connections."""
    yield from _service(tmp_path_factory, sticky=True)


def test_exec_keeps_streams_apart_and_exit_status(honeypot: RunningService) -> None:
    proc = honeypot.ssh("echo out; echo err >&2; whoami; exit 7")
    assert proc.returncode == 7
    assert proc.stdout == b"out\nroot\n"
    assert proc.stderr == b"err\n"
    execs = [e for e in honeypot.events("session.exec") if e["input"].startswith("echo out")]
    assert execs
    assert execs[0]["pty"] is False


def test_stdin_is_streamed_intact(honeypot: RunningService) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    proc = honeypot.ssh("cat > /tmp/upload.bin; sha256sum /tmp/upload.bin", stdin=payload)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_binary_output_is_intact(honeypot: RunningService) -> None:
    proc = honeypot.ssh(
        "head -c 2000000 /dev/urandom > /tmp/r.bin; sha256sum /tmp/r.bin >&2; cat /tmp/r.bin"
    )
    assert proc.returncode == 0
    assert len(proc.stdout) == 2_000_000
    assert hashlib.sha256(proc.stdout).hexdigest() == proc.stderr.split()[0].decode()


def test_login_user_is_created_with_home(honeypot: RunningService) -> None:
    proc = honeypot.ssh(
        "id -un; echo $HOME; pwd; getent passwd oracle", user="oracle", password="x"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[:3] == ["oracle", "/home/oracle", "/home/oracle"]
    assert lines[3].endswith(":/home/oracle:/bin/bash")


def test_wrong_password_is_refused_and_recorded(honeypot: RunningService) -> None:
    proc = honeypot.ssh("true", password="wrong-pass", extra=["-o", "NumberOfPasswordPrompts=1"])
    assert proc.returncode != 0
    failed = [e for e in honeypot.events("auth.failed") if e.get("password") == "wrong-pass"]
    assert failed
    assert failed[0]["username"] == "root"


def test_interactive_shell_through_a_real_pty(honeypot: RunningService) -> None:
    argv = ["-p", "123456", "ssh", "-tt", "-p", str(honeypot.port), *SSH_OPTS, "root@127.0.0.1"]
    child = pexpect.spawn("sshpass", argv, timeout=30, dimensions=(30, 100))
    try:
        child.expect(r"root@[\w-]+:~# ")
        child.sendline("whoami; stty size")
        child.expect("root\r\n30 100\r\n")
        child.setwinsize(40, 132)
        child.sendline("stty size")
        child.expect("40 132")
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 4
    shells = honeypot.events("session.shell")
    assert any(e["width"] == 100 and e["height"] == 30 for e in shells)
    assert any(e["width"] == 132 for e in honeypot.events("session.resize"))


def test_scp_round_trip_with_sticky_sandbox(
    sticky_honeypot: RunningService, tmp_path: Path
) -> None:
    honeypot = sticky_honeypot
    data = os.urandom(5 * 1024 * 1024)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    target = tmp_path / "back.bin"
    base = ["sshpass", "-p", "123456", "scp", "-P", str(honeypot.port), *SSH_OPTS]
    up = subprocess.run(
        [*base, str(source), "root@127.0.0.1:/root/payload.bin"], timeout=60, check=False
    )
    assert up.returncode == 0
    down = subprocess.run(
        [*base, "root@127.0.0.1:/root/payload.bin", str(target)], timeout=60, check=False
    )
    assert down.returncode == 0
    assert target.read_bytes() == data
    # Classic scp protocol (-O) is an exec of the image's scp.
    legacy = tmp_path / "legacy.bin"
    down_o = subprocess.run(
        [*base, "-O", "root@127.0.0.1:/root/payload.bin", str(legacy)], timeout=60, check=False
    )
    assert down_o.returncode == 0
    assert legacy.read_bytes() == data
    assert any(e["input"].startswith("scp -f") for e in honeypot.events("session.exec"))


def test_sftp_put_get(honeypot: RunningService, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    (tmp_path / "up.bin").write_bytes(data)
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {tmp_path / 'up.bin'} /tmp/sftp.bin\nget /tmp/sftp.bin {tmp_path / 'down.bin'}\n"
    )
    proc = subprocess.run(
        [
            "sshpass",
            "-p",
            "123456",
            "sftp",
            "-P",
            str(honeypot.port),
            *SSH_OPTS,
            "root@127.0.0.1",
        ],
        # Not `-b`: batch mode turns password authentication off.
        input=batch.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "down.bin").read_bytes() == data


async def _connect(port: int, **kwargs: object) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username="root",
        password="123456",
        known_hosts=None,
        client_keys=None,
        **kwargs,
    )


def test_sticky_connections_of_one_ip_share_a_sandbox(sticky_honeypot: RunningService) -> None:
    async def scenario() -> str:
        async with await _connect(sticky_honeypot.port) as first:
            await first.run("echo from-first > /root/shared", check=True)
            async with await _connect(sticky_honeypot.port) as second:
                result = await second.run("cat /root/shared", check=True)
        return str(result.stdout)

    assert asyncio.run(scenario()) == "from-first\n"
    # Both connections closed: a third finds the file after the sandbox was stopped and restarted.
    assert sticky_honeypot.ssh("cat /root/shared").stdout == b"from-first\n"


def test_concurrent_logins_of_one_address_share_a_machine_others_get_their_own(
    honeypot: RunningService,
) -> None:
    """pool.share_per_source: two connections from one address see one machine, as on a real
    server; a connection from another address (bound to 127.0.0.2) gets a sandbox of its own."""

    async def scenario() -> tuple[str, str, str]:
        async with (
            await _connect(honeypot.port) as first,
            await _connect(honeypot.port) as second,
            await _connect(honeypot.port, local_addr=("127.0.0.2", 0)) as stranger,
        ):
            await first.run("echo shared > /root/mark", check=True)
            again = await second.run("cat /root/mark", check=True)
            other = await stranger.run("cat /root/mark 2>&1; true", check=True)
            hostnames = {
                str((await conn.run("cat /proc/sys/kernel/hostname", check=True)).stdout)
                for conn in (first, second)
            }
            return str(again.stdout), str(other.stdout), str(len(hostnames))

    same, other, hostnames = asyncio.run(scenario())
    assert same == "shared\n"
    assert "No such file" in other
    assert hostnames == "1"
    allocated = [e for e in honeypot.events("sandbox.allocated") if e["src_ip"] == "127.0.0.1"]
    assert any(e["shared"] for e in allocated)
    strangers = [e for e in honeypot.events("sandbox.allocated") if e["src_ip"] == "127.0.0.2"]
    assert strangers
    assert strangers[-1]["container_id"] not in {e["container_id"] for e in allocated}


def test_forwarding_is_refused_with_the_real_engine(honeypot: RunningService) -> None:
    proc = honeypot.ssh(
        None, extra=["-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:0:203.0.113.5:80"]
    )
    # sshd with AllowTcpForwarding no accepts -L locally but refuses each channel; -W fails at once.
    proc = honeypot.ssh(None, extra=["-W", "203.0.113.5:80"])
    assert proc.returncode != 0
    refused = honeypot.events("session.forward.refused")
    assert any(e.get("host") == "203.0.113.5" and e.get("port") == 80 for e in refused)


def test_events_tell_the_whole_story(honeypot: RunningService) -> None:
    proc = honeypot.ssh("echo story-marker")
    assert proc.returncode == 0
    execs = [e for e in honeypot.events("session.exec") if e["input"] == "echo story-marker"]
    session = execs[-1]["session"]
    ids = [e["eventid"] for e in honeypot.events(session=session)]
    for eventid in (
        "session.connect",
        "session.client.kex",
        "auth.success",
        "sandbox.allocated",
        "session.exec",
        "session.channel.closed",
    ):
        assert eventid in ids, (eventid, ids)
    kex = honeypot.events("session.client.kex", session=session)[0]
    assert kex["client_version"].startswith("SSH-2.0-OpenSSH_")
    assert len(kex["hassh"]) == 32


def test_allocation_timeout_closes_like_a_loaded_sshd(tmp_path: Path) -> None:
    config = service_config(
        tmp_path / "var", pool={"size": 1, "max_sandboxes": 1, "allocate_timeout_seconds": 1}
    )
    running = RunningService(config).start()
    try:
        running.call(running.service.pool.wait_warm)

        async def hold_and_try() -> int:
            async with await _connect(running.port) as holder:
                await holder.run("true", check=True)
                proc = await asyncio.create_subprocess_exec(
                    "sshpass",
                    "-p",
                    "123456",
                    "ssh",
                    "-p",
                    str(running.port),
                    *SSH_OPTS,
                    # Another address: a second login from the holder's own address would share
                    # the holder's sandbox (pool.share_per_source) instead of waiting for one.
                    "-b",
                    "127.0.0.2",
                    "root@127.0.0.1",
                    "echo should-not-run",
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 60)
                assert b"should-not-run" not in out
                return proc.returncode or 0

        assert asyncio.run(hold_and_try()) == 255
        assert running.events("sandbox.allocation_failed")
        # The service stays healthy: once the holder left, a new login works again.
        running.call(running.service.pool.wait_warm)
        assert running.ssh("echo back").stdout == b"back\n"
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


async def _openssh_guesses(port: int, source: str, passwords: list[str], at_once: int) -> list[int]:
    """One OpenSSH client per password (sshpass answers one prompt), `at_once` at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(password: str) -> int:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                *("sshpass", "-p", password, "ssh", "-p", str(port), "-b", source, *SSH_OPTS),
                *("-o", "NumberOfPasswordPrompts=1", "root@127.0.0.1", "true"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await asyncio.wait_for(proc.wait(), 60)

    return await asyncio.gather(*(one(p) for p in passwords))


def test_brute_force_of_96_passwords_8_at_a_time_is_recorded_whole(tmp_path: Path) -> None:
    # Issue 13: default limits and the default failed-password delay; 48 OpenSSH clients of one
    # password each, then the scripted guesser with 6 a connection, 8 at a time from 127.0.0.2.
    delay = SSHConfig.model_fields["auth_failure_delay_seconds"].default
    config = service_config(
        tmp_path / "var",
        ssh={"auth_failure_delay_seconds": delay},
        pool={"size": 1, "max_sandboxes": 2},
    )
    openssh_passwords = [f"bf-ssh-{n:02d}" for n in range(47)] + ["123456"]
    bot_passwords = [f"bf-bot-{n:02d}" for n in range(48)]
    running = RunningService(config).start()
    try:
        codes = asyncio.run(_openssh_guesses(running.port, "127.0.0.2", openssh_passwords, 8))
        assert sorted(codes).count(0) == 1  # the bait password logs in and runs `true`
        result = asyncio.run(
            guess_passwords(
                "127.0.0.1",
                running.port,
                "root",
                bot_passwords,
                concurrency=8,
                per_connection=6,
                local_addr=("127.0.0.2", 0),
                within_seconds=120,
            )
        )
        assert (sorted(result.sent), result.refused) == (bot_passwords, 0)
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)
    attempts = running.events("auth.failed") + running.events("auth.success")
    recorded = collections.Counter(e["password"] for e in attempts if e["method"] == "password")
    assert recorded == collections.Counter(openssh_passwords + bot_passwords)
    assert {e["src_ip"] for e in attempts} == {"127.0.0.2"}
    assert running.events("session.refused") == []
