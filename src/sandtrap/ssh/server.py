"""The SSH front: listeners, and a thin asyncssh SSHServer turning hooks into policy and events.

Owns the listeners, each connection's supervisor task (which releases the sandbox and records the
close), and the refusals of every kind of forwarding. Auth decisions are auth.py's; what runs on a
channel is session.py's; wire-level persona details are ssh/connection.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED

from sandtrap import events as ev
from sandtrap.auth import AuthPolicy, ConnectionAuth
from sandtrap.config import Config, parse_listen
from sandtrap.events import EventSink, Peer
from sandtrap.limits import (
    MAX_NAME_BYTES,
    MAX_PASSWORD_BYTES,
    MAX_USERNAME_BYTES,
    Admission,
    AdmissionSettings,
    ByteBudget,
    MaxStartups,
    cap_text,
    expired,
)
from sandtrap.proxy import ChannelGone
from sandtrap.sandbox.base import STDOUT, SandboxProvider
from sandtrap.session import (
    AllocationFailed,
    ChannelRequest,
    SandboxLease,
    SessionTotals,
    run_channel,
)
from sandtrap.ssh.accept import Address, Gatekeeper
from sandtrap.ssh.channel import AsyncsshChannelIO, channel_request, create_session
from sandtrap.ssh.connection import ClientKexInit, listen
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from sandtrap.ssh.kexalgs import enable_openssh_gex, enable_sntrup761, load_moduli
from sandtrap.ssh.persona import Persona, hassh, persona_for, server_options

log = logging.getLogger(__name__)

# Named timeout `channel_drain`: how long a closed connection's channels get to unwind (close their
# process streams) before the sandbox is released anyway.
CHANNEL_DRAIN_SECONDS = 5.0
# sshd's reply text for a refused direct-tcpip open (serverloop.c: errmsg NULL -> "open failed").
FORWARD_REFUSED_TEXT = "open failed"
# Jitter on the failed-password delay: pam_unix's delay is not a constant either.
_DELAY_JITTER = 0.25
# What bash prints (to stderr, which is the PTY) when TMOUT expires at the prompt (eval.c
# alrm_catcher), with the PTY's ONLCR; then the shell exits and sshd closes the channel. The
# idle timeout ends shells this way.
AUTO_LOGOUT_TEXT = b"\atimed out waiting for input: auto-logout\r\n"
# Named timeout `logout_close`: after the channels of a timed-out session are closed, how long the
# client gets to disconnect itself (as it does when its last channel closes) before we drop it.
LOGOUT_CLOSE_SECONDS = 3.0
_random = secrets.SystemRandom()


@dataclass(eq=False)
class _Connection:
    """Everything the front knows about one connection."""

    peer: Peer
    conn: asyncssh.SSHServerConnection
    auth: ConnectionAuth
    lease: SandboxLease
    started: float = field(default_factory=time.monotonic)
    username: str | None = None
    reason: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    channels: set[asyncio.Task[Any]] = field(default_factory=set)
    next_channel: int = 0
    accepted_keys: set[tuple[str, str]] = field(default_factory=set)
    totals: SessionTotals = field(default_factory=SessionTotals)
    authenticated: bool = False
    # Set by connection_lost and by a spent byte budget: the supervisor looks again.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ios: dict[int, tuple[ChannelRequest, AsyncsshChannelIO]] = field(default_factory=dict)


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"disconnect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class SandTrapSSHServer(asyncssh.SSHServer):
    """One per connection: asyncssh hooks -> auth policy, refusals and events. No session logic."""

    def __init__(self, front: SSHFront) -> None:
        self._front = front
        self._state: _Connection | None = None

    @property
    def state(self) -> _Connection:
        if self._state is None:
            raise RuntimeError("connection not made yet")
        return self._state

    def _emit(self, event: ev.Event) -> None:
        self._front.events.emit(event)

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        # Behind a PROXY listener, peername is the client the header named (ssh/accept.py).
        src_ip, src_port = conn.get_extra_info("peername")[:2]
        dst_ip, dst_port = conn.get_extra_info("sockname")[:2]
        proxy = conn.get_extra_info("proxy_peername")
        peer = Peer(secrets.token_hex(6), src_ip, src_port, dst_port)
        front = self._front
        limits = front.config.limits
        state = self._state = _Connection(
            peer=peer,
            conn=conn,
            auth=front.policy.connection(src_ip),
            lease=SandboxLease(
                front.provider, front.events, peer, front.config.pool.allocate_timeout_seconds
            ),
        )
        state.totals.budget = ByteBudget(limits.max_bytes_in, limits.max_bytes_out)
        state.totals.on_exceeded = state.wake.set
        log.info("session %s: connection from %s:%d", peer.session_id, src_ip, src_port)
        self._emit(
            ev.SessionConnect(
                peer=peer,
                dst_ip=dst_ip,
                proxy_ip=proxy[0] if proxy else None,
                proxy_port=proxy[1] if proxy else None,
            )
        )
        front.adopt(state)

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        if state.reason is None:
            state.reason = _describe(exc)
        state.closed.set()
        state.wake.set()

    def _logged_in(self, username: str) -> None:
        state = self.state
        state.username = username
        if not state.authenticated:
            state.authenticated = True
            self._front.admission.authenticated()

    def client_kex_received(self, client_version: str, kexinit: ClientKexInit) -> None:
        digest, algorithms = hassh(
            kexinit.kex, kexinit.encryption, kexinit.mac, kexinit.compression
        )
        self._emit(
            ev.ClientKex(
                peer=self.state.peer,
                client_version=client_version,
                hassh=digest,
                hassh_algorithms=algorithms,
                kex_algs=kexinit.kex.split(","),
                enc_algs=kexinit.encryption.split(","),
                mac_algs=kexinit.mac.split(","),
                comp_algs=kexinit.compression.split(","),
            )
        )

    # --- authentication --------------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return "password" in self._front.persona.auth_methods

    def public_key_auth_supported(self) -> bool:
        return "publickey" in self._front.persona.auth_methods

    def kbdint_auth_supported(self) -> bool:
        return "keyboard-interactive" in self._front.persona.auth_methods

    async def validate_password(self, username: str, password: str) -> bool:
        state = self.state
        decision = self._front.policy.check_password(state.auth, username, password)
        # Stored capped (limits.py); the policy above saw them whole.
        logged_user = cap_text(username, MAX_USERNAME_BYTES)
        logged_password = cap_text(password, MAX_PASSWORD_BYTES)
        if decision.accepted:
            self._logged_in(username)
            log.info("session %s: password login accepted for %r", state.peer.session_id, username)
            self._emit(
                ev.AuthSuccess(
                    peer=state.peer,
                    username=logged_user,
                    method="password",
                    password=logged_password,
                    reason=decision.reason,
                )
            )
            return True
        self._emit(
            ev.AuthFailed(
                peer=state.peer,
                username=logged_user,
                method="password",
                password=logged_password,
                reason=decision.reason,
            )
        )
        delay = self._front.config.ssh.auth_failure_delay_seconds
        if delay:
            # Named delay `auth_failure`: Debian's PAM answers a bad password after ~2 s.
            await asyncio.sleep(_random.uniform(delay, delay * (1 + _DELAY_JITTER)))
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        state = self.state
        decision = self._front.policy.check_public_key(state.auth, username)
        fingerprint = key.get_fingerprint("sha256")
        event_type = ev.AuthSuccess if decision.accepted else ev.AuthFailed
        event = event_type(
            peer=state.peer,
            username=cap_text(username, MAX_USERNAME_BYTES),
            method="publickey",
            key_type=key.get_algorithm(),
            key_fingerprint=fingerprint,
            reason=decision.reason,
        )
        if not decision.accepted:
            self._emit(event)
            return False
        # asyncssh asks again when the signed request follows the query; record the success once.
        if (username, fingerprint) not in state.accepted_keys:
            state.accepted_keys.add((username, fingerprint))
            self._logged_in(username)
            self._emit(event)
        return True

    # --- refusals (AllowTcpForwarding no, AllowStreamLocalForwarding no) -------------------------

    def _refused(self, kind: str, host: str | None, port: int | None, **extra: Any) -> None:
        log.info(
            "session %s: refused %s forwarding to %r port %r",
            self.state.peer.session_id,
            kind,
            host,
            port,
        )
        host = None if host is None else cap_text(host, MAX_NAME_BYTES)
        self._emit(
            ev.ForwardRefused(peer=self.state.peer, kind=kind, host=host, port=port, **extra)
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        # direct-tcpip: ssh -L, -D and -W all arrive as this channel open.
        self._refused("local", dest_host, dest_port, origin_host=orig_host, origin_port=orig_port)
        raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, FORWARD_REFUSED_TEXT, "")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # tcpip-forward (ssh -R): a global request failure.
        self._refused("remote", listen_host, listen_port)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refused("local-unix", dest_path, None)
        raise asyncssh.ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, FORWARD_REFUSED_TEXT, "")

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused("remote-unix", listen_path, None)
        return False

    def _request_refused(self, request: str, detail: str | None) -> None:
        if request in ("x11", "agent"):
            self._refused(request, None, None)
        else:
            detail = None if detail is None else cap_text(detail, MAX_NAME_BYTES)
            self._emit(ev.RequestRefused(peer=self.state.peer, request=request, detail=detail))

    # --- sessions --------------------------------------------------------------------------------

    def session_requested(self) -> Any:
        return create_session(self.state.conn, self._run_channel, self._request_refused)

    async def _run_channel(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        """One channel's coroutine, owned by asyncssh's connection and cancelled by `_supervise`."""
        state = self.state
        task = asyncio.current_task()
        if task is not None:
            state.channels.add(task)
        number = state.next_channel
        state.next_channel += 1
        try:
            request, chan = channel_request(stdin, state.username or "root", number)
            io = AsyncsshChannelIO(stdin, stdout, stderr, chan)
            state.ios[number] = (request, io)
            await run_channel(
                request,
                io,
                state.lease,
                self._front.events,
                state.peer,
                self._front.persona.sftp_server,
                recordings=self._front.config.storage.data_dir / "recordings",
                totals=state.totals,
            )
        except AllocationFailed as exc:
            # A loaded sshd that cannot start the session drops the connection without a word;
            # the client prints "Connection to ... closed by remote host."
            log.warning("session %s: no sandbox (%s); closing", state.peer.session_id, exc)
            state.reason = f"allocation failed: {exc}"
            state.conn.abort()
        except Exception:
            log.exception("session %s: channel failed", state.peer.session_id)
            raise
        finally:
            state.ios.pop(number, None)
            if task is not None:
                state.channels.discard(task)


class SSHFront:
    """The listening SSH service. Build with `start_ssh_server`.

    Shutdown is phased: `close()` stops accepting; `wait_closed(grace_seconds)` lets connections
    finish for up to the grace, then closes the rest and waits until every connection's sandbox has
    been released and its close recorded.
    """

    def __init__(
        self,
        config: Config,
        provider: SandboxProvider,
        events: EventSink,
        persona: Persona,
        policy: AuthPolicy,
    ) -> None:
        self.config = config
        self.provider = provider
        self.events = events
        self.persona = persona
        self.policy = policy
        self._servers: list[asyncio.Server] = []
        self._supervisors: dict[asyncio.Task[None], _Connection] = {}
        self._addresses: list[tuple[str, int]] = []
        self._proxy_addresses: list[tuple[str, int]] = []
        limits = config.limits
        self.admission = Admission(
            AdmissionSettings(
                max_connections=limits.max_connections,
                max_connections_per_ip=limits.max_connections_per_ip,
                connections_per_ip_per_minute=limits.connections_per_ip_per_minute,
                max_startups=MaxStartups.parse(limits.max_startups),
                memory_max_ips=config.auth.memory_max_ips,
            ),
            clock=time.monotonic,
            draw=lambda: _random.uniform(0.0, 100.0),
        )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) actually bound, one per `ssh.listen` entry, in order."""
        return list(self._addresses)

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self._addresses]

    @property
    def proxy_addresses(self) -> list[tuple[str, int]]:
        """(host, port) bound, one per `ssh.proxy_protocol_listen` entry, in order."""
        return list(self._proxy_addresses)

    def connection_count(self) -> int:
        return len(self._supervisors)

    async def start(self, options: dict[str, Any]) -> None:
        """Listen on every `ssh.listen` and `ssh.proxy_protocol_listen` address; on failure, close
        what was opened and raise."""
        ssh = self.config.ssh
        try:
            for items, bound_list, proxy in (
                (ssh.listen, self._addresses, False),
                (ssh.proxy_protocol_listen, self._proxy_addresses, True),
            ):
                for item in items:
                    host, port = parse_listen(item)
                    server = await listen(
                        host,
                        port,
                        self.persona,
                        self._server_factory,
                        options,
                        accept=self._accepter(proxy),
                    )
                    self._servers.append(server)
                    bound = server.sockets[0].getsockname()
                    bound_list.append((host, bound[1]))
                    log.info(
                        "listening on %s port %d%s", host, bound[1], " (PROXY)" if proxy else ""
                    )
        except BaseException:
            self.close()
            raise

    def _server_factory(self) -> SandTrapSSHServer:
        return SandTrapSSHServer(self)

    def _accepter(self, proxy: bool) -> Any:
        timeout = self.config.ssh.proxy_protocol_timeout_seconds

        def accept(factory: Any) -> Gatekeeper:
            return Gatekeeper(self, factory, proxy_protocol=proxy, proxy_timeout=timeout)

        return accept

    # --- admission (ssh/accept.py AcceptHooks) ----------------------------------------------------

    def admit(self, peer: Address, local: Address) -> str | None:
        refusal = self.admission.admit(peer[0])
        if refusal is not None:
            limits = self.config.limits
            limit = {
                "rate_limited": limits.connections_per_ip_per_minute,
                "max_connections": limits.max_connections,
                "max_connections_per_ip": limits.max_connections_per_ip,
                "max_startups": MaxStartups.parse(limits.max_startups).full,
            }[refusal]
            log.info("refused connection from %s:%d: %s", peer[0], peer[1], refusal)
            self.events.emit(
                ev.SessionRefused(
                    src_ip=peer[0], src_port=peer[1], dst_port=local[1], reason=refusal, limit=limit
                )
            )
        return refusal

    def proxy_refused(self, peer: Address, local: Address, reason: str, received: int) -> None:
        self.events.emit(
            ev.ProxyRefused(
                src_ip=peer[0],
                src_port=peer[1],
                dst_port=local[1],
                reason=reason,
                bytes_received=received,
            )
        )

    def adopt(self, state: _Connection) -> None:
        """Start the supervisor of a new connection; the front owns it until it ends."""
        task = asyncio.get_running_loop().create_task(self._supervise(state))
        self._supervisors[task] = state
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._supervisors.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection supervisor failed", exc_info=task.exception())

    async def _supervise(self, state: _Connection) -> None:
        try:
            await self._watch(state)
        finally:
            await asyncio.shield(self._finish(state))

    async def _watch(self, state: _Connection) -> None:
        """Wait for the connection to end; end it first when a limit says so (limits.py decides)."""
        limits = self.config.limits
        totals = state.totals
        while not state.closed.is_set():
            budget = totals.budget
            if budget is not None and budget.exceeded is not None:
                await self._end_for_bytes(state, budget)
                return
            kind, due = expired(
                time.monotonic(),
                state.started,
                totals.last_activity,
                limits.session_idle_timeout_seconds,
                limits.session_max_seconds,
            )
            if kind is not None:
                await self._end_for_time(state, kind)
                return
            state.wake.clear()
            # Named timeouts `session_idle` and `session_max`: wake at the next deadline.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await state.wake.wait()

    async def _end_for_bytes(self, state: _Connection, budget: ByteBudget) -> None:
        direction = budget.exceeded or "in"
        limit = budget.max_in if direction == "in" else budget.max_out
        count = budget.bytes_in if direction == "in" else budget.bytes_out
        log.info("session %s: %d bytes %s; closing", state.peer.session_id, count, direction)
        self.events.emit(
            ev.SessionBytesExceeded(peer=state.peer, direction=direction, limit=limit, bytes=count)
        )
        state.reason = f"bytes {direction} exceeded"
        state.conn.abort()

    async def _end_for_time(self, state: _Connection, kind: str) -> None:
        limits = self.config.limits
        limit = (
            limits.session_idle_timeout_seconds if kind == "idle" else limits.session_max_seconds
        )
        log.info("session %s: %s timeout; closing", state.peer.session_id, kind)
        self.events.emit(ev.SessionTimeout(peer=state.peer, kind=kind, limit_seconds=limit))
        state.reason = f"{kind} timeout"
        if kind == "absolute" or not state.ios:
            # As when sshd is killed: the client sees "Connection ... closed by remote host."
            state.conn.abort()
            return
        # Idle: interactive shells log out as bash does at TMOUT; other channels close silently
        # (sshd's ChannelTimeout). The client then disconnects by itself, as at any logout.
        for request, io in list(state.ios.values()):
            with contextlib.suppress(ChannelGone, TimeoutError):
                async with asyncio.timeout(1.0):
                    if request.kind == "shell" and request.has_pty:
                        await io.write(AUTO_LOGOUT_TEXT, STDOUT)
                        await io.finish(0)
                    else:
                        await io.finish(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOGOUT_CLOSE_SECONDS):
                await state.closed.wait()

    async def _finish(self, state: _Connection) -> None:
        """After the connection: stop its channels, release its sandbox, record the close."""
        if not state.closed.is_set():
            state.reason = state.reason or "shutdown"
            state.conn.abort()
        channels = set(state.channels)
        for task in channels:
            task.cancel()
        if channels:
            _, pending = await asyncio.wait(channels, timeout=CHANNEL_DRAIN_SECONDS)
            if pending:
                log.warning(
                    "session %s: %d channels did not unwind", state.peer.session_id, len(pending)
                )
        container_id = state.lease.container_id
        self.admission.closed(state.peer.src_ip, state.authenticated)
        # The provider records the release itself (sandbox.released, diff, artifacts).
        await state.lease.release()
        self.events.emit(
            ev.SessionClosed(
                peer=state.peer,
                duration=round(time.monotonic() - state.started, 3),
                reason=state.reason or "closed",
                username=state.username,
                container_id=container_id,
                bytes_in=state.totals.bytes_in,
                bytes_out=state.totals.bytes_out,
                exit_status=state.totals.exit_status,
            )
        )
        log.info("session %s: closed (%s)", state.peer.session_id, state.reason)

    async def wait_connections_closed(self) -> None:
        """Wait until every current connection has ended and been cleaned up."""
        while self._supervisors:
            await asyncio.wait(set(self._supervisors))

    def close(self) -> None:
        """Stop accepting connections (phase 1); established connections carry on."""
        for server in self._servers:
            server.close()

    def abort_connections(self, reason: str = "shutdown") -> None:
        """Close every established connection now; their cleanup runs in their supervisors."""
        for state in list(self._supervisors.values()):
            if not state.closed.is_set():
                state.reason = state.reason or reason
                state.conn.abort()

    async def wait_closed(self, grace_seconds: float = 0.0) -> None:
        """Wait up to `grace_seconds` for connections to end, then abort the rest and wait for
        their cleanup (sandbox release, close events). Call `close()` first."""
        self.close()
        if self._supervisors and grace_seconds > 0:
            await asyncio.wait(set(self._supervisors), timeout=grace_seconds)
        self.abort_connections()
        await self.wait_connections_closed()
        for server in self._servers:
            await server.wait_closed()


async def start_ssh_server(
    config: Config,
    provider: SandboxProvider,
    events: EventSink,
    *,
    policy: AuthPolicy | None = None,
) -> SSHFront:
    """Load (or generate) host keys, then listen on every `config.ssh.listen` address.

    Raises:
        OSError: a listen address cannot be bound, or the key directory is unusable.
    """
    keys = await asyncio.to_thread(load_or_create_host_keys, config.storage.data_dir / "keys")
    if not enable_sntrup761():
        log.warning("sntrup761 kex unavailable (pqcrypto not importable), see fingerprinting.md")
    # Without a moduli file sshd (and so SandTrap) offers only its fixed fallback groups.
    enable_openssh_gex(await asyncio.to_thread(load_moduli))
    persona = persona_for(config.ssh)
    front = SSHFront(config, provider, events, persona, policy or AuthPolicy(config.auth))
    await front.start(server_options(persona, keys))
    return front


__all__ = ["SSHFront", "SandTrapSSHServer", "start_ssh_server"]
