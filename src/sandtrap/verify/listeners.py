"""The verifier's listeners on this machine: TCP on each of its own addresses, one UDP socket on
all of them; every connection or datagram that arrives from a sandbox (or the sinkhole) is
counted. Network targets are this machine's own addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
from typing import Any

log = logging.getLogger(__name__)

BANNER = b"sandtrap-verify\n"
_SIOCGIFADDR = 0x8915


def host_addresses() -> dict[str, str]:
    """This machine's own IPv4 addresses by interface (SIOCGIFADDR), loopback first."""
    found: dict[str, str] = {"127.0.0.1": "host loopback"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue
            address = socket.inet_ntoa(answer[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.setdefault(address, f"host address ({name})")
    return found


class Listeners:
    """TCP listeners on this machine's addresses; any connection that arrives is counted."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.targets: dict[str, str] = {}
        self._servers: list[asyncio.Server] = []
        # One UDP socket on every address (broadcast and multicast arrive there too).
        self.udp_port = 0
        self.udp_hits: list[str] = []
        self._udp: asyncio.DatagramTransport | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits.append(str(writer.get_extra_info("peername")))
        writer.write(BANNER)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def open(self, addresses: dict[str, str]) -> None:
        for address, what in addresses.items():
            try:
                server = await asyncio.start_server(self._answer, address, 0)
            except OSError as exc:
                log.warning("cannot listen on %s: %s", address, exc)
                continue
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.targets[f"{address}:{port}"] = what

    async def open_udp(self) -> None:
        hits = self.udp_hits

        class Counter(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                hits.append(str(addr[0]))

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Counter,
            local_addr=("0.0.0.0", 0),  # noqa: S104 - the point: every host address listens
        )
        self._udp = transport
        self.udp_port = int(transport.get_extra_info("sockname")[1])

    def udp_targets(self, sinkhole_subnet: str | None) -> list[str]:
        """Where a sandbox sends a datagram: limited broadcast, all-hosts multicast, the
        subnet's broadcast (sinkhole mode) and every non-loopback host address."""
        hosts = ["255.255.255.255", "224.0.0.1"]
        if sinkhole_subnet:
            hosts.append(str(ipaddress.IPv4Network(sinkhole_subnet).broadcast_address))
        hosts += icmp_targets(self)
        return [f"{host}:{self.udp_port}" for host in hosts] if self.udp_port else []

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()


def icmp_targets(listeners: Listeners) -> list[str]:
    # The sandbox's own loopback is its own: only the host's other addresses are targets.
    hosts = {target.rpartition(":")[0] for target in listeners.targets}
    return sorted(h for h in hosts if not ipaddress.ip_address(h).is_loopback)
