"""The verifier's probe: runs INSIDE a sandbox (`python3 -c <source> MODE ARGS`), never on the host.

Tries what an attacker would try and prints one JSON object of raw observations (errno names,
values read); judging them against the configuration is left to `verify/checks.py`, on the host.
Standard library only, Python 3.9+ (whatever the target image ships).
"""
# ruff: noqa: S103, S603, S607, S108 - the probe runs fixed commands in a throwaway sandbox,
# makes a setuid copy on purpose (the no-new-privileges test) and records failures, never raises.

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
SYS_FINIT_MODULE = 313  # x86_64
SUID_COPY = "/tmp/.sandtrap-verify-suid-id"
# Root-writable on a host; each is rewritten with its own content, so success changes nothing.
PROC_SYS_FILES = (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/shmmax",
    "/proc/sys/vm/overcommit_memory",
)
SYS_FILES = ("/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run", "/sys/class/net/lo/mtu")

_libc = ctypes.CDLL(None, use_errno=True)


def _err(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _call(func: Any, *args: Any) -> str:
    """'ok' when a libc call returns 0 or more, else the errno name."""
    ctypes.set_errno(0)
    result = func(*args)
    return "ok" if result >= 0 else _err(ctypes.get_errno())


def _in_child(action: Any) -> str:
    """Run `action` (returns "ok" or an errno name) in a forked child, so changes stay there."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            outcome = action()
        except OSError as exc:
            outcome = _err(exc.errno or 0)
        except BaseException as exc:
            outcome = f"error:{type(exc).__name__}"
        os.write(write_fd, outcome.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read().decode()
    os.waitpid(pid, 0)
    return data or "no answer"


def _tcp(target: str) -> str:
    host, _, port = target.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((host.strip("[]"), int(port)))
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return _err(exc.errno or 0)
        try:
            return "connected:" + sock.recv(64).decode("ascii", "replace")
        except OSError:
            return "connected"


def _udp(target: str) -> str:
    """One datagram, broadcast allowed: whether it reaches the host is the host's to count."""
    host, _, port = target.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            sock.sendto(b"sandtrap-verify-udp", (host, int(port)))
        except OSError as exc:
            return _err(exc.errno or 0)
    return "sent"


def _docker_dns(name: str) -> str:
    """Ask Docker's embedded resolver (127.0.0.11) for `name`: answered, or how it failed."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.11", 53))
            sock.send(query)
            answer = sock.recv(512)
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return _err(exc.errno or 0)
    return f"answered ({len(answer)} bytes, {answer[7] if len(answer) > 7 else 0} records)"


def _resolve(name: str) -> str:
    try:
        return socket.gethostbyname(name)
    except OSError as exc:
        return f"error:{exc}"[:80]


def _socket(family: int, kind: int, proto: int) -> str:
    try:
        socket.socket(family, kind, proto).close()
    except OSError as exc:
        return _err(exc.errno or 0)
    return "ok"


def _icmp_send(target: str) -> str:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError as exc:
        return "socket:" + _err(exc.errno or 0)
    with sock:
        try:
            sock.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01", (target, 0))
        except OSError as exc:
            return "send:" + _err(exc.errno or 0)
    return "sent"


def _routes() -> list[str]:
    found = []
    for path, dev_index in (("/proc/net/route", 0), ("/proc/net/ipv6_route", 9)):
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines[1 if dev_index == 0 else 0 :]:
            fields = line.split()
            if len(fields) > dev_index and fields[dev_index] != "lo":
                dest = fields[1 if dev_index == 0 else 0]
                found.append(f"{path.rsplit('/', 1)[1]}:{fields[dev_index]}:{dest}")
    return found


def _write(path: str, data: bytes | None = None) -> str:
    """Open for writing; write `data` when given (None: open only). 'ok' means it was writable."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return _err(exc.errno or 0)
    try:
        if data is not None:
            os.write(fd, data)
    except OSError as exc:
        return _err(exc.errno or 0)
    finally:
        os.close(fd)
    return "ok"


def _rewrite(path: str) -> str:
    """Write a file's own content back (harmless if it succeeds)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return _err(exc.errno or 0)
    return _write(path, data or b"\n")


def _status() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {
        k: fields[k]
        for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Uid")
        if k in fields
    }


def _mounts() -> list[list[str]]:
    rows = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                parts, rest = left.split(), right.split()
                rows.append([parts[4], parts[3], rest[0] if rest else "", parts[5]])
    except OSError:
        pass
    return rows


def _sockets() -> list[str]:
    found = []
    for top in ("/",):
        for root, dirs, files in os.walk(top):
            if root == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
            for name in files + dirs:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.append(path)
    return found


def _processes() -> list[str]:
    names = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as handle:
                names.append(handle.read().strip())
    return names


def _ptrace_other() -> str:
    """PTRACE_ATTACH to a process of another uid: PID 1 for a user, a uid-65534 child for root."""
    ptrace = _libc.ptrace
    ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if os.getuid() != 0:
        outcome = _call(ptrace, PTRACE_ATTACH, 1, None, None)
        if outcome == "ok":
            _call(ptrace, PTRACE_DETACH, 1, None, None)
        return outcome
    pid = os.fork()
    if pid == 0:
        with contextlib.suppress(OSError):
            os.setgid(65534)
            os.setuid(65534)
        time.sleep(5)
        os._exit(0)
    time.sleep(0.2)
    outcome = _call(ptrace, PTRACE_ATTACH, pid, None, None)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return outcome


def _mount_tmpfs() -> str:
    target = "/tmp/.sandtrap-verify-mnt"
    os.makedirs(target, exist_ok=True)
    outcome = _call(_libc.mount, b"none", target.encode(), b"tmpfs", 0, None)
    if outcome == "ok":
        _libc.umount2(target.encode(), 0)
    return outcome


def _mount_cgroup() -> str:
    target = "/tmp/.sandtrap-verify-cg"
    os.makedirs(target, exist_ok=True)
    outcome = _call(_libc.mount, b"cgroup", target.encode(), b"cgroup", 0, b"rdma")
    if outcome == "ok":
        _libc.umount2(target.encode(), 0)
    return outcome


def _release_agents() -> dict[str, str]:
    found: dict[str, str] = {}
    for root, _dirs, files in os.walk("/sys/fs/cgroup"):
        for name in files:
            if name in ("release_agent", "notify_on_release"):
                path = os.path.join(root, name)
                found[path] = _write(path)  # opening for write is the test; nothing is written
        if len(found) > 50:
            break
    return found


def _module_load() -> str:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        return _call(_libc.syscall, SYS_FINIT_MODULE, fd, b"", 0)
    finally:
        os.close(fd)


def _create(path: str) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _err(exc.errno or 0)
    os.close(fd)
    os.unlink(path)
    return "ok"


def _mknod_block() -> str:
    """mknod of the first disk; when the node appears, whether it can be opened (read only)."""
    path = "/tmp/.sandtrap-verify-blk"
    try:
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(8, 0))
    except OSError as exc:
        return _err(exc.errno or 0)
    try:
        os.close(os.open(path, os.O_RDONLY))
        opened = "ok"
    except OSError as exc:
        opened = _err(exc.errno or 0)
    os.unlink(path)
    return "ok;open:" + opened


def common(args: dict[str, Any]) -> dict[str, Any]:
    """Everything both the login user and root try."""
    out: dict[str, Any] = {"uid": os.getuid(), "euid": os.geteuid()}
    out["uname"] = os.uname().release
    out["interfaces"] = sorted(name for _i, name in socket.if_nameindex())
    out["routes"] = _routes()
    out["tcp"] = {target: _tcp(target) for target in args.get("targets", [])}
    out["icmp"] = {target: _icmp_send(target) for target in args.get("icmp_targets", [])}
    out["udp"] = {target: _udp(target) for target in args.get("udp_targets", [])}
    out["raw_socket"] = _socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    out["packet_socket"] = _socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sink = args.get("sinkhole") or {}  # sandbox.network: sinkhole (issue 16)
    out["ipv6"] = _tcp("[2001:db8::1]:80")
    out["sink"] = {key: _tcp(target) for key, target in sink.get("tcp", {}).items()}
    out["sink"]["dns"] = _resolve(sink["name"]) if sink else "-"
    if sink:
        out["sink"]["docker_dns"] = _docker_dns(sink.get("container", "sandtrap"))
    out["mount"] = _in_child(_mount_tmpfs)
    out["unshare_user"] = _in_child(lambda: _call(_libc.unshare, CLONE_NEWUSER))
    out["unshare_net"] = _in_child(lambda: _call(_libc.unshare, CLONE_NEWNET))
    out["unshare_mount"] = _in_child(lambda: _call(_libc.unshare, CLONE_NEWNS))
    out["unshare_cgroup"] = _in_child(lambda: _call(_libc.unshare, CLONE_NEWUSER | CLONE_NEWCGROUP))
    out["ptrace"] = _ptrace_other()
    out["module_load"] = _module_load()
    out["proc_sys"] = {path: _rewrite(path) for path in PROC_SYS_FILES}
    out["sys_write"] = {path: _rewrite(path) for path in SYS_FILES}
    out["sys_write"]["/sys/.sandtrap-verify (create)"] = _create("/sys/.sandtrap-verify")
    out["sysrq"] = _write("/proc/sysrq-trigger")  # opened only: a write would reach the kernel
    out["mknod_block"] = _mknod_block()
    out["status"] = _status()
    out["mounts"] = _mounts()
    out["processes"] = _processes()
    out["release_agent"] = _release_agents()
    out["mount_cgroup"] = _in_child(_mount_cgroup)
    return out


def user(args: dict[str, Any]) -> dict[str, Any]:
    out = common(args)
    out["sockets"] = _sockets()
    if os.path.exists(SUID_COPY):
        proc = subprocess.run([SUID_COPY, "-u"], capture_output=True, text=True, check=False)
        out["suid_euid"] = proc.stdout.strip() or proc.stderr.strip()[:200]
    return out


def root(args: dict[str, Any]) -> dict[str, Any]:
    out = common(args)
    # A setuid-root copy of id(1) for the login user to run (no-new-privileges must keep euid).
    try:
        with open("/usr/bin/id", "rb") as src, open(SUID_COPY, "wb") as dst:
            dst.write(src.read())
        os.chown(SUID_COPY, 0, 0)
        os.chmod(SUID_COPY, 0o4755)
        out["suid_prepared"] = "ok"
    except OSError as exc:
        out["suid_prepared"] = _err(exc.errno or 0)
    return out


def forkbomb(args: dict[str, Any]) -> dict[str, Any]:
    """The classic bash fork bomb for a few seconds, counting processes; then kill it all."""
    seconds = float(args.get("seconds", 4))
    with open("/tmp/.sandtrap-verify-fb.err", "wb") as err:
        bomb = subprocess.Popen(
            ["bash", "-c", ":(){ :|:& };:"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        peak = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peak = max(peak, len([e for e in os.listdir("/proc") if e.isdigit()]))
            time.sleep(0.05)
        for _ in range(200):
            with contextlib.suppress(OSError):
                os.killpg(bomb.pid, signal.SIGKILL)
            left = 0
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        if os.getpgid(int(entry)) == bomb.pid:
                            left += 1
            if not left:
                break
            bomb.poll()  # reap the leader, or its zombie keeps counting
            time.sleep(0.05)
    with open("/tmp/.sandtrap-verify-fb.err", "rb") as handle:
        messages = handle.read(200_000).decode("utf-8", "replace")
    return {
        "peak_processes": peak,
        "fork_refused": "Resource temporarily unavailable" in messages or "retry" in messages,
        "remaining": left,
    }


# Run in a child so the OOM killer's choice (the biggest process) is this one, not the probe.
_ALLOCATE = """
import sys
chunks = []
for step in range(1, int(sys.argv[1]) // 8 + 1):
    chunk = bytearray(8 * 1024 * 1024)
    for offset in range(0, len(chunk), 4096):
        chunk[offset] = 1
    chunks.append(chunk)
    sys.stdout.write("%d\\n" % (step * 8))
    sys.stdout.flush()
"""


def membomb(args: dict[str, Any]) -> dict[str, Any]:
    """Allocate and touch memory up to 4x the limit in a child; report how far it got."""
    cap = int(args["memory_mb"]) * 4
    proc = subprocess.run(
        [sys.executable, "-c", _ALLOCATE, str(cap)], capture_output=True, text=True, check=False
    )
    lines = proc.stdout.split()
    return {
        "returncode": proc.returncode,
        "reached_mb": int(lines[-1]) if lines else 0,
        "stderr": proc.stderr[-200:],
    }


def cpuspin(args: dict[str, Any]) -> dict[str, Any]:
    """Spin `workers` processes for `seconds`; CPU time is measured by the host (cgroup stats)."""
    seconds, workers = float(args["seconds"]), int(args["workers"])
    started = time.monotonic()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
            os._exit(0)
        pids.append(pid)
    cpu = 0.0
    for pid in pids:
        _pid, _status, usage = os.wait4(pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
    return {"wall": time.monotonic() - started, "cpu_inside": cpu}


MODES = {"user": user, "root": root, "forkbomb": forkbomb, "membomb": membomb, "cpuspin": cpuspin}

if __name__ == "__main__" and len(sys.argv) > 1:
    result = MODES[sys.argv[1]](json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    print(json.dumps(result))
