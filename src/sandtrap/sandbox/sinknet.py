"""The sinkhole network in Engine API terms: names, addresses and bodies; pure.

Owns what the sinkhole network and container look like and the network fields of a sandbox in
`sandbox.network: sinkhole` (`hardening.container_body` adds them), so the pool, the gate and the
verifier build the same bodies from the same configuration. Creating them is `network/deploy.py`'s.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sandtrap.config import SandboxConfig
from sandtrap.events import rfc3339

# The keys of sandbox/hardening.py (which imports this module, so it cannot import that one).
LABEL_ROLE = "sandtrap.role"
LABEL_SENSOR = "sandtrap.sensor"
LABEL_CREATED = "sandtrap.created"
ROLE_SINKHOLE = "sinkhole"
ROLE_SINK_NETWORK = "sink-network"
NO_IPV6_SYSCTLS = {
    # No IPv6 at all: not even a link-local address on eth0 that could reach the host's bridge.
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# Sandboxes share one bridge, but never ask who has an address (no broadcast ARP), so they cannot
# resolve each other; they learn only the gateway, from the sinkhole's gratuitous ARP (accepted).
ISOLATION_SYSCTLS = {
    "net.ipv4.neigh.eth0.mcast_solicit": "0",
    "net.ipv4.conf.eth0.arp_accept": "1",
    "net.ipv4.conf.all.arp_accept": "1",
}
SINKHOLE_CAPS = ("NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "SETUID", "SETGID")
# Fetch-on-behalf: the front's socket directory, read-only in the sinkhole (network/broker.py).
FETCH_MOUNT = "/run/sandtrap-fetch"
FETCH_SOCKET = "fetch.sock"


def _digest(sensor: str) -> str:
    return hashlib.sha256(sensor[:253].encode()).hexdigest()


def network_name(sensor: str) -> str:
    return f"sandtrap-sink-{_digest(sensor)[:12]}"


def container_name(sensor: str) -> str:
    return f"sandtrap-sinkhole-{_digest(sensor)[:12]}"


def bridge_name(sensor: str) -> str:
    """The host's bridge interface (15 characters at most), stable for host firewall rules."""
    return f"stsink{_digest(sensor)[:8]}"


@dataclass(frozen=True)
class Addresses:
    subnet: str
    gateway: str  # the sandboxes' default route and resolver: held by the sinkhole
    sinkhole: str  # the sinkhole container's own address (the last of the subnet)
    ip_range: str  # where the engine places sandboxes (the lower half)

    @property
    def gateway_interface(self) -> str:
        return f"{self.gateway}/{ipaddress.IPv4Network(self.subnet).prefixlen}"


def addresses(config: SandboxConfig) -> Addresses:
    net = ipaddress.IPv4Network(config.sinkhole.subnet)
    lower = next(net.subnets(prefixlen_diff=1))
    return Addresses(
        subnet=str(net),
        gateway=str(net.network_address + 1),
        sinkhole=str(net.broadcast_address - 1),
        ip_range=str(lower),
    )


def sandbox_host_config(config: SandboxConfig, sensor: str) -> dict[str, Any]:
    """`HostConfig` fields of a sandbox for its network mode (empty for `none`)."""
    if config.network != "sinkhole":
        return {}
    return {
        "NetworkMode": network_name(sensor),
        "Dns": [addresses(config).gateway],
        "DnsOptions": [],
        "DnsSearch": [],
        "Sysctls": {**NO_IPV6_SYSCTLS, **ISOLATION_SYSCTLS},
    }


def nameserver(config: SandboxConfig) -> str | None:
    """The sandboxes' resolver for /etc/resolv.conf (the sinkhole's gateway address), or None
    when they have no network: the engine would write its own (127.0.0.11, a Docker tell)."""
    return addresses(config).gateway if config.network == "sinkhole" else None


def network_body(config: SandboxConfig, sensor: str) -> dict[str, Any]:
    """`POST /networks/create`: a bridge whose host side has no address and no NAT.

    The host's bridge interface gets no IPv4 address (`inhibit_ipv4`), so no sandbox can address
    the host; without masquerading nothing is translated to the host's addresses; no IPv6.
    """
    addr = addresses(config)
    return {
        "Name": network_name(sensor),
        "CheckDuplicate": True,
        "Driver": "bridge",
        "Internal": False,  # internal networks drop (br_netfilter) what is not for the subnet
        "Attachable": False,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Config": [{"Subnet": addr.subnet, "IPRange": addr.ip_range, "Gateway": addr.gateway}],
        },
        "Options": {
            "com.docker.network.bridge.name": bridge_name(sensor),
            "com.docker.network.bridge.inhibit_ipv4": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
            "com.docker.network.bridge.enable_icc": "true",
        },
        "Labels": {LABEL_ROLE: ROLE_SINK_NETWORK, LABEL_SENSOR: sensor[:253]},
    }


def fetch_socket_dir(config: SandboxConfig, data_dir: Path) -> Path:
    """The host directory of the fetch socket (`sandbox.sinkhole.fetch.socket_dir`), absolute."""
    chosen = config.sinkhole.fetch.socket_dir or data_dir / "run" / "fetch"
    return chosen.absolute()


def sinkhole_body(
    config: SandboxConfig, sensor: str, created: datetime, fetch_dir: Path | None = None
) -> dict[str, Any]:
    """`POST /containers/create` of the sinkhole: network capabilities for its setup only (the
    service drops to nobody without capabilities before it reads a byte), read-only, bounded.
    With fetch-on-behalf, `fetch_dir` (the front's socket directory) is mounted read-only."""
    sink = config.sinkhole
    addr = addresses(config)
    memory = sink.memory_mb * 1024 * 1024
    fetching = sink.fetch.enabled and fetch_dir is not None
    mounts = (
        [{"Type": "bind", "Source": str(fetch_dir), "Target": FETCH_MOUNT, "ReadOnly": True}]
        if fetching
        else []
    )
    return {
        "Image": sink.image,
        "Hostname": "gateway",
        "Env": [
            f"STSINK_ADDRESS={addr.gateway_interface}",
            f"STSINK_RATE={sink.events_per_second}",
            f"STSINK_BURST={sink.events_burst}",
            f"STSINK_INTERVAL={sink.flood_report_interval_seconds}",
            f"STSINK_FETCH={FETCH_MOUNT + '/' + FETCH_SOCKET if fetching else ''}",
        ],
        "Labels": {
            LABEL_ROLE: ROLE_SINKHOLE,
            LABEL_SENSOR: sensor[:253],
            LABEL_CREATED: rfc3339(created),
        },
        "HostConfig": {
            "NetworkMode": network_name(sensor),
            "CapDrop": ["ALL"],
            "CapAdd": list(SINKHOLE_CAPS),
            "SecurityOpt": ["no-new-privileges:true"],
            "Privileged": False,
            "ReadonlyRootfs": True,
            "PidsLimit": 64,
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": 500_000_000,
            "Ulimits": [{"Name": "nofile", "Soft": 4096, "Hard": 4096}],
            "Sysctls": {
                **NO_IPV6_SYSCTLS,
                "net.ipv4.ip_forward": "0",
                "net.ipv4.conf.all.send_redirects": "0",
                "net.ipv4.conf.all.arp_announce": "2",
            },
            "RestartPolicy": {"Name": "unless-stopped"},  # not again after its keeper stopped it
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "3"}},
            "Binds": [],
            "Mounts": mounts,
            "Devices": [],
        },
        "NetworkingConfig": {
            "EndpointsConfig": {
                network_name(sensor): {"IPAMConfig": {"IPv4Address": addr.sinkhole}}
            }
        },
    }
