"""asyncssh session-channel glue: our terms (ChannelIO, ChannelRequest) over asyncssh's streams.

Owns the channel and stream-session subclasses that refuse X11 and agent forwarding and subsystems
other than sftp as Debian's sshd with `X11Forwarding no` / `AllowAgentForwarding no` does (a
channel failure reply), and `AsyncsshChannelIO`. What runs on the channel is left to session.py.
The asyncssh private names they override or read are listed in ssh/compat.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.packet import SSHPacket
from asyncssh.stream import SSHServerStreamSession

from sandtrap.proxy import READ_SIZE, ChannelGone, Resize
from sandtrap.sandbox.base import STDERR
from sandtrap.session import ChannelRequest

log = logging.getLogger(__name__)

# Called with (request name, detail) when a channel request is refused.
RefusalHook = Callable[[str, str | None], None]

ChannelHandler = Callable[
    [asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes], asyncssh.SSHWriter[bytes]],
    Awaitable[None],
]

_GONE = (BrokenPipeError, ConnectionError, asyncssh.Error)


class RefusingServerChannel(asyncssh.SSHServerChannel[bytes]):
    """A session channel that refuses X11 and agent forwarding, reporting each refusal."""

    def __init__(self, *args: Any, on_refused: RefusalHook) -> None:
        super().__init__(*args)
        self._on_refused = on_refused

    def _process_x11_req_request(self, packet: SSHPacket) -> bool:
        single = packet.get_boolean()
        auth_proto = packet.get_string().decode("ascii", "replace")
        packet.get_string()  # the cookie: not recorded
        screen = packet.get_uint32()
        packet.check_end()
        self._on_refused("x11", f"proto={auth_proto} screen={screen} single={single}")
        return False

    def _process_auth_agent_req_at_openssh_dot_com_request(  # type: ignore[override]
        self, packet: SSHPacket
    ) -> bool:
        # asyncssh answers later from a task; we answer at once (the base returns None for that).
        packet.check_end()
        self._on_refused("agent", None)
        return False


class SftpOnlyStreamSession(SSHServerStreamSession[bytes]):
    """A stream session whose only subsystem is sftp (sshd_config `Subsystem sftp ...`)."""

    def __init__(self, handler: ChannelHandler, on_refused: RefusalHook) -> None:
        super().__init__(handler)
        self._handler = handler
        self._on_refused = on_refused

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == "sftp":
            return True
        self._on_refused("subsystem", subsystem)
        return False

    def session_started(self) -> None:
        # The base class serves `sftp` with asyncssh's own SFTP server; ours runs the sandbox's
        # sftp-server like every other request, so always hand the streams to our handler.
        chan = self._chan
        conn = self._conn
        if chan is None or conn is None:
            return
        stdin = asyncssh.SSHReader[bytes](self, chan)
        stdout = asyncssh.SSHWriter[bytes](self, chan)
        stderr = asyncssh.SSHWriter[bytes](self, chan, EXTENDED_DATA_STDERR)
        conn.create_task(self._handler(stdin, stdout, stderr), stdin.logger)


def create_session(
    conn: asyncssh.SSHServerConnection,
    handler: ChannelHandler,
    on_refused: RefusalHook,
) -> tuple[RefusingServerChannel, SftpOnlyStreamSession]:
    """The (channel, session) pair `SSHServer.session_requested` returns for one session channel."""
    # The same arguments asyncssh's create_server_channel() passes, with raw bytes (encoding None).
    chan = RefusingServerChannel(
        conn,
        conn._loop,
        conn._allow_pty,
        conn._line_editor,
        conn._line_echo,
        conn._line_history,
        conn._max_line_length,
        None,
        "strict",
        conn._window,
        conn._max_pktsize,
        on_refused=on_refused,
    )
    return chan, SftpOnlyStreamSession(handler, on_refused)


def channel_request(
    stdin: asyncssh.SSHReader[bytes], username: str, number: int
) -> tuple[ChannelRequest, asyncssh.SSHServerChannel[bytes]]:
    """Describe what the client asked of this channel, in our terms."""
    chan = stdin.channel
    if not isinstance(chan, asyncssh.SSHServerChannel):
        raise TypeError("not a server channel")
    command = chan.get_command()
    subsystem = chan.get_subsystem()
    term = chan.get_terminal_type()
    width, height, _, _ = chan.get_terminal_size()
    env = {_text(key): _text(value) for key, value in chan.get_environment_bytes().items()}
    kind: Literal["shell", "exec", "subsystem"] = (
        "subsystem" if subsystem else "exec" if command is not None else "shell"
    )
    request = ChannelRequest(
        channel=number,
        kind=kind,
        username=username,
        command=command,
        subsystem=subsystem,
        term=term,
        size=(width, height) if term is not None else None,
        env=env,
    )
    return request, chan


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class AsyncsshChannelIO:
    """`proxy.ChannelIO` over an asyncssh stream session (raw bytes, flow-controlled both ways)."""

    def __init__(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
        chan: asyncssh.SSHServerChannel[bytes],
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._chan = chan

    async def read(self) -> bytes | Resize:
        while True:
            try:
                return await self._stdin.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as change:
                return Resize(change.width, change.height)
            except (asyncssh.BreakReceived, asyncssh.SignalReceived) as exc:
                # sshd passes neither to a process it started without privilege separation
                # tricks; ignoring them matches what an attacker sees.
                log.debug("ignored %r on channel", exc)
            except _GONE as exc:
                raise ChannelGone(str(exc)) from exc

    async def write(self, data: bytes, stream: int) -> None:
        writer = self._stderr if stream == STDERR else self._stdout
        try:
            writer.write(data)
            await writer.drain()
        except _GONE as exc:
            raise ChannelGone(str(exc)) from exc

    async def finish(self, exit_status: int | None) -> None:
        try:
            if exit_status is None:
                self._chan.close()
            else:
                # exit-status, then EOF and close once buffered output is sent (RFC 4254 6.10).
                self._chan.exit(exit_status & 0xFF)
        except _GONE:
            log.debug("channel already gone at finish")


__all__ = [
    "AsyncsshChannelIO",
    "RefusingServerChannel",
    "SftpOnlyStreamSession",
    "channel_request",
    "create_session",
]
