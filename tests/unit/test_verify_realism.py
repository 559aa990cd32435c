"""Judging the realism check's view from inside (verify/realism.py); pure."""

from __future__ import annotations

from typing import Any

from sandtrap.verify.realism import judge, parse_sections

FP = "SHA256:abc"
SEEN = """
@@dockerenv
@@cgroup
12:pids:/
11:memory:/
@@pid1
/sbin/init
@@hostname
web-prod-03
@@daemons
/usr/sbin/rsyslogd -n -iNONE
/usr/sbin/cron -f
@@who
root     pts/0        Dec  3 08:31 (203.0.113.9)
@@last
root     pts/0        203.0.113.9      Thu Dec  3 08:31    gone - no logout
@@boot
system boot  Dec  3 07:54
@@hostkey
SHA256:abc
@@memtotal
268435456
@@swaptotal
0
@@nproc
2
@@cpuinfo
2
@@etime1
3
@@cowrieuname
Linux web-prod-03 6.1.0-13-amd64 #1 SMP PREEMPT_DYNAMIC Debian x86_64 GNU/Linux
"""


def _status(text: str, **kwargs: Any) -> dict[str, str]:
    options: dict[str, Any] = {
        "front_fingerprint": FP, "src_ip": "203.0.113.9", "memory_mb": 256, "lxcfs": True,
        "host_keys": "public",
    } | kwargs  # fmt: skip
    return {row.check: row.status for row in judge(parse_sections(text), **options)}


def test_a_server_like_view_has_no_failure() -> None:
    status = _status(SEEN)
    assert "FAIL" not in status.values(), status
    for check in ("/proc/1/cgroup", "PID 1", "who shows this login", "host key fingerprint",
                  "free: memory total", "cron and rsyslogd under PID 1"):  # fmt: skip
        assert status[check] == "PASS", check
    assert status["last shows this login"] == "INFO"  # gone - no logout: loginuid


def test_each_tell_we_hide_fails_when_it_shows() -> None:
    cases = [
        ("@@cgroup\n12:pids:/\n", "@@cgroup\n12:pids:/docker/" + "a" * 64 + "\n", "/proc/1/cgroup"),
        ("@@dockerenv\n", "@@dockerenv\n.dockerenv\n", "/.dockerenv, /.containerenv"),
        ("/sbin/init\n", "/sbin/docker-init -- sleep\n", "PID 1"),
        ("web-prod-03\n", "svr04\n", "host name"),
        ("/usr/sbin/cron -f\n", "", "cron and rsyslogd under PID 1"),
        ("(203.0.113.9)", "(10.0.0.1)", "who shows this login"),
        ("@@hostkey\nSHA256:abc", "@@hostkey\nSHA256:other", "host key fingerprint"),
        ("268435456", "25769803776", "free: memory total"),
        ("@@cpuinfo\n2", "@@cpuinfo\n1", "nproc agrees with /proc/cpuinfo"),
        ("@@etime1\n3", "@@etime1\n38108273000", "ps elapsed time of PID 1"),
        ("6.1.0-13-amd64", "3.2.0-4-amd64", "uname -a"),
    ]
    for old, new, check in cases:
        assert old in SEEN, old
        assert _status(SEEN.replace(old, new, 1))[check] == "FAIL", check
    assert _status(SEEN + "@@richard\n/home/richard\n")["Cowrie's users richard, phil"] == "FAIL"


def test_host_dependent_tells_warn_rather_than_fail() -> None:
    # Without LXCFS the host's memory shows: a set-up matter, said at start-up.
    status = _status(SEEN.replace("268435456", "25769803776"), lxcfs=False)
    assert status["free: memory total"] == "WARN"
    status = _status(
        SEEN.replace("@@hostkey\nSHA256:abc", "@@hostkey\nSHA256:x"), host_keys="image"
    )
    assert status["host key fingerprint"] == "WARN"


AGENT_TREE = """
@@loginshellppid
31
@@loginshellparent
sshd: root@pts/0
@@sshd
sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups
sshd: root@pts/0
@@listenerppid
0
"""


def test_the_agents_process_tree_passes_and_its_absence_fails_when_on() -> None:
    status = _status(SEEN + AGENT_TREE, agent=True)
    assert status["sshd listener and session processes"] == "PASS"
    assert status["login shell's parent"] == "PASS"
    assert status["sshd listener's parent"] == "WARN"  # the pool's exec: PPID 0, a known tell
    bare = _status(SEEN + "@@loginshellppid\n0\n", agent=True)
    assert bare["sshd listener and session processes"] == "FAIL"
    assert bare["login shell's parent"] == "FAIL"
    off = _status(SEEN + "@@loginshellppid\n0\n")
    assert off["sshd listener and session processes"] == "WARN"
    assert off["login shell's parent"] == "WARN"
