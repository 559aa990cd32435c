"""`sandtrap verify-realism`'s checks: what container- and honeypot-detection tools look at.

Owns the shell script a real SSH login runs inside a sandbox (the checks of amicontained, deepce,
linpeas' container section and the known Cowrie fingerprints) and judging what it printed; pure.
Logging in and printing the table are verify/realism_runner.py's and cli/verify.py's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sandtrap.verify.checks import Row

# Each check prints "@@name" and then what it saw, so one login runs all of them.
SCRIPT = r"""
export LC_ALL=C
sec() { printf '\n@@%s\n' "$1"; }
sec dockerenv; ls -a / | grep -E '^\.(dockerenv|containerenv)$'
sec containerenv; ls /run/.containerenv 2>/dev/null
sec cgroup; cat /proc/1/cgroup
sec environ1; tr '\0' '\n' < /proc/1/environ 2>/dev/null | grep -E '^container='
sec pid1; ps -o args= -p 1
sec sched1; head -n 1 /proc/1/sched 2>/dev/null
sec mountroot; awk '$2 == "/" {print $3}' /proc/mounts
sec lxcfsmounts; awk '$3 ~ /^fuse\.lxcfs/ {print $2}' /proc/mounts
sec hostname; hostname
sec capeff; awk '/^CapEff/ {print $2}' /proc/self/status
sec seccomp; awk '/^Seccomp:/ {print $2}' /proc/self/status
sec loginshellppid; ps -o ppid= -p $$ | tr -d ' '
sec loginshellparent; ps -o args= -p "$(ps -o ppid= -p $$ | tr -d ' ')" 2>/dev/null
sec sshd; ps -eo args= | grep -E '^sshd: ' | grep -v grep
sec listenerppid; ps -eo ppid=,args= | awk '$2 == "sshd:" && /\[listener\]/ {print $1}'
sec daemons; ps -eo ppid=,args= | awk '$1 == 1 {$1=""; print substr($0, 2)}'
sec who; who
sec last; last -n 1 -i 2>/dev/null | head -n 1
sec boot; who -b
sec hostkey; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | awk '{print $2}'
sec hostkeypriv
ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key 2>/dev/null | ssh-keygen -lf - | awk '{print $2}'
sec memtotal; free -b | awk '/^Mem:/ {print $2}'
sec swaptotal; free -b | awk '/^Swap:/ {print $2}'
sec nproc; nproc
sec cpuinfo; grep -c '^processor' /proc/cpuinfo
sec uptime; cut -d' ' -f1 /proc/uptime
sec etime1; ps -o etimes= -p 1 | tr -d ' '
sec loginuid; cat /proc/self/loginuid
sec systemd; ls -d /run/systemd/system 2>/dev/null
sec richard; ls -d /home/richard /home/phil 2>/dev/null; grep -E '^(richard|phil):' /etc/passwd
sec cowrieuname; uname -a
sec devcount; ls /dev | wc -l
sec interfaces; ls /sys/class/net 2>/dev/null
exit 0
"""

# Cowrie's defaults that bots check (cowrie.cfg.dist, share/cowrie/txtcmds, honeyfs).
COWRIE_HOSTNAME = "svr04"
COWRIE_KERNEL = "3.2.0-4-amd64"
_HEX_ID = re.compile(r"[0-9a-f]{12}|[0-9a-f]{64}")
_KNOWN = "known tell (docs/fingerprinting.md)"


def parse_sections(output: str) -> dict[str, list[str]]:
    """The script's output by check name (lines stripped, empty lines dropped)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in output.replace("\r\n", "\n").splitlines():
        if raw.startswith("@@") and raw[2:].isalnum():
            current = sections.setdefault(raw[2:], [])
        elif current is not None and raw.strip():
            current.append(raw.strip())
    return sections


def _text(lines: list[str]) -> str:
    return "; ".join(lines)[:200] or "(nothing)"


def _row(check: str, source: str, expected: str, observed: str, status: str) -> Row:
    return Row(check, source, expected, observed, status)  # type: ignore[arg-type]


def judge(
    seen: Mapping[str, list[str]],
    *,
    front_fingerprint: str,
    src_ip: str,
    memory_mb: int,
    lxcfs: bool,
    host_keys: str,
    agent: bool = False,
) -> list[Row]:
    """One row per check: PASS hidden, FAIL a tell SandTrap hides showed, INFO/WARN a known tell.

    INFO: a tell we cannot hide with runc; WARN: one we could hide but do not (yet), or one
    that depends on the host's set-up (LXCFS).
    """

    def get(name: str) -> list[str]:
        return list(seen.get(name, []))

    def one(name: str) -> str:
        lines = get(name)
        return lines[0] if lines else ""

    rows = [
        _row("/.dockerenv, /.containerenv", "deepce, linpeas", "absent", _text(get("dockerenv")),
             "FAIL" if get("dockerenv") else "PASS"),
        _row("/run/.containerenv", "deepce, amicontained", "absent", _text(get("containerenv")),
             "FAIL" if get("containerenv") else "PASS"),
    ]  # fmt: skip
    cgroup_paths = {line.split(":", 2)[-1] for line in get("cgroup")}
    container_cgroup = any(
        re.search(r"docker|kubepods|lxc|containerd|libpod", path) for path in cgroup_paths
    )
    cgroup_ok = cgroup_paths and not container_cgroup
    rows.append(
        _row("/proc/1/cgroup", "amicontained, deepce, linpeas", "/ for every controller",
             _text(sorted(cgroup_paths)), "PASS" if cgroup_ok else "FAIL")
    )  # fmt: skip
    rows.append(
        _row("container= in PID 1's environment", "amicontained, systemd-detect-virt", "absent",
             _text(get("environ1")), "FAIL" if get("environ1") else "PASS")
    )  # fmt: skip
    pid1 = one("pid1")
    rows.append(
        _row("PID 1", "deepce, linpeas", "/sbin/init", pid1 or "(nothing)",
             "PASS" if pid1 == "/sbin/init" else "FAIL")
    )  # fmt: skip
    sched = one("sched1")
    match = re.search(r"\((\d+),", sched)
    rows.append(
        _row("/proc/1/sched names pid 1", "linpeas", "init (1, ...)", sched or "(nothing)",
             "PASS" if match is None or match.group(1) == "1" else "INFO")
    )  # fmt: skip
    root_fs = one("mountroot")
    rows.append(
        _row("root file system", "linpeas, deepce", "a disk file system", root_fs or "(nothing)",
             "INFO" if root_fs == "overlay" else "PASS")
    )  # fmt: skip
    hostname = one("hostname")
    rows.append(
        _row("host name", "deepce; Cowrie default svr04", "a plausible name", hostname,
             "FAIL" if _HEX_ID.fullmatch(hostname) or hostname == COWRIE_HOSTNAME else "PASS")
    )  # fmt: skip
    rows.append(_row("effective capabilities", "amicontained", "root's full set", one("capeff"),
                     "INFO"))  # fmt: skip
    rows.append(_row("seccomp filter", "amicontained", "0 (none)", one("seccomp"),
                     "INFO" if one("seccomp") == "2" else "PASS"))  # fmt: skip
    # With `sandbox.agent` on, sshd's look is ours to keep: missing is a FAIL; off, a known tell.
    missing = "FAIL" if agent else "WARN"
    sshd = get("sshd")
    has_sshd = any("[listener]" in line for line in sshd) and any("@" in line for line in sshd)
    rows.append(
        _row("sshd listener and session processes", "ps, pstree",
             "sshd: ... [listener], sshd: USER@pts/N", _text(sshd),
             "PASS" if has_sshd else missing)
    )  # fmt: skip
    ppid = one("loginshellppid")
    parent = one("loginshellparent")
    rows.append(
        _row("login shell's parent", "ps -ef", "an sshd process", f"PPID {ppid or '?'}: {parent}",
             "PASS" if parent.startswith("sshd: ") and ppid not in ("0", "") else missing)
    )  # fmt: skip
    if has_sshd:
        # The agent is the pool's exec: its parent is the engine, not PID 1 (fingerprinting.md).
        listener = one("listenerppid")
        rows.append(
            _row("sshd listener's parent", "ps -ef, pstree", "PPID 1", f"PPID {listener or '?'}",
                 "PASS" if listener == "1" else "WARN")
        )  # fmt: skip
    daemons = get("daemons")
    has_cron = any(d.startswith("/usr/sbin/cron") for d in daemons)
    has_syslog = any(d.startswith("/usr/sbin/rsyslogd") for d in daemons)
    rows.append(
        _row("cron and rsyslogd under PID 1", "ps -ef", "both running", _text(daemons),
             "PASS" if has_cron and has_syslog else "FAIL")
    )  # fmt: skip
    who = get("who")
    rows.append(
        _row("who shows this login", "w, who", f"a pts line from ({src_ip})", _text(who),
             "PASS" if any("pts/" in w and f"({src_ip})" in w for w in who) else "FAIL")
    )  # fmt: skip
    last = one("last")
    rows.append(
        _row("last shows this login", "last", f"from {src_ip}", last or "(nothing)",
             "FAIL" if src_ip not in last else ("INFO" if "gone" in last else "PASS"))
    )  # fmt: skip
    rows.append(_row("system boot recorded", "who -b", "system boot ...", one("boot") or "(none)",
                     "PASS" if one("boot").startswith("system boot") else "FAIL"))  # fmt: skip
    key = one("hostkey")
    rows.append(
        _row("host key fingerprint", "ssh-keygen -lf *.pub", front_fingerprint, key or "(none)",
             "PASS" if key == front_fingerprint else ("WARN" if host_keys == "image" else "FAIL"))
    )  # fmt: skip
    private = one("hostkeypriv")
    rows.append(
        _row("private host key matches .pub", "ssh-keygen -y", key or "?", private or "(none)",
             "PASS" if private and private == key else "INFO")
    )  # fmt: skip
    memory = one("memtotal")
    own = memory.isdigit() and int(memory) == memory_mb * 1024 * 1024
    rows.append(
        _row("free: memory total", "free, Cowrie's canned free", f"{memory_mb} MiB (LXCFS)",
             f"{int(memory) // 1048576} MiB" if memory.isdigit() else memory or "(none)",
             "PASS" if own else ("FAIL" if lxcfs else "WARN"))
    )  # fmt: skip
    swap = one("swaptotal")
    rows.append(_row("free: swap total", "free", "0 (memory_mb has no swap)", swap or "(none)",
                     "PASS" if swap == "0" else ("FAIL" if lxcfs else "WARN")))  # fmt: skip
    rows.append(
        _row("nproc agrees with /proc/cpuinfo", "nproc, lscpu", one("nproc"), one("cpuinfo"),
             "PASS" if one("nproc") and one("nproc") == one("cpuinfo") else "FAIL")
    )  # fmt: skip
    etime = one("etime1")
    rows.append(
        _row("ps elapsed time of PID 1", "ps", "below the uptime", f"{etime} s (uptime "
             f"{one('uptime')} s)", "PASS" if etime.isdigit() and int(etime) < 10**8 else "FAIL")
    )  # fmt: skip
    rows.append(_row("uptime", "uptime, w", "days on a long-running host", f"{one('uptime')} s",
                     "INFO"))  # fmt: skip
    rows.append(_row("loginuid", "cat /proc/self/loginuid", "the user's uid", one("loginuid"),
                     "INFO" if one("loginuid") == "4294967295" else "PASS"))  # fmt: skip
    rows.append(_row("systemd", "systemctl, /run/systemd/system", "present", _text(get("systemd")),
                     "PASS" if get("systemd") else "WARN"))  # fmt: skip
    rows.append(_row("Cowrie's users richard, phil", "botnet honeypot checks", "absent",
                     _text(get("richard")), "FAIL" if get("richard") else "PASS"))  # fmt: skip
    uname = one("cowrieuname")
    rows.append(_row("uname -a", "botnet honeypot checks", f"not Cowrie's {COWRIE_KERNEL}",
                     uname[:120], "FAIL" if COWRIE_KERNEL in uname else "PASS"))  # fmt: skip
    lxcfs_mounts = get("lxcfsmounts")
    rows.append(_row("LXCFS mounts", "/proc/mounts", "none", _text(lxcfs_mounts),
                     "INFO" if lxcfs_mounts else "PASS"))  # fmt: skip
    rows.append(_row("device nodes in /dev", "linpeas", "dozens or more", one("devcount"),
                     "INFO"))  # fmt: skip
    rows.append(_row("network interfaces", "ip a", "lo and a NIC", _text(get("interfaces")),
                     "INFO"))  # fmt: skip
    return rows


def known_tell() -> str:
    """The note printed under the table."""
    return f"INFO and WARN rows are a {_KNOWN}; FAIL is a tell SandTrap means to hide."


__all__ = ["SCRIPT", "judge", "known_tell", "parse_sections"]
