"""Hardening and naming of sandbox containers: pure functions from config to Engine API bodies.

Owns what every sandbox container looks like (limits, capabilities, labels, names, host names).
Talking to the engine is left to the `ContainerEngine` (sandbox/engine.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandtrap.config import HOSTNAME_RE, SandboxConfig
from sandtrap.errors import ConfigError
from sandtrap.events import rfc3339
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.realism import (
    PREPARE_REALISM,
    UTMP_SCRIPT,
    HostKeyFiles,
    host_keys_payload,
)
from sandtrap.sandbox.sinknet import sandbox_host_config

LABEL_ROLE = "sandtrap.role"
LABEL_CREATED = "sandtrap.created"
LABEL_IMAGE = "sandtrap.image"
LABEL_HOSTNAME = "sandtrap.hostname"
LABEL_SENSOR = "sandtrap.sensor"
# Set by our target Dockerfiles: the host name written into the image's generated logs.
LABEL_LOG_HOSTNAME = "sandtrap.log-hostname"
# An image with the in-sandbox agent (containers/targets/common/agent.c) says so: "1".
LABEL_AGENT = "sandtrap.agent"
ROLE_SANDBOX = "sandbox"

# Docker labels cannot change after creation, so a warm container's session binding lives in its
# name, which can: sandtrap-pool-<hex> while idle, sandtrap-<session>-<ip> once allocated.
POOL_PREFIX = "sandtrap-pool-"
SESSION_PREFIX = "sandtrap-s-"
_SESSION_NAME = re.compile(r"^/?sandtrap-s-([0-9a-f]{12,32})-([0-9A-Za-z._]+)$")

_ROLES = ("web", "app", "db", "api", "mail", "backup", "git", "ci", "cache", "proxy")
_ENVS = ("prod", "prd", "stage", "live", "int")


@dataclass(frozen=True)
class SessionName:
    session_id: str
    src_ip: str


def sandbox_labels(sensor: str) -> tuple[str, str]:
    """Label filters that select this sensor's sandboxes (several sensors may share an engine)."""
    return f"{LABEL_ROLE}={ROLE_SANDBOX}", f"{LABEL_SENSOR}={sensor[:253]}"


def pool_name() -> str:
    return f"{POOL_PREFIX}{secrets.token_hex(6)}"


def session_name(session_id: str, src_ip: str) -> str:
    """Container name of an allocated sandbox; IPv6 colons become underscores (no ':' in names)."""
    if not re.fullmatch(r"[0-9a-f]{12,32}", session_id):
        raise ValueError(f"bad session id {session_id!r}")
    ip_part = re.sub(r"[^0-9A-Za-z.]", "_", src_ip)[:64]
    return f"{SESSION_PREFIX}{session_id}-{ip_part}"


def parse_session_name(name: str) -> SessionName | None:
    match = _SESSION_NAME.match(name)
    if match is None:
        return None
    ip_part = match.group(2)
    src_ip = ip_part.replace("_", ":") if "_" in ip_part else ip_part
    return SessionName(session_id=match.group(1), src_ip=src_ip)


class HostnamePicker:
    """Plausible host names: the configured list in turn, else the pattern with random parts."""

    def __init__(self, config: SandboxConfig, rng: random.Random | None = None) -> None:
        self._names = list(config.hostnames)
        self._pattern = config.hostname_pattern
        self._rng = rng or random.Random()  # noqa: S311 - realism, not security
        self._next = 0

    def pick(self) -> str:
        if self._names:
            name = self._names[self._next % len(self._names)]
            self._next += 1
            return name
        return self._pattern.format(
            role=self._rng.choice(_ROLES), env=self._rng.choice(_ENVS), n=self._rng.randint(1, 12)
        )


def security_opts(config: SandboxConfig) -> list[str]:
    """`HostConfig.SecurityOpt` of every sandbox (reads a custom seccomp profile file).

    Raises:
        ConfigError: the configured seccomp profile cannot be read.
    """
    opts = ["no-new-privileges:true"]
    if config.seccomp_profile != "default":
        path = Path(config.seccomp_profile)
        try:
            profile = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError([f"sandbox.seccomp_profile: cannot load {path}: {exc}"]) from None
        opts.append(f"seccomp={json.dumps(profile, separators=(',', ':'))}")
    return opts


# gVisor's ptrace platform backs every sandboxed process with a host stub process and its threads,
# all in the container's pids cgroup: measured with Debian's runsc (2022-12-19), an idle sandbox is
# 39 host tasks and each process inside adds about 12. When the cgroup refuses one, the Sentry
# panics ("error initializing first thread") and the whole sandbox ends, so under runsc the host
# limit leaves room for `pids_limit` processes inside (docs/configuration.md).
RUNSC_PIDS_BASE = 64
RUNSC_PIDS_PER_PROCESS = 12


def host_pids_limit(config: SandboxConfig) -> int:
    """The pids cgroup limit: `pids_limit` processes, plus gVisor's own tasks under runsc."""
    if config.runtime == "runsc":
        return RUNSC_PIDS_BASE + RUNSC_PIDS_PER_PROCESS * config.pids_limit
    return config.pids_limit


# The /proc files LXCFS serves that a sandbox gets (issue 15). Not uptime: LXCFS's is the
# sandbox's age, while the kernel's process start times (ps's ELAPSED) count from the host's boot.
LXCFS_PROC_FILES = ("cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps")


def lxcfs_mounts(lxcfs_dir: str) -> list[dict[str, Any]]:
    """Read-only binds of LXCFS's /proc files (`Mounts`, which fail on a missing source where
    `Binds` would create it on the host)."""
    return [
        {
            "Type": "bind",
            "Source": f"{lxcfs_dir.rstrip('/')}/proc/{name}",
            "Target": f"/proc/{name}",
            "ReadOnly": True,
        }
        for name in LXCFS_PROC_FILES
    ]


def is_lxcfs_serving(lxcfs_dir: str) -> bool:
    """Whether LXCFS answers in `lxcfs_dir` (blocking: a FUSE stat; run it in a thread)."""
    try:
        return all(
            Path(f"{lxcfs_dir.rstrip('/')}/proc/{name}").is_file() for name in LXCFS_PROC_FILES
        ) and os.path.ismount(lxcfs_dir)
    except OSError:  # ENOTCONN once lxcfs died without unmounting
        return False


def container_body(
    config: SandboxConfig,
    *,
    image: str,
    hostname: str,
    sensor: str,
    created: datetime,
    blkio_device: str | None = None,
    security_opt: list[str] | None = None,
    lxcfs: bool = False,
) -> dict[str, Any]:
    """The Engine API `POST /containers/create` body of one hardened sandbox.

    The gate accepts a create only when its body equals this function's result for the same
    configuration (gate/bodies.py), so a field added here is allowed there by construction.
    `security_opt` is `security_opts(config)` computed once by a caller that creates many;
    `lxcfs` binds LXCFS's /proc files from `config.lxcfs_dir` (when it serves them).
    """
    memory = config.memory_mb * 1024 * 1024
    host: dict[str, Any] = {
        "NetworkMode": "none",
        "Privileged": False,
        "CapDrop": ["ALL"],
        "CapAdd": list(config.cap_add),
        "SecurityOpt": list(security_opt if security_opt is not None else security_opts(config)),
        "PidsLimit": host_pids_limit(config),
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": int(config.cpus * 1_000_000_000),
        "Ulimits": [
            {"Name": "nofile", "Soft": config.nofile_limit, "Hard": config.nofile_limit},
            {"Name": "nproc", "Soft": config.nproc_limit, "Hard": config.nproc_limit},
        ],
        "Runtime": config.runtime,
        "IpcMode": "private",
        # Its own cgroup namespace: /proc/self/cgroup shows "/" instead of /docker/<id> (issue 15),
        # and the sandbox cannot see the host's cgroup tree.
        "CgroupnsMode": "private",
        "ReadonlyRootfs": False,
        "Binds": [],
        "Mounts": lxcfs_mounts(config.lxcfs_dir) if lxcfs and config.lxcfs != "off" else [],
        "Devices": [],
        "RestartPolicy": {"Name": "no"},
        "AutoRemove": False,
        "LogConfig": {"Type": "none", "Config": {}},
        # The image's own /sbin/init reaps zombies; Docker's --init would show docker-init in ps.
        "Init": False,
    }
    host.update(sandbox_host_config(config, sensor))  # network: sinkhole (issue 16)
    if blkio_device and config.io_bps_limit:
        rate = [{"Path": blkio_device, "Rate": config.io_bps_limit}]
        host["BlkioDeviceReadBps"] = rate
        host["BlkioDeviceWriteBps"] = rate
    return {
        "Image": image,
        "Hostname": hostname,
        "Domainname": "",
        "NetworkDisabled": config.network == "none",
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "StopSignal": "SIGTERM",
        "Labels": {
            LABEL_ROLE: ROLE_SANDBOX,
            LABEL_CREATED: rfc3339(created),
            LABEL_IMAGE: image,
            LABEL_HOSTNAME: hostname,
            LABEL_SENSOR: sensor[:253],
        },
        "HostConfig": host,
    }


# Run as root in a fresh container before anyone logs in. Arguments are validated host names, passed
# as positional parameters, never spliced into the script; host keys come on stdin
# (sandbox/realism.py). It prints what it changed, as
# "S<tab>path<tab>size<tab>mtime" lines, and the accounts, as "U<tab>passwd entry" lines.
PREPARE_SCRIPT = (
    r"""
new=$1 old=$2 daemons=$3 UTMP_SCRIPT=$4 nameserver=$5
rm -f /.dockerenv
# Sinkhole mode: the engine writes its own resolver (127.0.0.11, a Docker tell).
[ -n "$nameserver" ] && printf 'nameserver %s\n' "$nameserver" > /etc/resolv.conf
# Debian's installer writes the host name to /etc/hosts; the engine's file lacks it.
grep -q '^127\.0\.1\.1' /etc/hosts 2>/dev/null || printf '127.0.1.1\t%s\n' "$new" >> /etc/hosts
set -- / /etc /var /var/log
# The image's logs were generated under a build-time host name: make them this host's,
# keeping each file's modification time.
# One stat and one sed for all of them, then a touch each (a few processes, not four a file).
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  logs=$(grep -rlsF -- " $old " /var/log)
  if [ -n "$logs" ]; then
    times=$(stat -c '%Y %n' $logs)
    sed -i "s/ $old / $new /g" $logs
    while read -r t f; do touch -d "@$t" "$f"; set -- "$@" "$f" "${f%/*}"; done <<EOF_TIMES
$times
EOF_TIMES
  fi
fi
"""
    + PREPARE_REALISM
    + r"""
find "$@" -maxdepth 0 -printf 'S\t%p\t%s\t%T@\n' 2>/dev/null
getent passwd | sed 's/^/U\t/'
exit 0
"""
)


@dataclass(frozen=True)
class Prepared:
    """What preparation left: (size, mtime) of each path it changed, and the accounts' homes."""

    baseline: dict[str, tuple[int, int] | None]
    homes: dict[str, str]


def parse_prepared(output: str) -> Prepared:
    """Read the prepare script's report (pure)."""
    baseline: dict[str, tuple[int, int] | None] = {"/.dockerenv": None}
    homes: dict[str, str] = {}
    for line in output.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "S":
            path, _, numbers = rest.partition("\t")
            size, _, mtime = numbers.partition("\t")
            if size.isdigit():
                baseline[path] = (int(size), int(float(mtime or 0)))
        elif kind == "U":
            fields = rest.split(":")
            if len(fields) >= 7 and fields[0]:
                homes[fields[0]] = fields[5] or "/"
    return Prepared(baseline, homes)


async def prepare(
    engine: ContainerEngine,
    container_id: str,
    hostname: str,
    log_hostname: str | None,
    *,
    host_keys: Sequence[HostKeyFiles] = (),
    daemons: bool = False,
    nameserver: str | None = None,
) -> Prepared:
    """Make a new sandbox look like a server that has always had its host name.

    `host_keys` replace the image's files in /etc/ssh (the front's, `sandbox.host_keys`);
    `daemons` starts the image's cron and rsyslogd (`sandbox.daemons`); `nameserver` (an IPv4
    address: the sinkhole's) replaces the engine's /etc/resolv.conf, in the same exec.

    Raises:
        SandboxError: the engine failed.
    """
    old = log_hostname if log_hostname and HOSTNAME_RE.fullmatch(log_hostname) else ""
    if not HOSTNAME_RE.fullmatch(hostname):
        raise ValueError(f"bad host name {hostname!r}")
    if nameserver is not None:
        ipaddress.IPv4Address(nameserver)  # ValueError for anything else
    argv = ["/bin/sh", "-c", PREPARE_SCRIPT, "sh", hostname, old, "1" if daemons else "0"]
    _, out, _ = await engine.run(
        container_id, [*argv, UTMP_SCRIPT, nameserver or ""], stdin=host_keys_payload(host_keys)
    )
    return parse_prepared(out.decode("utf-8", "replace"))


_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def is_valid_username(name: str) -> bool:
    """A name `useradd` accepts on Debian with default NAME_REGEX (and never an option)."""
    return bool(_USERNAME.fullmatch(name))


def blkio_device_for(path: Path) -> str | None:
    """The whole-disk block device holding `path` (for blkio throttling), or None if unknown."""
    try:
        dev = path.stat().st_dev
    except OSError:
        return None
    major, minor = os.major(dev), os.minor(dev)
    sys_dev = Path(f"/sys/dev/block/{major}:{minor}")
    if not sys_dev.exists():
        return None
    node = sys_dev.resolve()
    if (node / "partition").exists():
        node = node.parent
    device = Path("/dev") / node.name
    return str(device) if device.exists() else None


_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_engine_time(value: str | None) -> datetime | None:
    """An engine timestamp (RFC 3339, nanoseconds) as an aware datetime; None when unset."""
    if not value or value.startswith("0001-"):
        return None
    match = _ENGINE_TIME.match(value)
    if match is None:
        return None
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "") else zone
    try:
        moment = datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
