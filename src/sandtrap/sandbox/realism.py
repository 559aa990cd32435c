"""What makes a sandbox look like a server from the inside (issue 15): host keys, daemons, utmp.

Pure: the scripts that the pool's prepare exec and a login's record exec run, and their inputs.
Running them is left to `sandbox/hardening.py:prepare` and `sandbox/container.py`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The host-key files sshd reads on Debian (sshd_config's HostKey defaults).
HOST_KEY_NAMES = ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key")


@dataclass(frozen=True)
class HostKeyFiles:
    """One host key as OpenSSH files: the public line and, when shared, the private file."""

    name: str
    public: bytes
    private: bytes | None = None


def host_keys_payload(keys: Sequence[HostKeyFiles]) -> bytes:
    """The prepare script's stdin: `name<TAB>mode<TAB>base64` lines, for known names only."""
    lines = []
    for key in keys:
        if key.name not in HOST_KEY_NAMES:
            raise ValueError(f"not a host key file name: {key.name!r}")
        lines.append(f"{key.name}.pub\t644\t{base64.b64encode(key.public).decode()}")
        if key.private is not None:
            lines.append(f"{key.name}\t600\t{base64.b64encode(key.private).decode()}")
    return "".join(line + "\n" for line in lines).encode()


# Part of the prepare script (sh, run as root before anyone logs in). Host keys from stdin: each
# file replaced keeping the image's mtime, the public line ending in root@<host name> as
# ssh-keygen writes it. Then utmp's boot record and, when asked, the daemons systemd would have
# started, reparented to /sbin/init once this shell exits.
_HOST_KEYS = r"""
while IFS='	' read -r name mode data; do
  case $name in
    ssh_host_rsa_key|ssh_host_ecdsa_key|ssh_host_ed25519_key) ;;
    ssh_host_rsa_key.pub|ssh_host_ecdsa_key.pub|ssh_host_ed25519_key.pub) ;;
    *) continue ;;
  esac
  case $mode in 600|644) ;; *) continue ;; esac
  f=/etc/ssh/$name
  printf '%s' "$data" | base64 -d > "$f.new" 2>/dev/null || { rm -f "$f.new"; continue; }
  case $name in
    *.pub) line=$(cut -d' ' -f1,2 "$f.new"); printf '%s root@%s\n' "$line" "$new" > "$f.new" ;;
  esac
  chmod "$mode" "$f.new"; chown root:root "$f.new"
  [ -e "$f" ] && touch -r "$f" "$f.new"
  mv -f "$f.new" "$f"
  set -- "$@" "$f"
done
"""
_BOOT = r"""
if command -v python3 >/dev/null 2>&1; then
  python3 -c "$UTMP_SCRIPT" boot "$(uname -r)" >/dev/null 2>&1
  set -- "$@" /run /run/utmp /var/log/wtmp
fi
if [ "$daemons" = 1 ]; then
  [ -x /usr/sbin/rsyslogd ] && setsid /usr/sbin/rsyslogd -n -iNONE </dev/null >/dev/null 2>&1 &
  [ -x /usr/sbin/cron ] && setsid /usr/sbin/cron -f </dev/null >/dev/null 2>&1 &
  # Their first writes (pid files, syslog's start line) belong to the baseline, not the session:
  # cron creates crond.reboot once its start-up is done.
  i=0
  while [ ! -e /run/crond.reboot ] && [ "$i" -lt 25 ]; do sleep 0.02; i=$((i + 1)); done
  set -- "$@" /run /var/log/syslog /var/log/messages /var/log/cron.log /run/crond.pid \
    /run/crond.reboot /run/rsyslogd.pid /dev
fi
"""
PREPARE_REALISM = _HOST_KEYS + _BOOT
# A sticky sandbox started again (a returning source): a fresh boot record and daemons, as after
# a reboot. $1: daemons (1/0), $2: UTMP_SCRIPT.
# /run is not a tmpfs in a container: what a boot would have cleared goes first.
RESTART_SCRIPT = (
    "daemons=$1 UTMP_SCRIPT=$2\nset --\nrm -f /run/crond.reboot /run/crond.pid\n"
    + _BOOT
    + "exit 0\n"
)

# utmp(5) as glibc lays it out on 64-bit Linux (384 bytes; 32-bit times for compatibility).
# `boot KERNEL`: a fresh /run/utmp with the boot and run-level records at the boot time the
# kernel reports (/proc/uptime), appended to wtmp too when later than its last record.
# `login USER HOST`: waits up to 2 s for USER's newest PTY session leader without a utmp entry
# and records it (utmp, wtmp, lastlog) as sshd's loginrec.c does; prints what it changed. lastlog
# waits (2 s at most) for the login shell, whose wrapper prints the previous login first.
UTMP_SCRIPT = r"""
import os, socket, struct, sys, time
F = "<h2xi32s4s32s256shhiii16s20s"
UTMP, WTMP, LASTLOG = "/run/utmp", "/var/log/wtmp", "/var/log/lastlog"
def rec(kind, pid, line, ident, user, host, when):
    addr = b""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            addr = socket.inet_pton(fam, host)
        except OSError:
            pass
    sec = int(when)
    return struct.pack(F, kind, pid, line.encode()[:32], ident.encode()[:4], user.encode()[:32],
                       host.encode()[:256], 0, 0, 0, sec, int((when - sec) * 1e6), addr, b"")
def records(path):
    try:
        data = open(path, "rb").read()
    except OSError:
        return []
    n = struct.calcsize(F)
    return [struct.unpack(F, data[i:i + n]) for i in range(0, len(data) - n + 1, n)]
def utmp_group():
    try:
        import grp
        return grp.getgrnam("utmp").gr_gid
    except (ImportError, KeyError):
        return 0
def write(path, data, append, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chown(path, 0, utmp_group())
def boot(kernel):
    when = time.time() - float(open("/proc/uptime").read().split()[0])
    data = rec(2, 0, "~", "~~", "reboot", kernel, when)
    data += rec(1, 53, "~", "~~", "runlevel", kernel, when + 8)
    write(UTMP, data, False, 0o664)
    last = max((r[9] for r in records(WTMP)), default=0)
    if when > last:
        write(WTMP, data, True, 0o664)
def candidates(uid, seen):
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in seen:
            continue
        try:
            st = os.stat("/proc/" + name)
            fields = open("/proc/%s/stat" % name).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tty, sid = int(fields[4]), int(fields[3])
        major, minor = (tty >> 8) & 0xFFF, (tty & 0xFF) | ((tty >> 12) & 0xFFF00)
        if st.st_uid == uid and sid == int(name) and 136 <= major <= 143:
            yield int(fields[19]), int(name), "pts/%d" % (minor + (major - 136) * 256)
def login(user, host):
    import pwd
    uid = pwd.getpwnam(user).pw_uid
    seen = {r[1] for r in records(UTMP) if r[0] == 7}
    deadline = time.time() + 2
    while True:
        found = sorted(candidates(uid, seen))
        if found or time.time() > deadline:
            break
        time.sleep(0.05)
    if not found:
        return 1
    _, pid, line = found[-1]
    now = time.time()
    entry = rec(7, pid, line, line[-4:], user, host, now)
    old = open(UTMP, "rb").read() if os.path.exists(UTMP) else b""
    n = struct.calcsize(F)
    slots = [old[i:i + n] for i in range(0, len(old) - n + 1, n)]
    ident = line[-4:].encode().ljust(4, b"\0")
    for i, r in enumerate(slots):
        kind, _, _, rid = struct.unpack(F, r)[:4]
        if rid == ident and kind in (5, 6, 7, 8):
            slots[i] = entry
            break
    else:
        slots.append(entry)
    write(UTMP, b"".join(slots), False, 0o664)
    write(WTMP, entry, True, 0o664)
    # lastlog after the login wrapper has printed the previous login ("-bash" runs by then);
    # a command with a PTY prints none, so nothing to wait for (and no helper left in ps).
    deadline = time.time() + 2
    while time.time() < deadline:
        try:
            cmdline = open("/proc/%d/cmdline" % pid, "rb").read()
        except OSError:
            break
        if b"exec -a -bash" not in cmdline:
            break
        time.sleep(0.01)
    ll = struct.pack("<i32s256s", int(now), line.encode(), host.encode()[:256])
    fd = os.open(LASTLOG, os.O_WRONLY | os.O_CREAT, 0o664)
    try:
        os.pwrite(fd, ll, uid * len(ll))
    finally:
        os.close(fd)
    for path in ("/run", UTMP, WTMP, LASTLOG):
        st = os.stat(path)
        print("%s\t%d\t%f" % (path, st.st_size, st.st_mtime))
    return 0
sys.exit(boot(sys.argv[2]) if sys.argv[1] == "boot" else login(sys.argv[2], sys.argv[3]))
"""

_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def restart_argv(daemons: bool) -> list[str]:
    """The root exec that makes a restarted sandbox look freshly booted (`RESTART_SCRIPT`)."""
    return ["/bin/sh", "-c", RESTART_SCRIPT, "sh", "1" if daemons else "0", UTMP_SCRIPT]


def login_record_argv(username: str, src_ip: str) -> list[str]:
    """The root exec that records a PTY login in utmp, wtmp and lastlog (as sshd does).

    `src_ip` comes from the socket (or a validated PROXY header), never from the client's bytes;
    it is checked again here because it lands in files the attacker reads.
    """
    if not _ADDRESS.fullmatch(src_ip):
        raise ValueError(f"not an address: {src_ip!r}")
    return ["/usr/bin/python3", "-c", UTMP_SCRIPT, "login", username, src_ip]


__all__ = [
    "HOST_KEY_NAMES",
    "PREPARE_REALISM",
    "UTMP_SCRIPT",
    "HostKeyFiles",
    "host_keys_payload",
    "login_record_argv",
    "restart_argv",
]
