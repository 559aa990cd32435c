"""Judging the verifier's observations: pure functions from what a probe saw to table rows.

Owns what each check of the probe's view from inside expects, per runtime (runc or gVisor's
runsc). The host's view (bombs, login, versions) is judged in `verify/hostchecks.py`; running
probes is `verify/attacks.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sandtrap.sandbox.hardening import LXCFS_PROC_FILES

Status = Literal["PASS", "FAIL", "WARN", "INFO"]
Runtime = Literal["runc", "runsc"]

# Linux capability numbers (include/uapi/linux/capability.h).
_CAPABILITIES = """
CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
PERFMON BPF CHECKPOINT_RESTORE
"""
CAPABILITY_BITS = {name: bit for bit, name in enumerate(_CAPABILITIES.split())}

# Bind mounts the engine itself makes from host files into every container.
ENGINE_FILES = frozenset({"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"})
# File systems that are the kernel's or the container's own, never a host directory.
VIRTUAL_FS = frozenset(
    {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "overlay"}
)
# The OCI default character devices. Inside a user namespace the runtime cannot mknod them, so it
# binds the host's nodes in (from devtmpfs), and masks /proc files with /dev/null the same way.
DEFAULT_DEVICES = frozenset({"/null", "/zero", "/full", "/random", "/urandom", "/tty"})
# LXCFS's /proc files (sandbox.lxcfs), the only mounts the pool adds.
LXCFS_TARGETS = frozenset(f"/proc/{name}" for name in LXCFS_PROC_FILES)
# Host processes whose presence would mean the sandbox sees the host's PID namespace.
HOST_PROCESSES = frozenset({"dockerd", "containerd", "containerd-shim", "runc", "systemd-journal"})


@dataclass(frozen=True)
class Row:
    """One line of the verifier's table."""

    check: str
    who: str
    expected: str
    observed: str
    status: Status


@dataclass(frozen=True)
class Context:
    """What the observations are judged against."""

    runtime: Runtime
    cap_add: tuple[str, ...]
    targets: Mapping[str, str]  # "ip:port" -> what it is ("host loopback", "docker0 gateway", ...)
    network: Literal["none", "sinkhole"] = "none"
    gateway: str = ""  # sinkhole mode: the sandboxes' gateway and resolver (the sinkhole)


def cap_names(mask_hex: str) -> set[str]:
    mask = int(mask_hex or "0", 16)
    names = {name for name, bit in CAPABILITY_BITS.items() if mask >> bit & 1}
    unknown = mask >> len(CAPABILITY_BITS)
    return names | ({f"bit>={len(CAPABILITY_BITS)}"} if unknown else set())


def _refused(value: Any) -> bool:
    return isinstance(value, str) and value != "ok" and not value.startswith("ok;")


def _row(
    check: str, who: str, expected: str, observed: Any, ok: bool, else_: Status = "FAIL"
) -> Row:
    text = observed if isinstance(observed, str) else _short(observed)
    return Row(check, who, expected, text, "PASS" if ok else else_)


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        # Paths that gave way are named; refusals are counted by errno to keep the table narrow.
        given = [f"{key}: {result}" for key, result in value.items() if not _refused(result)]
        counts: dict[str, int] = {}
        for result in value.values():
            if _refused(result):
                counts[str(result)] = counts.get(str(result), 0) + 1
        refused = [f"{result} x{count}" for result, count in counts.items()]
        return ", ".join(given + refused) or "(none)"
    if isinstance(value, Iterable) and not isinstance(value, str):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def sinkhole_rows(obs: Mapping[str, Any], who: str, ctx: Context) -> list[Row]:
    """`sandbox.network: sinkhole`: a network that ends at the sinkhole (issue 16)."""
    sink = obs.get("sink") or {}
    routes = obs["routes"]
    return [
        _row("network: interfaces", who, "eth0 and lo", obs["interfaces"],
             obs["interfaces"] == ["eth0", "lo"]),
        _row("network: routes", who, "IPv4 on eth0 only, no IPv6", routes,
             bool(routes) and all(r.startswith("route:eth0:") for r in routes)),
        _row("network: IPv6", who, "unreachable", obs.get("ipv6"),
             not str(obs.get("ipv6")).startswith("connected")),
        _row("network: DNS answered by the sinkhole", who, ctx.gateway, sink.get("dns"),
             sink.get("dns") == ctx.gateway),
        _row("network: TCP to a documentation address", who, "caught by the sinkhole",
             sink.get("far"), str(sink.get("far")).startswith("connected")),
        _row("network: Docker's resolver 127.0.0.11", who,
             "refused (closed when the gate started the sandbox)", sink.get("docker_dns"),
             not str(sink.get("docker_dns")).startswith("answered")),
        _row("network: TCP to another sandbox", who,
             "unreachable (sandboxes never send broadcast ARP)", sink.get("peer"),
             not str(sink.get("peer")).startswith(("connected", "ECONNREFUSED"))),
    ]  # fmt: skip


def network_rows(obs: Mapping[str, Any], who: str, ctx: Context) -> list[Row]:
    if ctx.network == "sinkhole":
        rows = sinkhole_rows(obs, who, ctx)
    else:
        rows = [
            _row("network: interfaces", who, "lo only", obs["interfaces"],
                 obs["interfaces"] == ["lo"]),
            _row("network: routes", who, "none (outside lo)", obs["routes"], not obs["routes"]),
        ]  # fmt: skip
    for target, result in obs["tcp"].items():
        what = ctx.targets.get(target, target)
        rows.append(
            _row(
                f"network: TCP to {what} {target}",
                who,
                "unreachable (the host listener never answers)",
                result,
                not str(result).startswith("connected:sandtrap-verify"),
            )
        )
    for target, result in obs["icmp"].items():
        if ctx.network == "sinkhole":  # routed to the gateway, which answers every address
            rows.append(Row(f"network: ICMP echo to {target}", who, "to the sinkhole only",
                            str(result), "INFO"))  # fmt: skip
            continue
        rows.append(
            _row(f"network: ICMP echo to {target}", who, "not sent", result, result != "sent")
        )
    rows.append(
        _row(
            "network: raw ICMP socket",
            who,
            "refused",
            obs["raw_socket"],
            _refused(obs["raw_socket"]),
        )
    )
    rows.append(
        _row(
            "network: packet socket",
            who,
            "refused",
            obs["packet_socket"],
            _refused(obs["packet_socket"]),
        )
    )
    return rows


def _namespace_row(name: str, key: str, obs: Mapping[str, Any], who: str, ctx: Context) -> Row:
    value = obs[key]
    if ctx.runtime == "runsc" and key != "unshare_net":
        # gVisor implements namespaces itself: a new one lives inside the Sentry and gives no
        # host kernel namespace, so "allowed" is the honest gVisor answer, not a breach.
        return Row(name, who, "refused, or Sentry-internal (gVisor)", str(value), "PASS")
    return _row(name, who, "refused", value, _refused(value))


def privilege_rows(obs: Mapping[str, Any], who: str, ctx: Context) -> list[Row]:
    rows = [
        _row("mount tmpfs", who, "refused", obs["mount"], _refused(obs["mount"])),
        _namespace_row("unshare user namespace", "unshare_user", obs, who, ctx),
        _namespace_row("unshare mount namespace", "unshare_mount", obs, who, ctx),
        _namespace_row("unshare user+cgroup namespace", "unshare_cgroup", obs, who, ctx),
        _namespace_row("unshare net namespace", "unshare_net", obs, who, ctx),
        _row(
            "ptrace another uid's process",
            who,
            "refused",
            obs["ptrace"],
            _refused(obs["ptrace"]),
        ),
        _row(
            "kernel module load", who, "refused", obs["module_load"], _refused(obs["module_load"])
        ),
        _row(
            "write /proc/sys",
            who,
            "refused (read-only or absent)",
            obs["proc_sys"],
            all(_refused(v) for v in obs["proc_sys"].values()),
        ),
        _row(
            "write /sys",
            who,
            "refused (read-only or absent)",
            obs["sys_write"],
            all(_refused(v) for v in obs["sys_write"].values()),
        ),
        _row(
            "open /proc/sysrq-trigger for writing",
            who,
            "refused or absent",
            obs["sysrq"],
            _refused(obs["sysrq"]),
        ),
    ]
    mknod = str(obs["mknod_block"])
    if ctx.runtime == "runsc":
        # The Sentry may create the node, but it has no host block devices behind it.
        inert = _refused(mknod) or not mknod.endswith("open:ok")
        rows.append(Row("mknod block device", who, "refused, or inert (gVisor)", mknod, _ok(inert)))
    else:
        rows.append(_row("mknod block device", who, "refused", mknod, _refused(mknod)))
    agents = obs["release_agent"]
    rows.append(
        _row(
            "cgroup release_agent: write",
            who,
            "no writable release_agent / notify_on_release",
            agents or "(no such files visible)",
            all(_refused(v) for v in agents.values()),
        )
    )
    rows.append(
        _row(
            "cgroup release_agent: mount cgroupfs",
            who,
            "refused",
            obs["mount_cgroup"],
            _refused(obs["mount_cgroup"]),
        )
    )
    return rows


def _ok(flag: bool) -> Status:
    return "PASS" if flag else "FAIL"


def identity_rows(obs: Mapping[str, Any], who: str, ctx: Context) -> list[Row]:
    status = obs["status"]
    allowed = set(ctx.cap_add)
    eff, bnd = cap_names(status.get("CapEff", "0")), cap_names(status.get("CapBnd", "0"))
    rows = [
        _row(
            "capabilities: bounding set",
            who,
            f"within cap_add ({', '.join(sorted(allowed)) or 'none'})",
            ", ".join(sorted(bnd)) or "none",
            bnd <= allowed,
        )
    ]
    if who == "root":
        rows.append(
            _row(
                "capabilities: effective",
                who,
                "within cap_add",
                ", ".join(sorted(eff)) or "none",
                eff <= allowed,
            )
        )
    elif ctx.runtime == "runsc":
        # gVisor (Debian's 2022 build) leaves the container's capabilities on a non-root exec; the
        # login user can then become root inside the Sentry. Contained by gVisor, but a weaker
        # promise than runc's: reported, not hidden (SECURITY.md).
        rows.append(
            Row(
                "capabilities: effective",
                who,
                "none (runc); gVisor keeps cap_add on exec",
                ", ".join(sorted(eff)) or "none",
                "PASS" if not eff else "WARN",
            )
        )
    else:
        rows.append(
            _row("capabilities: effective", who, "none", ", ".join(sorted(eff)) or "none", not eff)
        )
    nnp, seccomp = status.get("NoNewPrivs"), status.get("Seccomp")
    if ctx.runtime == "runsc":
        rows.append(
            Row(
                "no_new_privs / seccomp",
                who,
                "not shown by gVisor (the Sentry filters its own host syscalls)",
                f"NoNewPrivs={nnp} Seccomp={seccomp}",
                "INFO",
            )
        )
    else:
        rows.append(_row("no_new_privs", who, "1", str(nnp), nnp == "1"))
        rows.append(_row("seccomp filter", who, "2 (filter)", str(seccomp), seccomp == "2"))
    hostish = sorted(set(obs["processes"]) & HOST_PROCESSES)
    rows.append(
        _row("pid namespace: host processes", who, "none visible", hostish or "none", not hostish)
    )
    rows.append(mount_row(obs["mounts"], who, ctx))
    return rows


def mount_row(mounts: list[list[str]], who: str, ctx: Context) -> Row:
    """Host paths: only the engine's own per-container files may come from a host file system."""
    host = []
    for target, root, fstype, _options in mounts:
        if fstype in VIRTUAL_FS or target in ENGINE_FILES:
            continue
        if ctx.runtime == "runsc" and fstype == "9p" and target == "/":
            continue  # gVisor serves the container's own root file system through its gofer
        if target == "/" and root == "/":
            continue
        if fstype == "devtmpfs" and root in DEFAULT_DEVICES:
            continue  # userns-remap: the host's /dev/null and friends, bound in by the runtime
        if fstype == "fuse.lxcfs" and target in LXCFS_TARGETS:
            continue  # sandbox.lxcfs: LXCFS's read-only /proc files, nothing of the host's disk
        host.append(f"{target} ({fstype} {root})")
    return _row(
        "host paths mounted",
        who,
        "none beyond /etc/{hosts,hostname,resolv.conf}",
        host or "none",
        not host,
    )


def socket_row(sockets: list[str], who: str) -> Row:
    engine = [p for p in sockets if re.search(r"docker|containerd|runc|podman|crio", p)]
    return _row(
        "container engine socket",
        who,
        "none anywhere in the file system",
        engine or f"none ({len(sockets)} other sockets)",
        not engine,
    )


def setuid_row(euid: Any, prepared: Any) -> Row:
    if prepared != "ok":
        return Row(
            "setuid-root binary run by login user",
            "user",
            "euid stays the user's",
            f"could not prepare the setuid copy: {prepared}",
            "FAIL",
        )
    return _row(
        "setuid-root binary run by login user",
        "user",
        "euid stays the user's (not 0)",
        f"euid {euid}",
        str(euid).strip() not in ("0", ""),
    )


def probe_rows(obs: Mapping[str, Any], who: str, ctx: Context) -> list[Row]:
    rows = (
        network_rows(obs, who, ctx) + privilege_rows(obs, who, ctx) + identity_rows(obs, who, ctx)
    )
    if "sockets" in obs:
        rows.append(socket_row(obs["sockets"], who))
    return rows


def has_failure(rows: Iterable[Row]) -> bool:
    return any(row.status == "FAIL" for row in rows)


__all__ = [
    "CAPABILITY_BITS",
    "Context",
    "Row",
    "cap_names",
    "has_failure",
    "probe_rows",
    "setuid_row",
]
