"""The SSH front: listeners, admission of new connections, and each connection's supervisor.

Owns the listening sockets (plain and PROXY protocol), admission (limits.py decides), one
supervisor task per connection running its `Session` (session/), and the phased shutdown. The
per-connection asyncssh hooks are ssh/hooks.py's; auth decisions are auth.py's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandtrap import events as ev
from sandtrap.auth import AuthPolicy
from sandtrap.config import Config, parse_listen
from sandtrap.events import EventSink, Peer, rfc3339
from sandtrap.limits import Admission, AdmissionSettings, MaxStartups, RefusalLedger
from sandtrap.paths import DataLayout
from sandtrap.persona import Persona, persona_for
from sandtrap.sandbox.base import SandboxProvider
from sandtrap.session import Link, Session, SessionSettings
from sandtrap.ssh.accept import Address, Gatekeeper
from sandtrap.ssh.connection import listen
from sandtrap.ssh.hooks import SandTrapSSHServer
from sandtrap.ssh.hostbound import enable_hostbound_auth
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from sandtrap.ssh.kexalgs import enable_openssh_gex, enable_sntrup761, load_moduli
from sandtrap.ssh.persona import server_options

log = logging.getLogger(__name__)

_random = secrets.SystemRandom()


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
        self._supervisors: dict[asyncio.Task[None], Session] = {}
        self._addresses: list[tuple[str, int]] = []
        self._proxy_addresses: list[tuple[str, int]] = []
        self._session_settings = SessionSettings(
            limits=config.limits,
            allocate_timeout_seconds=config.pool.allocate_timeout_seconds,
            persona=persona,
            recordings=DataLayout(config.storage.data_dir).recordings,
        )
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
        self._refusals = RefusalLedger(limits.refusal_report_max_sources)
        self._refusal_timer: asyncio.TimerHandle | None = None
        self._final_report_done = False

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
            return Gatekeeper(
                self,
                factory,
                proxy_protocol=proxy,
                proxy_timeout=timeout,
                refusal_text=self.persona.max_startups_text,
            )

        return accept

    # --- admission (ssh/accept.py AcceptHooks) ----------------------------------------------------

    def admit(self, peer: Address, local: Address) -> str | None:
        refusal = self.admission.admit(peer[0])
        if refusal is not None:
            # Per socket only at DEBUG: a refused socket costs its sender nothing (issue 13).
            log.debug("refused connection from %s:%d: %s", peer[0], peer[1], refusal)
            self._count_refusal("session", peer, local, refusal, 0)
        return refusal

    def proxy_refused(self, peer: Address, local: Address, reason: str, received: int) -> None:
        self._count_refusal("proxy", peer, local, reason, received)

    # --- refusal reports (limits.RefusalLedger) ---------------------------------------------------

    def _count_refusal(
        self, kind: str, peer: Address, local: Address, reason: str, amount: int
    ) -> None:
        now = time.time()
        if self._refusals.record(kind, peer[0], peer[1], local[1], reason, now, amount):
            if self._final_report_done:
                # A PROXY header timing out after shutdown's report: nothing left to wait for.
                self.report_refusals()
                return
            interval = self.config.limits.refusal_report_interval_seconds
            loop = asyncio.get_running_loop()
            self._refusal_timer = loop.call_later(interval, self.report_refusals)

    def report_refusals(self) -> None:
        """Emit one event per source and reason counted since the last report (the interval's
        end, and shutdown)."""
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self._refusal_timer = None
        limits = self.config.limits
        limit_of = {
            "rate_limited": limits.connections_per_ip_per_minute or 0,
            "max_connections": limits.max_connections,
            "max_connections_per_ip": limits.max_connections_per_ip,
            "max_startups": MaxStartups.parse(limits.max_startups).full,
        }
        for tally in self._refusals.drain():
            common: dict[str, Any] = {
                "src_ip": tally.src_ip,
                "src_port": tally.src_port,
                "dst_port": tally.dst_port,
                "reason": tally.reason,
                "count": tally.count,
                "first_timestamp": rfc3339(datetime.fromtimestamp(tally.first, UTC)),
                "last_timestamp": rfc3339(datetime.fromtimestamp(tally.last, UTC)),
            }
            if tally.src_ip is None:
                log.warning(
                    "%d refusals (%s) from sources beyond limits.refusal_report_max_sources",
                    tally.count,
                    tally.reason,
                )
            if tally.kind == "session":
                event: ev.Event = ev.SessionRefused(limit=limit_of[tally.reason], **common)
            else:
                event = ev.ProxyRefused(bytes_received=tally.amount, **common)
            self.events.emit(event)

    def new_session(self, peer: Peer, link: Link, on_disconnected: Callable[[], None]) -> Session:
        """The Session of a new connection (not yet running: `adopt` starts it)."""
        return Session(
            peer,
            link,
            self.provider,
            self.events,
            self._session_settings,
            on_disconnected=on_disconnected,
        )

    def adopt(self, session: Session) -> None:
        """Run a new connection's session as its supervisor; the front owns it until it ends."""
        task = asyncio.get_running_loop().create_task(
            session.run(), name=f"session-{session.peer.session_id}"
        )
        self._supervisors[task] = session
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._supervisors.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection supervisor failed", exc_info=task.exception())

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
        for session in list(self._supervisors.values()):
            session.abort(reason)

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
        self.report_refusals()
        self._final_report_done = True


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
    keys = await asyncio.to_thread(
        load_or_create_host_keys, DataLayout(config.storage.data_dir).keys
    )
    if not enable_sntrup761():
        log.warning("sntrup761 kex unavailable (pqcrypto not importable), see fingerprinting.md")
    # Without a moduli file sshd (and so SandTrap) offers only its fixed fallback groups.
    enable_openssh_gex(await asyncio.to_thread(load_moduli))
    enable_hostbound_auth()
    persona = persona_for(config.ssh)
    front = SSHFront(config, provider, events, persona, policy or AuthPolicy(config.auth))
    await front.start(server_options(persona, keys))
    return front


__all__ = ["SSHFront", "SandTrapSSHServer", "start_ssh_server"]
