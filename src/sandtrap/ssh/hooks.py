"""The asyncssh SSHServer of one connection: hooks turned into policy calls, events and a Session.

Owns authentication hooks (decided by auth.py), the refusals of every kind of forwarding, the
client's KEXINIT fingerprint, and handing session channels to the connection's `Session`
(session/). Listeners and admission are ssh/server.py's; wire-level persona details are
ssh/connection.py's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED

from sandtrap import events as ev
from sandtrap.auth import REASON_KEY_UNSIGNED
from sandtrap.events import Peer
from sandtrap.limits import (
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PASSWORD_BYTES,
    MAX_USERNAME_BYTES,
    cap_text,
)
from sandtrap.session import Session
from sandtrap.ssh.channel import AsyncsshChannelIO, channel_request, create_session
from sandtrap.ssh.connection import ClientKexInit
from sandtrap.ssh.persona import hassh

if TYPE_CHECKING:
    from sandtrap.auth import ConnectionAuth
    from sandtrap.ssh.server import SSHFront

log = logging.getLogger(__name__)

_random = secrets.SystemRandom()


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"disconnect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class _KeyOffer:
    """An offered public key as events carry it (username capped, OpenSSH line)."""

    username: str
    key_type: str
    fingerprint: str
    key: str


class SandTrapSSHServer(asyncssh.SSHServer):
    """One per connection: asyncssh hooks -> auth policy, refusals and events. No session logic."""

    def __init__(self, front: SSHFront) -> None:
        self._front = front
        self._session: Session | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self._auth: ConnectionAuth | None = None
        # Keys the policy accepted, by (username, fingerprint): event fields and reason.
        self._pending_keys: dict[tuple[str, str], tuple[_KeyOffer, str]] = {}
        self._last_key: tuple[str, str] | None = None
        self._authenticated = False

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("connection not made yet")
        return self._session

    @property
    def peer(self) -> Peer:
        return self.session.peer

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
        self._conn = conn
        self._auth = front.policy.connection(src_ip)
        self._session = front.new_session(peer, conn, self._disconnected)
        log.info("session %s: connection from %s:%d", peer.session_id, src_ip, src_port)
        self._emit(
            ev.SessionConnect(
                peer=peer,
                dst_ip=dst_ip,
                proxy_ip=proxy[0] if proxy else None,
                proxy_port=proxy[1] if proxy else None,
            )
        )
        front.adopt(self._session)

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush_unsigned_keys()
        self.session.lost(_describe(exc))

    def _disconnected(self) -> None:
        self._front.admission.closed(self.peer.src_ip, self._authenticated)

    def _logged_in(self, username: str) -> None:
        self.session.logged_in(username)
        if not self._authenticated:
            self._authenticated = True
            self._front.admission.authenticated(self.peer.src_ip)

    def client_kex_received(self, client_version: str, kexinit: ClientKexInit) -> None:
        digest, algorithms = hassh(
            kexinit.kex, kexinit.encryption, kexinit.mac, kexinit.compression
        )
        self._emit(
            ev.ClientKex(
                peer=self.peer,
                client_version=client_version,
                hassh=digest,
                hassh_algorithms=algorithms,
                kex_algs=kexinit.kex.split(","),
                enc_algs=kexinit.encryption.split(","),
                mac_algs=kexinit.mac.split(","),
                comp_algs=kexinit.compression.split(","),
                key_algs=kexinit.host_key.split(","),
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

    def _connection_auth(self) -> ConnectionAuth:
        if self._auth is None:
            raise RuntimeError("connection not made yet")
        return self._auth

    async def validate_password(self, username: str, password: str) -> bool:
        peer = self.peer
        decision = self._front.policy.check_password(self._connection_auth(), username, password)
        # Stored capped (limits.py); the policy above saw them whole.
        event_type = ev.AuthSuccess if decision.accepted else ev.AuthFailed
        self._emit(
            event_type(
                peer=peer,
                username=cap_text(username, MAX_USERNAME_BYTES),
                method="password",
                password=cap_text(password, MAX_PASSWORD_BYTES),
                reason=decision.reason,
            )
        )
        if decision.accepted:
            self._last_key = None
            self._logged_in(username)
            log.info("session %s: password login accepted for %r", peer.session_id, username)
            return True
        delay = self._front.config.ssh.auth_failure_delay_seconds
        if delay:
            # Named delay `auth_failure`: Debian's PAM answers a bad password after ~2 s.
            jitter = self._front.persona.auth_failure_jitter
            await asyncio.sleep(_random.uniform(delay, delay * (1 + jitter)))
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        decision = self._front.policy.check_public_key(
            self._connection_auth(), username, fingerprint
        )
        offer = _KeyOffer(
            username=cap_text(username, MAX_USERNAME_BYTES),
            key_type=key.get_algorithm(),
            fingerprint=fingerprint,
            key=cap_text(key.export_public_key("openssh").decode("ascii").strip(), MAX_KEY_BYTES),
        )
        if not decision.accepted:
            self._emit(self._key_event(ev.AuthFailed, offer, decision.reason))
            return False
        # Accepted keys are reported when the outcome is known: at auth_completed (a valid
        # signature followed), or as failed when none did (a client probing which keys work).
        self._pending_keys.setdefault((username, fingerprint), (offer, decision.reason))
        self._last_key = (username, fingerprint)
        return True

    def _key_event(
        self, kind: type[ev.AuthFailed] | type[ev.AuthSuccess], offer: _KeyOffer, reason: str
    ) -> ev.Event:
        return kind(
            peer=self.peer,
            username=offer.username,
            method="publickey",
            key_type=offer.key_type,
            key_fingerprint=offer.fingerprint,
            key=offer.key,
            reason=reason,
        )

    def auth_completed(self) -> None:
        last = self._last_key
        if last is not None and not self._authenticated:
            offer, reason = self._pending_keys.pop(last)
            self._emit(self._key_event(ev.AuthSuccess, offer, reason))
            self._logged_in(last[0])
            log.info("session %s: public-key login accepted for %r", self.peer.session_id, last[0])
        self._flush_unsigned_keys()

    def _flush_unsigned_keys(self) -> None:
        for offer, _reason in self._pending_keys.values():
            self._emit(self._key_event(ev.AuthFailed, offer, REASON_KEY_UNSIGNED))
        self._pending_keys.clear()

    # --- refusals (AllowTcpForwarding no, AllowStreamLocalForwarding no) -------------------------

    def _refused(
        self,
        kind: str,
        host: str | None,
        port: int | None,
        origin_host: str | None = None,
        origin_port: int | None = None,
    ) -> None:
        log.info(
            "session %s: refused %s forwarding to %r port %r",
            self.peer.session_id,
            kind,
            host,
            port,
        )
        self._emit(
            ev.ForwardRefused(
                peer=self.peer,
                kind=kind,
                host=None if host is None else cap_text(host, MAX_NAME_BYTES),
                port=port,
                origin_host=origin_host,
                origin_port=origin_port,
            )
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        # direct-tcpip: ssh -L, -D and -W all arrive as this channel open.
        self._refused("local", dest_host, dest_port, orig_host, orig_port)
        raise asyncssh.ChannelOpenError(
            OPEN_ADMINISTRATIVELY_PROHIBITED, self._front.persona.forward_refused_text, ""
        )

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # tcpip-forward (ssh -R): a global request failure.
        self._refused("remote", listen_host, listen_port)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refused("local-unix", dest_path, None)
        raise asyncssh.ChannelOpenError(
            OPEN_ADMINISTRATIVELY_PROHIBITED, self._front.persona.forward_refused_text, ""
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused("remote-unix", listen_path, None)
        return False

    def _request_refused(self, request: str, detail: str | None) -> None:
        if request in ("x11", "agent"):
            self._refused(request, None, None)
        else:
            detail = None if detail is None else cap_text(detail, MAX_NAME_BYTES)
            self._emit(ev.RequestRefused(peer=self.peer, request=request, detail=detail))

    # --- sessions --------------------------------------------------------------------------------

    def session_requested(self) -> Any:
        if self._conn is None:
            raise RuntimeError("connection not made yet")
        return create_session(self._conn, self._run_channel, self._request_refused)

    async def _run_channel(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        """One channel: described in our terms, then served by the connection's Session."""
        session = self.session
        request, chan = channel_request(stdin, session.username or "root", session.next_channel())
        await session.serve_channel(request, AsyncsshChannelIO(stdin, stdout, stderr, chan))


__all__ = ["SandTrapSSHServer"]
