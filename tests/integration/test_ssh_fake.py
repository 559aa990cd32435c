"""The SSH front on 127.0.0.1:0 with the pool on the fake engine, driven by asyncssh and OpenSSH
clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sandtrap import events as ev
from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable
from sandtrap.persona import DEBIAN12
from sandtrap.sandbox.fake import FakeEngine
from sandtrap.ssh import SSHFront, start_ssh_server
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from sandtrap.testing import OPENSSH_CLIENT_OPTIONS
from tests.fakepool import RecordingPool, running_pool

SSH_OPTS = OPENSSH_CLIENT_OPTIONS


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.changed = asyncio.Event()

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type[ev.Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type[ev.Event], count: int = 1) -> list[Any]:
        async with asyncio.timeout(5):
            while len(self.of(kind)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.of(kind)


class Harness:
    def __init__(self, front: SSHFront, sink: Sink, provider: RecordingPool) -> None:
        self.front = front
        self.sink = sink
        self.provider = provider
        self.port = front.ports[0]

    async def connect(self, **kwargs: Any) -> asyncssh.SSHClientConnection:
        options: dict[str, Any] = {
            "username": "root",
            "password": "123456",
            "known_hosts": None,
            "client_keys": None,
            "agent_path": None,
        }
        options.update(kwargs)
        return await asyncssh.connect("127.0.0.1", self.port, **options)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture(scope="session")
def host_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("hostkeys")
    load_or_create_host_keys(keys)
    return keys


@pytest.fixture
async def start(tmp_path: Path, host_keys_dir: Path) -> AsyncIterator[Start]:
    fronts: list[SSHFront] = []
    shutil.copytree(host_keys_dir, tmp_path / "keys")
    pools = contextlib.AsyncExitStack()

    async def _start(
        engine: FakeEngine | None = None, *, warm: bool = True, **sections: Any
    ) -> Harness:
        """A front on a pool of `engine` (a working FakeEngine by default)."""
        data: dict[str, Any] = {
            "ssh": {"listen": ["127.0.0.1:0"], "auth_failure_delay_seconds": 0.05},
            # Refusal reports every 0.1 s, so tests see them without waiting a minute.
            "limits": {"refusal_report_interval_seconds": 0.1},
            "storage": {"data_dir": str(tmp_path)},
            "pool": {"allocate_timeout_seconds": 2},
        }
        for key, value in sections.items():
            data.setdefault(key, {}).update(value)
        sink = Sink()
        config = Config.model_validate(data)
        provider = await pools.enter_async_context(running_pool(config, sink, engine, warm=warm))
        front = await start_ssh_server(config, provider, sink)
        fronts.append(front)
        return Harness(front, sink, provider)

    async with pools:
        yield _start
        for front in fronts:
            await front.wait_closed()
            assert front.connection_count() == 0


PASSWORD = "123456"


def openssh(
    port: int,
    command: list[str],
    password: str | None = None,
    user: str = "root",
    stdin: bytes = b"",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    argv = [
        "sshpass",
        "-p",
        password or PASSWORD,
        "ssh",
        "-p",
        str(port),
        *SSH_OPTS,
        *(extra or []),
        f"{user}@127.0.0.1",
        *command,
    ]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=20, check=False, env=env)


async def run_openssh(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(openssh, *args, **kwargs)


# --- exec, shell, subsystem ----------------------------------------------------------------------


async def test_openssh_exec_keeps_streams_apart_and_exit_status(start: Start) -> None:
    h = await start()
    result = await run_openssh(
        h.port, ["echo out; echo err >&2; cat; exit 3"], stdin=b"piped \x00\xff bytes\n"
    )
    assert result.returncode == 3
    assert result.stdout == b"out\npiped \x00\xff bytes\n"
    assert result.stderr == b"err\n"
    await h.sink.wait_for(ev.SessionClosed)
    (exec_event,) = h.sink.of(ev.SessionExec)
    assert exec_event.input == "echo out; echo err >&2; cat; exit 3"
    assert not exec_event.pty
    (closed,) = h.sink.of(ev.ChannelClosed)
    assert closed.exit_status == 3
    (kex,) = h.sink.of(ev.ClientKex)
    assert kex.client_version.startswith("SSH-2.0-OpenSSH_")
    assert re.fullmatch(r"[0-9a-f]{32}", kex.hassh)
    # Every event carries the same connection identity.
    sessions = {ev.to_record(event, "s")["session"] for event in h.sink.events}
    assert len(sessions) == 1
    assert re.fullmatch(r"[0-9a-f]{12}", sessions.pop() or "")
    assert {ev.to_record(event, "s")["dst_port"] for event in h.sink.events} == {h.port}
    sandbox = h.provider.allocated[0][0]
    assert sandbox.execs[0].argv == ("/bin/bash", "-c", "echo out; echo err >&2; cat; exit 3")
    assert sandbox.execs[0].tty is False
    assert sandbox.execs[0].stdin_closed
    assert len(h.provider.released) == 1


async def test_asyncssh_exec_and_two_channels_share_one_sandbox(start: Start) -> None:
    h = await start()
    async with await h.connect() as conn:
        first = await conn.run("whoami; pwd", check=False)
        second = await conn.run("echo e >&2; exit 4", check=False)
    assert first.stdout == "root\n/root\n"
    assert first.exit_status == 0
    assert second.stderr == "e\n"
    assert second.exit_status == 4
    await h.sink.wait_for(ev.SessionClosed)
    assert len(h.provider.allocated) == 1
    assert len(h.provider.released) == 1
    assert [e.channel for e in h.sink.of(ev.SessionExec)] == [0, 1]


async def test_shell_with_pty_resize_and_exit_status(start: Start) -> None:
    h = await start()
    async with await h.connect() as conn:
        process = await conn.create_process(term_type="xterm-256color", term_size=(80, 24))
        await process.stdout.readuntil("# ")
        process.stdin.write("whoami\r")
        assert "root" in await process.stdout.readuntil("# ")
        process.change_terminal_size(120, 40)
        process.stdin.write("stty size\r")
        assert "40 120" in await process.stdout.readuntil("# ")
        process.stdin.write("printenv TERM\r")
        assert "xterm-256color" in await process.stdout.readuntil("# ")
        process.stdin.write("exit 5\r")
        await process.wait_closed()
        assert process.exit_status == 5
    await h.sink.wait_for(ev.SessionClosed)
    (shell,) = h.sink.of(ev.SessionShell)
    assert (shell.term, shell.width, shell.height) == ("xterm-256color", 80, 24)
    (resize,) = h.sink.of(ev.SessionResize)
    assert (resize.width, resize.height) == (120, 40)
    record = h.provider.allocated[0][0].execs[0]
    assert record.argv == DEBIAN12.login_shell
    assert record.tty
    assert record.workdir == "/root"
    assert record.resizes == [(120, 40)]


async def test_sftp_subsystem_runs_sftp_server_and_others_are_refused(start: Start) -> None:
    h = await start()
    async with await h.connect() as conn:
        process = await conn.create_process(subsystem="sftp", encoding=None)
        process.stdin.write_eof()
        await process.wait_closed()
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem="netconf")
    await h.sink.wait_for(ev.SessionClosed)
    assert h.provider.allocated[0][0].execs[0].argv == ("/usr/lib/openssh/sftp-server",)
    assert [e.name for e in h.sink.of(ev.SessionSubsystem)] == ["sftp"]
    (refused,) = h.sink.of(ev.RequestRefused)
    assert (refused.request, refused.detail) == ("subsystem", "netconf")


# --- authentication ------------------------------------------------------------------------------


async def test_wrong_password_then_right_with_delay(start: Start) -> None:
    h = await start(ssh={"auth_failure_delay_seconds": 0.4})
    began = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        await h.connect(password="wrong")
    assert time.monotonic() - began >= 0.4
    began = time.monotonic()
    async with await h.connect() as conn:
        assert time.monotonic() - began < 0.4
        assert (await conn.run("echo ok")).stdout == "ok\n"
    failed = h.sink.of(ev.AuthFailed)
    assert [(e.username, e.password, e.method) for e in failed] == [("root", "wrong", "password")]
    (success,) = h.sink.of(ev.AuthSuccess)
    assert (success.password, success.reason) == ("123456", "credentials")


async def test_openssh_wrong_password_refused(start: Start) -> None:
    h = await start()
    result = await run_openssh(
        h.port, ["true"], password="nope", extra=["-o", "NumberOfPasswordPrompts=1"]
    )
    assert result.returncode != 0
    assert h.sink.of(ev.AuthFailed)[0].password == "nope"
    assert not h.sink.of(ev.AuthSuccess)


async def test_accept_after_n_failures(start: Start) -> None:
    h = await start(auth={"accept_after_failures": 2})
    for password in ("a", "b"):
        with pytest.raises(asyncssh.PermissionDenied):
            await h.connect(password=password)
    async with await h.connect(password="c") as conn:
        assert (await conn.run("echo in")).stdout == "in\n"
    (success,) = h.sink.of(ev.AuthSuccess)
    assert (success.password, success.reason) == ("c", "accept_after_failures")


async def test_public_key_recorded_then_refused(start: Start) -> None:
    h = await start()
    key = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await h.connect(client_keys=[key], password=None)
    (failed,) = h.sink.of(ev.AuthFailed)
    assert failed.method == "publickey"
    assert failed.key_type == "ssh-ed25519"
    assert failed.key_fingerprint == key.get_fingerprint("sha256")
    assert failed.reason == "public key refused"


async def test_max_auth_tries_disconnects(start: Start) -> None:
    h = await start(ssh={"max_auth_tries": 3, "auth_failure_delay_seconds": 0})
    passwords = iter(f"bad{n}" for n in range(10))

    class Client(asyncssh.SSHClient):
        def password_auth_requested(self) -> str | None:
            return next(passwords)

    with pytest.raises(asyncssh.DisconnectError, match="Too many authentication failures"):
        await h.connect(password=None, client_factory=Client)
    await h.sink.wait_for(ev.SessionClosed)
    assert len(h.sink.of(ev.AuthFailed)) == 3


async def test_no_keyboard_interactive_offered(start: Start) -> None:
    h = await start()
    with pytest.raises(asyncssh.PermissionDenied):
        await h.connect(password=None, kbdint_auth=True, preferred_auth="keyboard-interactive")
    assert not h.sink.of(ev.AuthFailed)


# --- refusals ------------------------------------------------------------------------------------


async def test_asyncssh_forwarding_refused_with_events(start: Start) -> None:
    h = await start()
    async with await h.connect() as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as info:
            await conn.open_connection("10.9.8.7", 25)
        assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert info.value.reason == "open failed"
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 8080, "localhost", 80)
    await h.sink.wait_for(ev.SessionClosed)
    refused = [(e.kind, e.host, e.port) for e in h.sink.of(ev.ForwardRefused)]
    assert refused == [("local", "10.9.8.7", 25), ("remote", "127.0.0.1", 8080)]


async def test_openssh_w_and_r_refused(start: Start) -> None:
    h = await start()
    w = await run_openssh(h.port, [], extra=["-W", "192.0.2.1:22"])
    assert w.returncode != 0
    assert b"stdio forwarding failed" in w.stderr
    r = await run_openssh(
        h.port, ["echo", "hi"], extra=["-o", "ExitOnForwardFailure=yes", "-R", "8022:localhost:22"]
    )
    assert r.returncode != 0
    assert b"remote port forwarding failed" in r.stderr
    await h.sink.wait_for(ev.SessionClosed, 2)
    refused = [(e.kind, e.host, e.port) for e in h.sink.of(ev.ForwardRefused)]
    assert ("local", "192.0.2.1", 22) in refused
    assert ("remote", "localhost", 8022) in refused or ("remote", "", 8022) in refused


async def test_openssh_agent_and_x11_refused(start: Start, tmp_path: Path) -> None:
    h = await start()
    sock = tmp_path / "agent.sock"
    # ssh-agent -a daemonises once its socket is listening and prints its pid.
    started = await asyncio.to_thread(
        subprocess.run, ["ssh-agent", "-s", "-a", str(sock)], capture_output=True, check=True
    )
    match = re.search(rb"SSH_AGENT_PID=(\d+)", started.stdout)
    assert match is not None
    agent_pid = int(match.group(1))
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "SSH_AUTH_SOCK": str(sock),
            "DISPLAY": "localhost:77",
            "HOME": str(tmp_path),
        }
        result = await run_openssh(h.port, ["echo", "hi"], env=env, extra=["-A", "-X"])
    finally:
        os.kill(agent_pid, signal.SIGTERM)
    assert result.stdout == b"hi\n"
    await h.sink.wait_for(ev.SessionClosed)
    kinds = sorted(e.kind for e in h.sink.of(ev.ForwardRefused))
    assert kinds == ["agent", "x11"]


# --- failures and stuck clients ------------------------------------------------------------------


async def test_allocation_failure_closes_connection(start: Start) -> None:
    engine = FakeEngine()
    engine.create_error = EngineUnavailable("create: engine unreachable")
    h = await start(engine, warm=False, pool={"allocate_timeout_seconds": 0.3})
    result = await run_openssh(h.port, ["echo", "hi"])
    assert result.returncode == 255
    assert result.stdout == b""
    await h.sink.wait_for(ev.SessionClosed)
    (failed,) = h.sink.of(ev.SandboxAllocationFailed)
    assert "no sandbox" in failed.reason
    (closed,) = h.sink.of(ev.SessionClosed)
    assert closed.reason.startswith("allocation failed")
    assert not h.provider.released


async def test_client_without_banner_is_dropped_after_login_grace(start: Start) -> None:
    h = await start(ssh={"login_grace_seconds": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        banner = await reader.readline()
        assert banner == b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"
        began = time.monotonic()
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        assert time.monotonic() - began >= 0.25
    finally:
        writer.close()
        await writer.wait_closed()
    await h.sink.wait_for(ev.SessionClosed)
    async with asyncio.timeout(5):
        await h.front.wait_connections_closed()
    assert h.front.connection_count() == 0


async def test_bad_identification_gets_openssh_reply(start: Start) -> None:
    h = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        await reader.readline()
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        async with asyncio.timeout(3):
            assert await reader.read() == b"Invalid SSH identification string.\r\n"
    finally:
        writer.close()
        await writer.wait_closed()
    await h.sink.wait_for(ev.SessionClosed)


async def test_disconnect_mid_output_leaves_nothing_running(start: Start) -> None:
    h = await start()
    conn = await h.connect()
    process = await conn.create_process("yes", encoding=None)
    assert len(await process.stdout.read(100_000)) > 0
    conn.abort()
    await conn.wait_closed()
    await h.sink.wait_for(ev.SessionClosed)
    assert len(h.provider.released) == 1
    stream = h.provider.allocated[0][0].streams[0]
    assert stream.record.closed
    assert stream._task.done()
    async with asyncio.timeout(5):
        await h.front.wait_connections_closed()
    assert h.front.connection_count() == 0


async def test_listens_on_ipv4_and_ipv6(start: Start) -> None:
    h = await start(ssh={"listen": ["127.0.0.1:0", "[::1]:0"]})
    assert len(h.front.ports) == 2
    assert all(h.front.ports)
    async with await asyncssh.connect(
        "::1",
        h.front.ports[1],
        username="root",
        password="123456",
        known_hosts=None,
        client_keys=None,
        agent_path=None,
    ) as conn:
        assert (await conn.run("echo six")).stdout == "six\n"
    await h.sink.wait_for(ev.SessionClosed)
    assert h.sink.of(ev.SessionConnect)[0].peer.src_ip == "::1"


async def test_shutdown_closes_open_connections_and_releases(start: Start) -> None:
    h = await start()
    conn = await h.connect()
    process = await conn.create_process("sleep 30")
    await h.sink.wait_for(ev.SessionExec)
    await h.front.wait_closed(grace_seconds=0.05)
    await process.wait_closed()
    conn.close()
    await conn.wait_closed()
    (closed,) = h.sink.of(ev.SessionClosed)
    assert closed.reason == "shutdown"
    assert len(h.provider.released) == 1


def _kexinit_packet(kex: str) -> bytes:
    lists = [
        kex,
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha1",
        "hmac-sha1",
        "none",
        "none",
        "",
        "",
    ]
    payload = bytes([20]) + b"\x00" * 16
    payload += b"".join(struct.pack(">I", len(item)) + item.encode() for item in lists)
    payload += b"\x00" + b"\x00" * 4
    padding = 8 - (len(payload) + 5) % 8 + 8
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + b"\x00" * padding


async def test_kex_mismatch_closes_silently_but_is_fingerprinted(start: Start) -> None:
    h = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        await reader.readline()
        writer.write(b"SSH-2.0-libssh_0.9.6\r\n" + _kexinit_packet("diffie-hellman-group1-sha1"))
        async with asyncio.timeout(3):
            rest = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    # Only the server's own KEXINIT (message 20), no DISCONNECT (message 1) with our lists.
    assert rest[5] == 20
    assert b"No matching" not in rest
    (kex,) = await h.sink.wait_for(ev.ClientKex)
    assert kex.client_version == "SSH-2.0-libssh_0.9.6"
    assert kex.kex_algs == ["diffie-hellman-group1-sha1"]
    await h.sink.wait_for(ev.SessionClosed)
