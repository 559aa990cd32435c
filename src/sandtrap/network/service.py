"""The sinkhole's process (PID 1 of its container): network setup as root, then every service as
nobody without capabilities; records to stdout as JSON lines (the front's `feed.py` reads them).

Standard library only (it runs on the image's Debian python3). Setup: the gateway address the
sandboxes route through, no route of its own, an nftables ruleset that turns every TCP stream to
one catch-all port, UDP to port 53 to the resolver and other UDP to a transparent socket, every
incoming IPv4 destination local (AnyIP: pings to any address answer), and output dropped except
replies. Bytes from sandboxes are parsed only after the privileges are gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from .budget import Budget
from .dns import answer, parse_query
from .sniff import (
    BANNERS,
    TLS_ALERT,
    full_url,
    head_end,
    http_response,
    looks_like_http,
    parse_client_hello,
    parse_http_head,
    tls_record_size,
)

TCP_PORT, UDP_PORT, DNS_PORT = 65001, 65002, 53
NOBODY = 65534
SO_ORIGINAL_DST = 80
IP_PKTINFO, IP_TRANSPARENT, IP_RECVORIGDSTADDR = 8, 19, 20  # Linux values (3.11 lacks names)
FIRST_BYTES = 512  # logged of an unknown protocol or a UDP datagram
MAX_BODY = 64 * 1024
READ_TIMEOUT, IDLE_TIMEOUT = 10.0, 60.0
MAX_CONNECTIONS, MAX_PER_SOURCE = 1024, 64
MAX_STREAM = 1024 * 1024  # bytes read from one connection before it is closed
FETCH_SOCKET = os.environ.get("STSINK_FETCH", "")  # empty: fetch-on-behalf is off
FETCH_TIMEOUT, FETCH_MAX = 120.0, 1 << 30
_SAFE = str.maketrans({c: " " for c in map(chr, [*range(32), 127])})


def _fetch_head(status: int, reason: str, ctype: str, location: str, size: int) -> bytes:
    """The response head for a fetched body (pure); header values are cleaned of control bytes."""
    lines = [
        f"HTTP/1.1 {status} {reason.translate(_SAFE)[:64] or 'OK'}",
        "Server: nginx",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {ctype.translate(_SAFE)[:128] or 'application/octet-stream'}",
        f"Content-Length: {size}",
    ]
    if location:
        lines.append(f"Location: {location.translate(_SAFE)[:2048]}")
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1", "replace")


def ruleset(device: str, subnet: str, tproxy: bool) -> str:
    """The nftables ruleset of the sinkhole's namespace (pure)."""
    udp = (
        f"iifname {device} udp dport != {DNS_PORT} tproxy ip to :{UDP_PORT} meta mark set 1"
        if tproxy
        else f"iifname {device} udp dport != {DNS_PORT} ip daddr != {subnet} counter"
    )
    return f"""
table ip sinkhole {{
  chain pre_nat {{ type nat hook prerouting priority dstnat; policy accept;
    iifname {device} meta l4proto tcp redirect to :{TCP_PORT}
  }}
  chain pre_mangle {{ type filter hook prerouting priority mangle; policy accept;
    {udp}
  }}
  chain output {{ type filter hook output priority filter; policy drop;
    oifname lo accept
    ct state established,related accept
  }}
  chain forward {{ type filter hook forward priority filter; policy drop; }}
}}
table ip6 sinkhole6 {{
  chain all_in {{ type filter hook input priority filter; policy drop; }}
  chain all_out {{ type filter hook output priority filter; policy drop; }}
  chain all_fwd {{ type filter hook forward priority filter; policy drop; }}
}}
"""


def _run(*argv: str, check: bool = True) -> bool:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if check and done.returncode:
        raise SystemExit(f"sinkhole setup: {' '.join(argv)}: {done.stderr.strip()}")
    return done.returncode == 0


def setup(address: str, device: str = "eth0") -> bool:
    """As root: the gateway address, no route out, AnyIP, the ruleset. True when TPROXY works."""
    iface = ipaddress.IPv4Interface(address)
    subnet = str(iface.network)
    _run("ip", "addr", "replace", address, "dev", device)
    _run("ip", "route", "flush", "default", check=False)
    _run("ip", "rule", "add", "iif", device, "to", subnet, "lookup", "main", "pref", "90")
    _run("ip", "rule", "add", "iif", device, "lookup", "100", "pref", "100")
    _run("ip", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
    for tproxy in (True, False):
        done = subprocess.run(
            ["nft", "-f", "-"], input=ruleset(device, subnet, tproxy), text=True,  # noqa: S607
            capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return tproxy
        _run("nft", "flush", "ruleset", check=False)
    raise SystemExit(f"sinkhole setup: nft: {done.stderr.strip()}")


def drop_privileges() -> None:
    """To nobody, no groups, no capabilities; exits when any capability is left."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
                raise SystemExit("sinkhole: capabilities left after dropping privileges")


class Emitter:
    """Writes bounded records, one JSON line each, within each source's budget."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def emit(self, what: str, src: str, **fields: Any) -> None:
        if what not in ("ready", "flood") and not self.budget.allow(src, what, time.monotonic()):
            return
        record = {"k": what, "src": src, **fields}
        sys.stdout.write(json.dumps(record, ensure_ascii=True, separators=(",", ":"))[:8000] + "\n")
        sys.stdout.flush()

    def flush_floods(self, flush: bool = False) -> None:
        for src, kind, count, seconds in self.budget.due(time.monotonic(), flush):
            self.emit("flood", src, kind=kind, count=count, seconds=round(seconds, 1))


def _b64(data: bytes) -> str:
    return base64.b64encode(data[:FIRST_BYTES]).decode()


class Sinkhole:
    def __init__(self, address: str, emitter: Emitter) -> None:
        self.address = str(ipaddress.IPv4Interface(address).ip)
        self.out = emitter
        self.open: dict[str, int] = {}

    async def tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        src, sport = writer.get_extra_info("peername")[:2]
        try:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            dport, dst = struct.unpack_from("!H", raw, 2)[0], socket.inet_ntoa(raw[4:8])
        except OSError:
            dst, dport = writer.get_extra_info("sockname")[:2]
        count = self.open.get(src, 0)
        try:
            self.out.emit("connect", src, sport=sport, dst=dst, dport=dport, proto="tcp")
            if count >= MAX_PER_SOURCE or sum(self.open.values()) >= MAX_CONNECTIONS:
                return
            self.open[src] = count + 1
            await self._converse(reader, writer, src, sport, dst, dport)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if src in self.open:
                self.open[src] -= 1
                if self.open[src] <= 0:
                    del self.open[src]
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        src: str, sport: int, dst: str, dport: int) -> None:  # fmt: skip
        where = {"sport": sport, "dst": dst, "dport": dport}
        if dport in BANNERS:
            writer.write(BANNERS[dport])
        data = b""
        while len(data) < 16 * 1024 + 5:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), READ_TIMEOUT)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            size = tls_record_size(data)
            if size is not None:
                if len(data) >= size:
                    break
            elif looks_like_http(data):
                if head_end(data) >= 0:
                    break
            elif len(data) >= FIRST_BYTES or not looks_like_http(data + b"A" * 13):
                break
        if not data:
            return
        if tls_record_size(data) is not None:
            hello = parse_client_hello(data)
            sni, ja3 = (hello.sni, hello.ja3_hash) if hello else ("", "")
            alpn = list(hello.alpn) if hello else []
            self.out.emit("tls", src, **where, sni=sni, ja3=ja3, alpn=alpn)
            writer.write(TLS_ALERT)
            await writer.drain()
            return
        request = parse_http_head(data) if looks_like_http(data) else None
        if request is not None:
            body = data[request.head_bytes :]
            want = min(request.content_length, MAX_BODY)
            with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError):
                while len(body) < want:
                    chunk = await asyncio.wait_for(reader.read(want - len(body)), READ_TIMEOUT)
                    if not chunk:
                        break
                    body += chunk
            self.out.emit(
                "http", src, **where, method=request.method,
                host=request.host, url=full_url(request, dst, dport), user_agent=request.user_agent,
                headers=[list(pair) for pair in request.headers], body_bytes=request.content_length,
                body=_b64(body),
            )  # fmt: skip
            if (
                request.method == "GET"
                and FETCH_SOCKET
                and await self._fetched(
                    writer, src, full_url(request, dst, dport), request.user_agent
                )
            ):
                return
            writer.write(http_response(request, email.utils.formatdate(usegmt=True)))
            await writer.drain()
            return
        self.out.emit("data", src, **where, first=_b64(data), bytes=len(data))
        total = len(data)
        while total < MAX_STREAM:
            chunk = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
            if not chunk:
                break
            total += len(chunk)

    async def _fetched(
        self, writer: asyncio.StreamWriter, src: str, url: str, user_agent: str
    ) -> bool:
        """Fetch-on-behalf: ask the front (its socket, mounted read-only) for the URL and pass
        its answer on. False when the front refuses or cannot be reached: the caller answers
        like nginx. The front checks and bounds everything; this side only relays."""
        try:
            reader, front = await asyncio.wait_for(
                asyncio.open_unix_connection(FETCH_SOCKET, limit=8192), READ_TIMEOUT
            )
        except (OSError, TimeoutError):
            return False
        try:
            ask = {"src": src, "url": url, "ua": user_agent}
            front.write(json.dumps(ask, ensure_ascii=True).encode()[:8000] + b"\n")
            await front.drain()
            head = json.loads(await asyncio.wait_for(reader.readline(), FETCH_TIMEOUT))
            status, size = int(head.get("status", 0)), int(head.get("size", 0))
            if not 100 <= status <= 599 or not 0 <= size <= FETCH_MAX:
                return False
            reply = _fetch_head(status, str(head.get("reason", "")), str(head.get("type", "")),
                                str(head.get("location", "")), size)  # fmt: skip
            writer.write(reply)
            left = size
            while left > 0:
                chunk = await asyncio.wait_for(reader.read(min(left, 65536)), FETCH_TIMEOUT)
                if not chunk:
                    break
                writer.write(chunk)
                left -= len(chunk)
                await writer.drain()
            await writer.drain()
            return True
        except (OSError, TimeoutError, ValueError, TypeError, AttributeError):
            return False
        finally:
            front.close()

    def dns_readable(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, peer = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            dst = self.address
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                    dst = socket.inet_ntoa(value[8:12])
            query = parse_query(data)
            src, sport = peer[:2]
            if query is None:
                self.out.emit("udp", src, sport=sport, dst=dst, dport=DNS_PORT,
                              first=_b64(data), bytes=len(data))  # fmt: skip
                continue
            self.out.emit("dns", src, sport=sport, dst=dst, dport=DNS_PORT,
                          query=query.name, qtype=query.type_name)  # fmt: skip
            info = struct.pack("!I4s4s", 0, socket.inet_aton(dst), socket.inet_aton(dst))
            with contextlib.suppress(OSError):
                sock.sendmsg([answer(query, self.address)],
                             [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, peer)  # fmt: skip

    def udp_readable(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            dst, dport = "", 0
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_RECVORIGDSTADDR and len(value) >= 8:
                    dport, dst = struct.unpack_from("!H", value, 2)[0], socket.inet_ntoa(value[4:8])
            self.out.emit("udp", peer[0], sport=peer[1], dst=dst, dport=dport,
                          first=_b64(data), bytes=len(data))  # fmt: skip

    def icmp_readable(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                packet = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if len(packet) < 28:
                continue
            header = (packet[0] & 0x0F) * 4
            if len(packet) > header and packet[header] == 8:  # echo request
                src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
                self.out.emit("connect", src, sport=0, dst=dst, dport=0, proto="icmp")


def _sockets(tproxy: bool) -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    """Bound while still root (port 53, transparent and raw sockets need it)."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", TCP_PORT))  # noqa: S104 - the sinkhole's only interface is the sandboxes'
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    # Answers come from the address asked (8.8.8.8, ...), which is local only for what arrives.
    dns.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
    dns.bind(("0.0.0.0", DNS_PORT))  # noqa: S104
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if tproxy:
        udp.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
    udp.setsockopt(socket.IPPROTO_IP, IP_RECVORIGDSTADDR, 1)
    udp.bind(("0.0.0.0", UDP_PORT))  # noqa: S104
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    for sock in (tcp, dns, udp, icmp):
        sock.setblocking(False)
    return tcp, dns, udp, icmp


async def serve(address: str, tproxy: bool, sockets: tuple[socket.socket, ...]) -> None:
    rate = float(os.environ.get("STSINK_RATE", "20"))
    burst = int(os.environ.get("STSINK_BURST", "200"))
    interval = float(os.environ.get("STSINK_INTERVAL", "60"))
    emitter = Emitter(Budget(rate, burst, interval))
    sink = Sinkhole(address, emitter)
    tcp, dns, udp, icmp = sockets
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await asyncio.start_server(sink.tcp, sock=tcp, backlog=1024, limit=64 * 1024)
    loop.add_reader(dns, sink.dns_readable, dns)
    loop.add_reader(udp, sink.udp_readable, udp)
    loop.add_reader(icmp, sink.icmp_readable, icmp)
    emitter.emit("ready", "", address=sink.address, tproxy=tproxy)
    async with server:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            emitter.flush_floods()
    emitter.flush_floods(flush=True)


ANNOUNCER = 65533  # not nobody: the service (nobody) can neither ptrace it nor read its fds
ANNOUNCE_SECONDS = 1.0


def garp_frame(mac: bytes, address: str) -> bytes:
    """A gratuitous ARP reply, broadcast: `address` is at `mac` (RFC 5227 section 3); pure."""
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ip, b"\xff" * 6, ip)
    return b"\xff" * 6 + mac + b"\x08\x06" + arp


def announce(address: str, device: str = "eth0") -> None:
    """Fork the announcer: the only way a sandbox learns the gateway's MAC (sandboxes never send
    broadcast ARP, `mcast_solicit` 0, so they cannot resolve each other). It holds the one raw
    socket, sends one fixed frame a second, reads nothing and parses nothing."""
    with open(f"/sys/class/net/{device}/address", encoding="ascii") as handle:
        mac = bytes.fromhex(handle.read().strip().replace(":", ""))
    frame = garp_frame(mac, address)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    sock.bind((device, 0))
    if os.fork():
        sock.close()
        return
    os.closerange(3, sock.fileno())
    os.closerange(sock.fileno() + 1, 1024)
    os.setgroups([])
    os.setresgid(ANNOUNCER, ANNOUNCER, ANNOUNCER)
    os.setresuid(ANNOUNCER, ANNOUNCER, ANNOUNCER)
    while True:
        with contextlib.suppress(OSError):
            sock.send(frame)
        time.sleep(ANNOUNCE_SECONDS)


def main() -> None:
    address = os.environ.get("STSINK_ADDRESS", "")
    try:
        ipaddress.IPv4Interface(address)
    except ValueError:
        raise SystemExit(
            f"sinkhole: STSINK_ADDRESS {address!r} is not an IPv4 address/prefix"
        ) from None
    tproxy = setup(address)
    announce(str(ipaddress.IPv4Interface(address).ip))
    sockets = _sockets(tproxy)
    drop_privileges()
    asyncio.run(serve(address, tproxy, sockets))


if __name__ == "__main__":
    main()
