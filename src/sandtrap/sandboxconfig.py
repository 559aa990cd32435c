"""Configuration of the sandboxes: the pool, the container, its network and retention.

Part of the configuration models (config.py holds the file's top level, parsing and the other
sections); every default is stated once, here. Pure: pydantic models and their validators.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_IMAGE = "sandtrap/target-debian:12"
# The default sinkhole subnet is one /20 of this range, chosen by the sensor's name (config.py).
SINKHOLE_SUPERNET = ipaddress.IPv4Network("10.128.0.0/9")
SINKHOLE_PREFIX = 20

# Capabilities a login shell and common admin commands need inside the sandbox. Each is justified
# in config/config.example.yaml; everything else is dropped (cap_drop: ALL).
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL")

_CAPABILITY_NAME = re.compile(r"^[A-Z_]{2,32}$")
HOSTNAME_RE = re.compile(r"(?=.{1,63}\Z)[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# Capabilities that hand out the host or the network: never allowed, whatever the file says.
FORBIDDEN_CAPABILITIES = frozenset(
    {
        "SYS_ADMIN",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_PTRACE",
        "SYS_BOOT",
        "SYS_TIME",
        "NET_ADMIN",
        "NET_RAW",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "BPF",
        "PERFMON",
        "SYSLOG",
        "MKNOD",
        "LINUX_IMMUTABLE",
        "SYS_RESOURCE",
        "ALL",
    }
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Model):
    """The pre-warmed sandbox pool: a warm floor that grows with arrivals (issue 13)."""

    size: int = Field(
        default=10, ge=0, le=500, description="warm sandboxes kept ready when logins are quiet"
    )
    max_warm: int = Field(
        default=40,
        ge=0,
        le=5000,
        description="warm sandboxes the pool may hold while logins arrive fast: the warm target "
        "is the number of logins of the last grow_window_seconds, between size and max_warm",
    )
    grow_window_seconds: float = Field(default=120.0, gt=0, le=86400)
    max_sandboxes: int = Field(default=200, ge=1, le=5000)
    # A login waits for its sandbox (a slow login is realistic, a dropped one is lost data); the
    # bound sits well above what a burst of max_sandboxes takes to create on a small host: with
    # the sinkhole network (the engine's bridge endpoint per sandbox), 200 from 200 addresses
    # took about 100 s on 2 cores, and 90 s left 75 of them without a shell (docs/performance.md).
    allocate_timeout_seconds: float = Field(default=240.0, gt=0, le=600)
    health_interval_seconds: float = Field(default=30.0, gt=0)
    # Measured on 2 cores under load (docs/performance.md): 4 refill ~1.6x faster than 2.
    create_concurrency: int = Field(default=4, ge=1, le=64)
    share_per_source: bool = Field(
        default=True,
        description="concurrent connections from one source address share one sandbox, as one "
        "machine would (a file written in one is visible in the other)",
    )
    sticky: bool = False
    sticky_ttl_seconds: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _size_fits_cap(self) -> PoolConfig:
        if self.size > self.max_sandboxes:
            raise ValueError(
                f"size ({self.size}) must not exceed max_sandboxes ({self.max_sandboxes})"
            )
        return self

    def warm_ceiling(self) -> int:
        """The most warm sandboxes the pool grows to: max_warm, never below size nor above
        max_sandboxes."""
        return min(self.max_sandboxes, max(self.size, self.max_warm))


class WeightedImage(_Model):
    image: str = Field(min_length=1, max_length=255)
    weight: float = Field(default=1.0, gt=0)


class FetchConfig(_Model):
    """Fetch-on-behalf (`sandbox.sinkhole.fetch`): a sandbox's HTTP GET is fetched for real by the
    front, within these bounds, and the body stored as an artifact (SECURITY.md)."""

    enabled: bool = False
    public: bool = Field(
        default=True,
        description="fetch from global (public) addresses; false: only from the `allow` networks",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) fetched although private, loopback, link-local, multicast "
        "or reserved; everything else of those kinds is refused after resolution",
    )
    deny: list[str] = Field(
        default_factory=list, description="networks never fetched, even when public"
    )
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    per_sandbox_per_minute: int = Field(default=10, ge=1, le=10_000)
    per_minute: int = Field(default=60, ge=1, le=100_000)
    concurrent: int = Field(default=4, ge=1, le=64)
    socket_dir: Path | None = Field(
        default=None,
        description="host directory of the fetch socket, mounted read-only into the sinkhole "
        "(default <data_dir>/run/fetch; it must be the same path on the engine's host)",
    )

    @field_validator("allow", "deny")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"not a network (CIDR): {item!r}") from None
        return out


def sensor_subnet(sensor: str) -> str:
    """The default sinkhole subnet of a sensor: one of the 2048 /20s of 10.128.0.0/9, chosen by
    a hash of its name, so the sensors sharing an engine rarely collide (when two do, the second
    cannot create its network and says so: set `sandbox.sinkhole.subnet`). Pure."""
    count = 2 ** (SINKHOLE_PREFIX - SINKHOLE_SUPERNET.prefixlen)
    index = int.from_bytes(hashlib.sha256(sensor[:253].encode()).digest()[:4], "big") % count
    base = int(SINKHOLE_SUPERNET.network_address) + index * 2 ** (32 - SINKHOLE_PREFIX)
    return str(ipaddress.IPv4Network((base, SINKHOLE_PREFIX)))


class SinkholeConfig(_Model):
    """The network sinkhole of `sandbox.network: sinkhole` (docs/configuration.md, SECURITY.md)."""

    image: str = Field(default="sandtrap/sinkhole:12", min_length=1, max_length=255)
    subnet: str = Field(
        default=sensor_subnet(""),
        description="the sandboxes' network: the first address is their gateway and resolver "
        "(the sinkhole), sandboxes take the lower half, the sinkhole the last address; "
        "'auto' (the default): a /20 of 10.128.0.0/9 chosen by the sensor's name",
    )
    events_per_second: float = Field(default=20.0, gt=0, le=10_000)
    events_burst: int = Field(default=200, ge=1, le=100_000)
    flood_report_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    memory_mb: int = Field(default=128, ge=64, le=4096)
    fetch: FetchConfig = Field(default_factory=FetchConfig)

    @field_validator("subnet")
    @classmethod
    def _check_subnet(cls, value: str) -> str:
        if value == "auto":  # config.py puts the sensor's own here; alone, the nameless one
            return sensor_subnet("")
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError(
                f"subnet must be an IPv4 network like 10.0.0.0/16: {value!r}"
            ) from None
        if not net.is_private or not 8 <= net.prefixlen <= 24:
            raise ValueError("subnet must be a private IPv4 network with a prefix of /8 to /24")
        return str(net)


class SandboxConfig(_Model):
    """How every sandbox is created and hardened."""

    docker_url: str = "unix:///var/run/docker.sock"
    gate: str = Field(
        default="auto",
        description="'auto': `sandtrap run` starts the Engine API gate (`sandtrap gate`) as a "
        "child process and reaches docker_url only through it; 'off': talk to docker_url "
        "directly; an absolute socket path: use a gate started separately (e.g. in a container)",
    )
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=255)
    images: list[WeightedImage] = Field(default_factory=list)
    runtime: Literal["runc", "runsc"] = "runc"
    network: Literal["none", "sinkhole"] = Field(
        default="sinkhole",
        description="'none': only lo; 'sinkhole': eth0 on this sensor's sinkhole network, every "
        "packet caught and logged by the sinkhole (sandbox.sinkhole); the default, but 'none' "
        "when runtime is runsc (the sinkhole does not run under gVisor yet)",
    )
    sinkhole: SinkholeConfig = Field(default_factory=SinkholeConfig)
    cap_add: list[str] = Field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    seccomp_profile: str = Field(
        default="default", description="'default' for Docker's profile, or a path to a JSON file"
    )
    pids_limit: int = Field(default=100, ge=10, le=100_000)
    memory_mb: int = Field(default=256, ge=32, le=65536)
    cpus: float = Field(default=0.5, gt=0, le=64)
    nofile_limit: int = Field(default=1024, ge=64, le=1_048_576)
    nproc_limit: int = Field(default=200, ge=10, le=100_000)
    disk_limit_mb: int = Field(default=512, ge=16)
    disk_check_interval_seconds: float = Field(default=10.0, gt=0)
    io_bps_limit: int = Field(default=20 * 1024 * 1024, ge=0, description="bytes/s; 0 = none")
    hostnames: list[str] = Field(default_factory=list)
    hostname_pattern: str = Field(
        default="{role}-{env}-{n:02d}",
        description="used when hostnames is empty; fields: role, env, n",
    )
    artifact_max_bytes: int = Field(default=20 * 1024 * 1024, ge=0)
    # Looking like a server from the inside (issue 15, docs/fingerprinting.md, SECURITY.md).
    host_keys: Literal["public", "private", "image"] = Field(
        default="public",
        description="what of the front's host keys each sandbox's /etc/ssh holds: 'public' (the "
        ".pub files; the private files stay the image's), 'private' (both halves: the attacker "
        "gets the front's private keys), 'image' (the image's own keys)",
    )
    daemons: bool = Field(
        default=True, description="start the image's cron and rsyslogd when a sandbox is prepared"
    )
    agent: bool = Field(
        # Off by default: under the bench's shared-source load an OPEN went unanswered for 5 s,
        # the link was dropped and three open sessions of that source lost their exit status.
        default=False,
        description="run each channel as a child of the image's in-sandbox agent, shown as "
        "Debian's sshd listener (/usr/sbin/sshd in the target image), instead of a docker exec; "
        "falls back to docker exec when the image has none or the agent misbehaves",
    )
    lxcfs: Literal["auto", "off"] = Field(
        default="auto",
        description="'auto': when LXCFS serves lxcfs_dir, its /proc files (meminfo, cpuinfo, "
        "stat, loadavg, diskstats, swaps) are bound read-only over each new sandbox's; "
        "'off': never",
    )
    lxcfs_dir: str = Field(default="/var/lib/lxcfs", pattern=r"^/[A-Za-z0-9._/-]{0,200}$")

    @field_validator("cap_add")
    @classmethod
    def _check_caps(cls, value: list[str]) -> list[str]:
        out = []
        for cap in value:
            name = cap.upper().removeprefix("CAP_")
            if not _CAPABILITY_NAME.match(name):
                raise ValueError(f"not a capability name: {cap!r}")
            if name in FORBIDDEN_CAPABILITIES:
                raise ValueError(f"capability {name} would let a sandbox reach the host; refused")
            out.append(name)
        return out

    @model_validator(mode="before")
    @classmethod
    def _network_follows_runtime(cls, data: Any) -> Any:
        """Under runsc the default network is 'none' (set explicitly, 'sinkhole' is refused)."""
        if isinstance(data, dict) and "network" not in data and data.get("runtime") == "runsc":
            return {**data, "network": "none"}
        return data

    @model_validator(mode="after")
    def _sinkhole_runs_under_runc(self) -> SandboxConfig:
        if self.runtime == "runsc" and self.network == "sinkhole":
            raise ValueError(
                "network 'sinkhole' does not run under runtime 'runsc' yet: set network: none "
                "(or runtime: runc)"
            )
        return self

    @field_validator("gate")
    @classmethod
    def _check_gate(cls, value: str) -> str:
        if value not in ("auto", "off") and not (value.startswith("/") and len(value) < 100):
            raise ValueError("gate must be 'auto', 'off' or an absolute socket path (< 100 chars)")
        return value

    @field_validator("hostnames")
    @classmethod
    def _check_hostnames(cls, value: list[str]) -> list[str]:
        for name in value:
            if not HOSTNAME_RE.fullmatch(name):
                raise ValueError(f"not a valid host name: {name!r}")
        return value

    @field_validator("hostname_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            sample = value.format(role="web", env="prod", n=3)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"hostname_pattern may use only {{role}}, {{env}}, {{n}}: {exc}"
            ) from None
        if not HOSTNAME_RE.fullmatch(sample):
            raise ValueError(f"hostname_pattern gives an invalid host name: {sample!r}")
        return value

    def weighted_images(self) -> list[WeightedImage]:
        """The images sessions draw from: `images` when set, else `image` alone."""
        return list(self.images) or [WeightedImage(image=self.image, weight=1.0)]


class RetentionConfig(_Model):
    """How long stopped session sandboxes are kept for forensics."""

    max_count: int = Field(default=200, ge=0)
    max_age_days: float = Field(default=30.0, gt=0)
    max_disk_mb: int = Field(default=10_240, ge=0)
