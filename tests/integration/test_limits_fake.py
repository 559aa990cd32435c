"""Limits, PROXY protocol and hostile input at the SSH front, with the fake sandbox on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import asyncssh
import pytest

from sandtrap import events as ev
from sandtrap.persona import DEBIAN12
from sandtrap.ssh.proxyproto import V2_SIGNATURE
from tests.integration.test_ssh_fake import Start


async def _raw(port: int, send: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.read(4096)


# --- timeouts ------------------------------------------------------------------------------------


async def test_idle_shell_logs_out_like_bash_tmout(start: Start) -> None:
    h = await start(limits={"session_idle_timeout_seconds": 0.6})
    async with await h.connect() as conn:
        process = await conn.create_process(term_type="xterm", encoding=None)
        await process.stdout.readuntil(b"# ")
        started = time.monotonic()
        rest = await asyncio.wait_for(process.stdout.read(), 5)
        await asyncio.wait_for(process.wait_closed(), 5)
        assert time.monotonic() - started >= 0.5
    assert rest == b"\atimed out waiting for input: auto-logout\r\n"
    assert process.exit_status == 0
    (timeout,) = await h.sink.wait_for(ev.SessionTimeout)
    assert (timeout.kind, timeout.limit_seconds) == ("idle", 0.6)
    (closed,) = await h.sink.wait_for(ev.SessionClosed)
    assert closed.reason == "idle timeout"


async def test_activity_keeps_a_session_alive_until_the_absolute_limit(start: Start) -> None:
    h = await start(limits={"session_idle_timeout_seconds": 0.5, "session_max_seconds": 1.5})
    conn = await h.connect()
    process = await conn.create_process(term_type="xterm")
    await process.stdout.readuntil("# ")
    started = time.monotonic()

    async def busy() -> None:
        for _ in range(40):
            process.stdin.write("echo hi\r")
            await asyncio.wait_for(process.stdout.readuntil("# "), 2)
            await asyncio.sleep(0.2)

    with pytest.raises((asyncssh.Error, ConnectionError, asyncio.IncompleteReadError)):
        await busy()
    conn.close()
    elapsed = time.monotonic() - started
    assert 1.0 < elapsed < 3.0
    (timeout,) = await h.sink.wait_for(ev.SessionTimeout)
    assert timeout.kind == "absolute"
    (closed,) = await h.sink.wait_for(ev.SessionClosed)
    assert closed.reason == "absolute timeout"
    assert len(h.provider.released) == 1


# --- bytes ---------------------------------------------------------------------------------------


async def test_output_budget_ends_the_session(start: Start) -> None:
    h = await start(limits={"max_bytes_out": 200_000})
    async with await h.connect() as conn:
        result = await conn.run("yes", check=False)
    assert 200_000 < len(result.stdout or "") < 2_000_000
    (exceeded,) = await h.sink.wait_for(ev.SessionBytesExceeded)
    assert (exceeded.direction, exceeded.limit) == ("out", 200_000)
    assert exceeded.bytes > 200_000
    (closed,) = await h.sink.wait_for(ev.SessionClosed)
    assert closed.reason == "bytes out exceeded"


async def test_input_budget_ends_the_session(start: Start) -> None:
    h = await start(limits={"max_bytes_in": 10_000})
    async with await h.connect() as conn:
        process = await conn.create_process("cat", encoding=None)

        async def upload() -> None:
            for _ in range(100):
                process.stdin.write(b"x" * 4096)
                await asyncio.wait_for(process.stdin.drain(), 2)
                await asyncio.sleep(0.01)

        with pytest.raises((asyncssh.Error, ConnectionError)):
            await upload()
    (exceeded,) = await h.sink.wait_for(ev.SessionBytesExceeded)
    assert exceeded.direction == "in"


# --- admission -----------------------------------------------------------------------------------


async def test_logged_in_connections_per_ip_refused_like_maxstartups(start: Start) -> None:
    h = await start(limits={"max_connections_per_ip": 2})
    first, second = await h.connect(), await h.connect()
    reader, writer = await _raw(h.port)
    assert await _read_all(reader) == DEBIAN12.max_startups_text
    writer.close()
    (refused,) = await h.sink.wait_for(ev.SessionRefused)
    assert (refused.reason, refused.limit, refused.count) == ("max_connections_per_ip", 2, 1)
    assert not isinstance(refused, ev.SessionEvent)
    first.close()
    await first.wait_closed()
    await h.sink.wait_for(ev.SessionClosed)
    # A slot is free again.
    async with await h.connect() as third:
        assert (await third.run("echo ok")).stdout == "ok\n"
    second.close()


async def _hold_unauthenticated(
    port: int, source: str, limit: int
) -> tuple[list[asyncio.StreamWriter], int]:
    """Open sockets from `source` (sending nothing) until `limit` of them got a banner; returns
    them and how many were refused with `Exceeded MaxStartups` on the way."""
    held: list[asyncio.StreamWriter] = []
    refused = 0
    for _ in range(50 * limit):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        line = await asyncio.wait_for(reader.readline(), 5)
        if line.startswith(b"SSH-2.0-OpenSSH_"):
            held.append(writer)
            if len(held) == limit:
                break
        else:
            assert line + await _read_all(reader) == DEBIAN12.max_startups_text
            refused += 1
            writer.close()
    return held, refused


async def test_one_flooding_address_does_not_shut_others_out(start: Start) -> None:
    # Issue 13: MaxStartups per source address. 127.0.0.2 fills its own `full`, then sees what
    # sshd sends; 127.0.0.3 still logs in, and the flood is one aggregated event.
    h = await start(limits={"max_startups": "4:30:12"})
    held, refused = await _hold_unauthenticated(h.port, "127.0.0.2", 12)
    assert len(held) == 12
    for _ in range(5):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", h.port, local_addr=("127.0.0.2", 0)
        )
        assert await _read_all(reader) == DEBIAN12.max_startups_text  # at full: every one
        writer.close()
    async with await h.connect(local_addr=("127.0.0.3", 0)) as other:
        assert (await other.run("echo ok")).stdout == "ok\n"
    (event,) = await h.sink.wait_for(ev.SessionRefused)
    assert (event.src_ip, event.reason, event.limit) == ("127.0.0.2", "max_startups", 12)
    assert event.count == refused + 5
    assert event.first_timestamp <= event.last_timestamp
    for writer in held:
        writer.close()
    await asyncio.sleep(0.3)
    assert len(h.sink.of(ev.SessionRefused)) == 1  # one line for the whole flood


async def test_global_cap_bounds_all_sources(start: Start) -> None:
    h = await start(limits={"max_connections": 3})
    held = []
    for n in range(3):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", h.port, local_addr=(f"127.0.0.{n + 2}", 0)
        )
        assert (await reader.readline()).startswith(b"SSH-2.0-")
        held.append(writer)
    reader, writer = await _raw(h.port)
    assert await _read_all(reader) == DEBIAN12.max_startups_text
    writer.close()
    (refused,) = await h.sink.wait_for(ev.SessionRefused)
    assert (refused.reason, refused.limit, refused.src_ip) == ("max_connections", 3, "127.0.0.1")
    for w in held:
        w.close()
    await h.sink.wait_for(ev.SessionClosed, 3)
    async with await h.connect() as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"


async def test_rate_limit_is_opt_in(start: Start) -> None:
    h = await start(limits={"connections_per_ip_per_minute": 3})
    for _ in range(3):
        reader, writer = await _raw(h.port)
        assert (await reader.readline()).startswith(b"SSH-2.0-")
        writer.close()
    for _ in range(4):
        reader, writer = await _raw(h.port)
        assert await _read_all(reader) == b""  # closed before the banner, no text
        writer.close()
    (refused,) = await h.sink.wait_for(ev.SessionRefused)
    assert (refused.reason, refused.src_ip, refused.count) == ("rate_limited", "127.0.0.1", 4)


async def test_refusals_are_reported_at_shutdown(start: Start) -> None:
    h = await start(limits={"max_startups": "1", "refusal_report_interval_seconds": 3600})
    reader, held = await _raw(h.port)
    assert (await reader.readline()).startswith(b"SSH-2.0-")
    for _ in range(3):
        reader, writer = await _raw(h.port)
        assert await _read_all(reader) == DEBIAN12.max_startups_text
        writer.close()
    await asyncio.sleep(0.2)
    assert not h.sink.of(ev.SessionRefused)  # the interval has not ended
    held.close()
    await h.front.wait_closed()
    (refused,) = h.sink.of(ev.SessionRefused)
    assert (refused.reason, refused.count) == ("max_startups", 3)


# --- PROXY protocol ------------------------------------------------------------------------------


async def _proxy_start(start: Start) -> tuple[object, int]:
    h = await start(
        ssh={"proxy_protocol_listen": ["127.0.0.1:0"], "proxy_protocol_timeout_seconds": 0.5}
    )
    return h, h.front.proxy_addresses[0][1]


class _Tunnel:
    """A one-connection TCP proxy on 127.0.0.1 that prepends a PROXY header (stands for HAProxy)."""

    def __init__(self, target: int, header: bytes) -> None:
        self.target = target
        self.header = header
        self.server: asyncio.Server | None = None
        self.local_port = 0

    async def __aenter__(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            self.local_port = up_writer.get_extra_info("sockname")[1]
            up_writer.write(self.header)

            async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(
                copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True
            )

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_protocol_names_the_real_client(start: Start, version: int) -> None:
    h, port = await _proxy_start(start)
    if version == 1:
        header = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22\r\n"
    else:
        body = socket.inet_aton("203.0.113.7") + socket.inet_aton("192.0.2.1")
        body += struct.pack(">HH", 51234, 22)
        header = V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(body)) + body
    tunnel = _Tunnel(port, header)
    async with tunnel as tunnel_port:
        conn = await asyncssh.connect(
            "127.0.0.1",
            tunnel_port,
            username="root",
            password="123456",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
        )
        async with conn:
            assert (await conn.run("echo ok")).stdout == "ok\n"
    await h.sink.wait_for(ev.SessionClosed)
    (connect,) = h.sink.of(ev.SessionConnect)
    assert (connect.peer.src_ip, connect.peer.src_port) == ("203.0.113.7", 51234)
    assert (connect.proxy_ip, connect.proxy_port) == ("127.0.0.1", tunnel.local_port)
    peers = {e.peer for e in h.sink.events if isinstance(e, ev.SessionEvent)}
    assert {(p.src_ip, p.src_port) for p in peers} == {("203.0.113.7", 51234)}
    # The ordinary listener is unaffected.
    async with await h.connect() as direct:
        assert (await direct.run("echo ok")).stdout == "ok\n"


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "no PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad port in PROXY v1 header"),
        (b"PROXY TCP4 1.2", "timeout"),
        (b"", "timeout"),
    ],
)
async def test_malformed_proxy_header_is_refused(start: Start, send: bytes, reason: str) -> None:
    h, port = await _proxy_start(start)
    reader, writer = await _raw(port, send)
    assert await _read_all(reader) == b""  # no banner, no text
    writer.close()
    (refused,) = await h.sink.wait_for(ev.ProxyRefused)
    assert (refused.reason, refused.bytes_received, refused.src_ip) == (
        reason,
        len(send),
        "127.0.0.1",
    )
    assert not h.sink.of(ev.SessionConnect)


async def test_proxy_header_size_is_bounded(start: Start) -> None:
    h, port = await _proxy_start(start)
    reader, writer = await _raw(port, b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff" + b"\x00" * 8000)
    assert await _read_all(reader) == b""
    writer.close()
    (refused,) = await h.sink.wait_for(ev.ProxyRefused)
    assert refused.reason == "PROXY v2 header too long"


# --- hostile input -------------------------------------------------------------------------------


async def test_huge_credentials_are_capped(start: Start) -> None:
    # asyncssh refuses control characters in names and passwords (SASLprep, RFC 4013) and user
    # names of 1024 bytes or more (the connection is closed), so what is left to cap is size.
    h = await start()
    username = "r" + "é" * 511
    with pytest.raises(asyncssh.PermissionDenied):
        await h.connect(username=username, password="p" * 20_000)
    (failed, *_) = await h.sink.wait_for(ev.AuthFailed)
    assert failed.username == username
    assert failed.password == "p" * 4096 + "[...truncated, 20000 bytes]"


async def test_bad_term_and_env_never_reach_the_sandbox(start: Start) -> None:
    h = await start()
    async with await h.connect() as conn:
        result = await conn.run(
            "printenv TERM LANG LC_BAD LD_PRELOAD",
            term_type="xterm\x1b]0;pwned\x07",
            env={"LANG": "C.UTF-8", "LC_BAD": "a\nb", "LD_PRELOAD": "/tmp/x.so"},
            check=False,
        )
    assert result.stdout == "C.UTF-8\r\n"
    sandbox = h.provider.allocated[0][0]
    assert sandbox.execs[0].env == {"LANG": "C.UTF-8"}
    await h.sink.wait_for(ev.SessionClosed)
    refused = {(e.request, e.detail) for e in h.sink.of(ev.RequestRefused)}
    assert refused == {
        ("env", "LC_BAD"),
        ("env", "LD_PRELOAD"),
        ("pty-req", "xterm\x1b]0;pwned\x07"),
    }


async def test_huge_command_runs_but_is_stored_capped(start: Start) -> None:
    h = await start()
    command = "echo " + "A" * 100_000 + "\x00; echo hidden"
    async with await h.connect() as conn:
        result = await conn.run(command, check=False)
    assert result.stdout == "A" * 100_000 + "\n"
    await h.sink.wait_for(ev.SessionClosed)
    (event,) = h.sink.of(ev.SessionExec)
    assert len(event.input) < 64 * 1024 + 40
    assert event.input.endswith(f"[...truncated, {len(command)} bytes]")
    assert h.provider.allocated[0][0].execs[0].argv[-1] == "echo " + "A" * 100_000
