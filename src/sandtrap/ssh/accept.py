"""What happens to an accepted TCP connection before SSH: admission, and the PROXY protocol header.

Owns the `Gatekeeper` protocol that every listener accepts with. It asks the front whether the
connection may proceed (limits.py decides); on a PROXY listener it first reads the header (bounded
in time and size), then hands the transport to the asyncssh connection, which sees the real client
address through `AddressedTransport`. Refusal events are the front's to emit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sandtrap.ssh.proxyproto import MAX_HEADER_BYTES, ProxyHeaderError, parse_proxy_header

log = logging.getLogger(__name__)

Address = tuple[str, int]


class AcceptHooks(Protocol):
    """Implemented by the SSH front."""

    def admit(self, peer: Address, local: Address) -> str | None:
        """None to proceed, else the refusal reason (the connection is closed by the caller)."""
        ...

    def proxy_refused(self, peer: Address, local: Address, reason: str, received: int) -> None:
        """A PROXY listener got no valid header; the connection is closed by the caller."""
        ...


class AddressedTransport(asyncio.Transport):
    """A transport that reports the client named by a PROXY header as its peer.

    `get_extra_info("proxy_peername")` is the balancer's own address. Everything else is delegated.
    """

    def __init__(self, inner: asyncio.Transport, peername: Address, proxy: Address) -> None:
        super().__init__()
        self._inner = inner
        self._peername = peername
        self._proxy = proxy

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "proxy_peername":
            return self._proxy
        return self._inner.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def abort(self) -> None:
        self._inner.abort()

    def close(self) -> None:
        self._inner.close()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self._inner.write_eof()


class Gatekeeper(asyncio.Protocol):
    """Accepts one TCP connection, then becomes the SSH connection or closes it.

    Without PROXY protocol the hand-over happens inside `connection_made`, before the server's
    identification string is sent. With it, bytes are buffered until a complete header arrived
    (at most MAX_HEADER_BYTES, within `proxy_timeout` seconds: named timeout `proxy_header`).
    """

    def __init__(
        self,
        hooks: AcceptHooks,
        connection_factory: Callable[[], asyncio.Protocol],
        *,
        proxy_protocol: bool = False,
        proxy_timeout: float = 5.0,
        refusal_text: bytes = b"",
    ) -> None:
        self._hooks = hooks
        self._refusal_text = refusal_text
        self._factory = connection_factory
        self._proxy_protocol = proxy_protocol
        self._proxy_timeout = proxy_timeout
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._peer: Address = ("", 0)
        self._local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("Gatekeeper needs a stream transport")
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self._peer, self._local = (peer[0], peer[1]), (local[0], local[1])
        if not self._proxy_protocol:
            self._hand_over(transport, self._peer, b"")
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._proxy_timeout, self._refuse_proxy, "timeout")

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        try:
            header = parse_proxy_header(self._buffer[:MAX_HEADER_BYTES])
        except ProxyHeaderError as exc:
            self._refuse_proxy(str(exc))
            return
        if header is None:
            if len(self._buffer) >= MAX_HEADER_BYTES:
                self._refuse_proxy("header too long")
            return
        if self._timer is not None:
            self._timer.cancel()
        rest = self._buffer[header.length :]
        self._buffer = b""
        if self._transport is None:
            return
        if header.source is None:
            # v2 LOCAL / v1 UNKNOWN: the balancer speaks for itself (health checks).
            self._hand_over(self._transport, self._peer, rest)
            return
        wrapped = AddressedTransport(self._transport, header.source, self._peer)
        self._hand_over(wrapped, header.source, rest)

    def eof_received(self) -> bool:
        if not self._done:
            self._refuse_proxy("eof before header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._done:
            self._done = True
            self._hooks.proxy_refused(self._peer, self._local, "closed", len(self._buffer))

    def _refuse_proxy(self, reason: str) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        log.info("PROXY header from %s:%d refused: %s", *self._peer, reason)
        self._hooks.proxy_refused(self._peer, self._local, reason, len(self._buffer))
        if self._transport is not None:
            self._transport.abort()

    def _hand_over(self, transport: asyncio.Transport, peer: Address, rest: bytes) -> None:
        self._done = True
        refusal = self._hooks.admit(peer, self._local)
        if refusal is not None:
            if refusal != "rate_limited" and self._refusal_text:
                # As sshd at MaxStartups (the persona's text); a rate limit closes silently.
                transport.write(self._refusal_text)
            transport.close()
            return
        connection = self._factory()
        inner = self._transport
        if inner is None:
            return
        inner.set_protocol(connection)
        connection.connection_made(transport)
        if rest:
            connection.data_received(rest)


__all__ = ["AcceptHooks", "AddressedTransport", "Gatekeeper"]
