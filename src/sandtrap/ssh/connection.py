"""The asyncssh connection subclass that applies what server options cannot express of a persona.

Owns host-key order, KEXINIT pseudo-algorithms, EXT_INFO contents, OpenSSH's replies to bad
identification lines, MaxAuthTries and the client KEXINIT capture for HASSH, through asyncssh
private names; those of this module, ssh/channel.py and ssh/kexalgs.py are listed in ssh/compat.py.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncssh
from asyncssh.constants import (
    DISC_KEY_EXCHANGE_FAILED,
    DISC_PROTOCOL_ERROR,
    MSG_EXT_INFO,
    MSG_KEXINIT,
)
from asyncssh.packet import SSHPacket, String, UInt32

from sandtrap.persona import Persona

log = logging.getLogger(__name__)

# Lines OpenSSH's sshd reads while looking for the identification string (sshd.c: 8 KiB max).
_MAX_IDENT_BYTES = 8192


@dataclass(frozen=True)
class ClientKexInit:
    """The client's first KEXINIT name-lists (client-to-server directions), raw as sent."""

    kex: str
    host_key: str
    encryption: str
    mac: str
    compression: str


def parse_kexinit(payload: bytes) -> ClientKexInit:
    """Parse an SSH_MSG_KEXINIT payload (message byte first), RFC 4253 section 7.1.

    Raises:
        ValueError: not a complete KEXINIT.
    """
    if not payload or payload[0] != MSG_KEXINIT:
        raise ValueError("not a KEXINIT payload")
    offset = 17  # message byte + 16-byte cookie
    lists = []
    for _ in range(10):
        if offset + 4 > len(payload):
            raise ValueError("truncated KEXINIT")
        (length,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        raw = payload[offset : offset + length]
        if len(raw) != length:
            raise ValueError("truncated KEXINIT")
        offset += length
        lists.append(raw.decode("ascii", "replace"))
    return ClientKexInit(
        kex=lists[0], host_key=lists[1], encryption=lists[2], mac=lists[4], compression=lists[6]
    )


@runtime_checkable
class KexObserver(Protocol):
    """Implemented by the connection's owner (ssh/server.py) to learn the client's fingerprint."""

    def client_kex_received(self, client_version: str, kexinit: ClientKexInit) -> None: ...


class PersonaServerConnection(asyncssh.SSHServerConnection):
    """An SSHServerConnection that matches `persona` on the wire."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: asyncssh.SSHServerConnectionOptions,
        persona: Persona,
    ) -> None:
        super().__init__(loop, options)
        self._persona = persona
        # Advertise exactly the persona's host-key algorithms, in its order; asyncssh would also
        # offer ssh-rsa and the @ssh.com RSA names.
        keys: OrderedDict[bytes, Any] = OrderedDict()
        for alg in persona.host_key_algs:
            keypair = self._server_host_keys.get(alg.encode("ascii"))
            if keypair is not None:
                keys[alg.encode("ascii")] = keypair
        self._server_host_keys = keys
        self._server_host_key_algs = list(keys)
        self._st_auth_requests = 0
        self._st_auth_failures = 0
        self._st_auth_method = b""
        self._st_kex_seen = False

    # --- KEXINIT ---------------------------------------------------------------------------------

    def _get_extra_kex_algs(self) -> list[bytes]:
        return [alg.encode("ascii") for alg in self._persona.kex_pseudo_algs]

    def process_packet(self, pkttype: int, pktid: int, packet: SSHPacket) -> bool | Awaitable[None]:
        # Capture the client's first KEXINIT before asyncssh negotiates, so clients whose
        # algorithms do not match (scanners) are fingerprinted too.
        if pkttype == MSG_KEXINIT and not self._st_kex_seen:
            self._st_kex_seen = True
            self._report_kexinit(packet.get_full_payload())
        return super().process_packet(pkttype, pktid, packet)

    def _report_kexinit(self, payload: bytes) -> None:
        owner = self._owner
        if not isinstance(owner, KexObserver):
            return
        try:
            kexinit = parse_kexinit(payload)
        except ValueError:
            log.debug("unparsable client KEXINIT from %s", self._peer_addr)
            return
        version = self.get_extra_info("client_version") or ""
        owner.client_kex_received(str(version), kexinit)

    # --- EXT_INFO (RFC 8308) ---------------------------------------------------------------------

    def _send_ext_info(self) -> None:
        packet = UInt32(len(self._persona.ext_info))
        for name, value in self._persona.ext_info:
            packet += String(name) + String(value)
        self.send_packet(MSG_EXT_INFO, packet)

    # --- identification exchange -----------------------------------------------------------------

    def _recv_version(self) -> bool:
        index = self._inpbuf.find(b"\n", 0, _MAX_IDENT_BYTES)
        if index >= 0:
            line = self._inpbuf[:index].rstrip(b"\r")
            text = self._bad_ident_reply(line)
            if text is not None:
                # OpenSSH writes the text and CRLF, then closes; no SSH_MSG_DISCONNECT.
                log.debug("bad identification %r from %s", line[:80], self._peer_addr)
                self._send(text.encode("ascii") + b"\r\n")
                self._inpbuf = b""
                self._force_close(asyncssh.ProtocolNotSupported(text))
                return False
        return bool(super()._recv_version())

    def _bad_ident_reply(self, line: bytes) -> str | None:
        if not line.startswith(b"SSH-"):
            return self._persona.invalid_ident_text
        parts = line.split(b"-", 2)
        if len(parts) < 3:
            return self._persona.invalid_ident_text
        if parts[1] not in (b"2.0", b"1.99"):
            if parts[1][:1].isdigit():
                return self._persona.version_mismatch_text
            return self._persona.invalid_ident_text
        return None

    # --- disconnects ---------------------------------------------------------------------------

    def _send_disconnect(self, code: int, reason: str, lang: str) -> None:
        # sshd closes silently when kex cannot be negotiated (asyncssh would send its own algorithm
        # lists, a clear tell) and sends every other disconnect with an empty language tag.
        if code == DISC_KEY_EXCHANGE_FAILED:
            return
        super()._send_disconnect(code, reason, "")

    # --- MaxAuthTries ----------------------------------------------------------------------------

    async def _finish_userauth(self, begin_auth: bool, method: bytes, packet: SSHPacket) -> None:
        self._st_auth_requests += 1
        self._st_auth_method = method
        await super()._finish_userauth(begin_auth, method, packet)

    def send_userauth_failure(self, partial_success: bool) -> None:
        # OpenSSH auth2.c: the first "none" request is free, every other failed request counts,
        # and reaching MaxAuthTries ends the connection with "Too many authentication failures".
        if not partial_success and (self._st_auth_requests > 1 or self._st_auth_method != b"none"):
            self._st_auth_failures += 1
        if self._st_auth_failures >= self._persona.max_auth_tries:
            text = self._persona.too_many_auth_failures_text
            self._send_disconnect(DISC_PROTOCOL_ERROR, text, "")
            self._force_close(asyncssh.ProtocolError(text))
            return
        super().send_userauth_failure(partial_success)


async def listen(
    host: str,
    port: int,
    persona: Persona,
    server_factory: Callable[[], asyncssh.SSHServer],
    options: dict[str, Any],
    accept: Callable[[Callable[[], asyncio.Protocol]], asyncio.Protocol] | None = None,
) -> asyncio.Server:
    """Like `asyncssh.listen()`, but every connection is a `PersonaServerConnection`.

    `accept` (optional) wraps the connection factory: it gets each TCP connection first and hands
    it to a `PersonaServerConnection` when it may proceed (ssh/accept.py).
    """
    loop = asyncio.get_running_loop()
    conn_options = await asyncssh.SSHServerConnectionOptions.construct(
        None, server_factory=server_factory, **options
    )

    def connection_factory() -> PersonaServerConnection:
        return PersonaServerConnection(loop, conn_options, persona)

    def protocol_factory() -> asyncio.Protocol:
        if accept is None:
            return connection_factory()
        return accept(connection_factory)

    return await loop.create_server(protocol_factory, host, port, reuse_address=True)


__all__ = [
    "ClientKexInit",
    "KexObserver",
    "PersonaServerConnection",
    "listen",
    "parse_kexinit",
]
