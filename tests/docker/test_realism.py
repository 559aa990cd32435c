"""Looking like a server from the inside (issue 15), against the real engine and target image.

What a login sees that container- and honeypot-detection tools read: cgroups, PID 1, daemons,
host keys, utmp/wtmp, /proc's view of memory and CPUs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pexpect
import pytest
from click.testing import CliRunner

from sandtrap.cli import cli
from sandtrap.sandbox.hardening import is_lxcfs_serving, lxcfs_mounts
from tests.conftest import IMAGE
from tests.docker.service import (
    SSH_OPTS,
    RunningService,
    remove_sensor_containers,
    service_config,
)
from tests.docker.test_pool import Sink, make_config, running_pool
from tests.pool_battery import peer, sh

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture
def sensor() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    remove_sensor_containers(name)


async def test_cgroups_name_no_container(sensor: str, tmp_path: Path) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1})
    async with running_pool(config, Sink()) as pool, asyncio.timeout(90):
        await pool.wait_warm()
        sandbox = await pool.allocate(peer(1))
        for path in ("/proc/1/cgroup", "/proc/self/cgroup"):
            code, out = await sh(sandbox, f"cat {path}")
            assert code == 0 and out.strip(), out
            # Every controller at the namespace's root: no /docker/<id>, no host path.
            assert {line.split(":", 2)[2] for line in out.splitlines()} == {"/"}, out
        # The namespace is the sandbox's own (the host's is not the same inode).
        code, out = await sh(sandbox, "readlink /proc/self/ns/cgroup")
        assert out.strip() != Path("/proc/self/ns/cgroup").readlink().as_posix(), out


def _docker_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", "sandtrap.test=realism", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_init_runs_a_command_and_exits_with_its_status() -> None:
    assert _docker_run(IMAGE, "sh", "-c", "exit 7").returncode == 7
    missing = _docker_run(IMAGE, "/no/such/command")
    assert missing.returncode == 127 and "/no/such/command" in missing.stderr
    killed = _docker_run(IMAGE, "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + 9
    # PID 1 is still /sbin/init, the command its child; orphans are reaped meanwhile.
    tree = _docker_run(IMAGE, "sh", "-c", "(sleep 0.1 &); sleep 0.3; ps -o pid=,ppid=,stat=,args=")
    assert tree.returncode == 0, tree.stderr
    rows = [line.split(None, 3) for line in tree.stdout.splitlines()]
    assert rows[0][0] == "1" and rows[0][3].startswith("/sbin/init sh -c")
    assert all(stat[0] != "Z" for _, _, stat, _ in rows), tree.stdout


def test_init_passes_a_stop_to_its_command() -> None:
    name = f"realism-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--label", "sandtrap.test=realism",
         "--network", "none", IMAGE, "sleep", "600"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    try:
        began = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True, check=True)
        assert time.monotonic() - began < 10  # not the 20 s kill: sleep got the SIGTERM
        code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert code == str(128 + 15)
    finally:
        subprocess.run(["docker", "rm", "-f", started.stdout.strip()], capture_output=True)


def test_init_without_a_command_ignores_signals_from_inside() -> None:
    done = _docker_run(
        "--entrypoint", "/bin/sh", IMAGE, "-c", "/sbin/init & sleep 0.3; kill -TERM $!; "
        "sleep 0.3; kill -0 $! && echo still-running",
    )  # fmt: skip
    assert "still-running" in done.stdout, done.stderr


@pytest.fixture(scope="module")
def honeypot(tmp_path_factory: pytest.TempPathFactory, lxcfs: Path) -> Iterator[RunningService]:
    """The whole service, its gate included, with LXCFS."""
    config = service_config(
        tmp_path_factory.mktemp("var"),
        pool={"size": 1},
        sandbox={"lxcfs_dir": str(lxcfs)},
        auth={
            "credentials": [
                {"username": "root", "password": "123456"},
                {"username": "oracle", "password": "*"},
                {"username": "admin", "password": "*"},
            ]
        },
    )
    running = RunningService(config).start()
    running.call(running.service.pool.wait_warm)
    yield running
    running.stop()
    remove_sensor_containers(config.sensor)


def _fingerprints(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.strip()]


def test_a_login_sees_the_fronts_host_keys_and_itself_in_utmp(honeypot: RunningService) -> None:
    script = (
        "sleep 1.5; echo WHO; who; echo LAST; last -n 3 -i; echo BOOT; who -b; echo KEYS; "
        "for t in rsa ecdsa ed25519; do ssh-keygen -lf /etc/ssh/ssh_host_${t}_key.pub; done; "
        "echo MODES; stat -c '%a %U %n' /etc/ssh/ssh_host_*; echo FREE; free -m; "
        "echo PS; ps -eo ppid=,args="
    )
    done = honeypot.ssh(script, extra=["-tt"])
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode().replace("\r\n", "\n")
    sections = _sections(out)
    # who and last name this login with its source address, on a pseudo-terminal.
    assert any(
        line.startswith("root ") and "pts/" in line and "(127.0.0.1)" in line
        for line in sections["WHO"]
    ), sections["WHO"]
    # `last` says "gone - no logout", not "still logged in": it compares /proc/PID/loginuid,
    # which a sandbox cannot set (no CAP_AUDIT_CONTROL; docs/fingerprinting.md).
    assert sections["LAST"][0].split()[:3] == ["root", sections["WHO"][0].split()[1], "127.0.0.1"]
    assert sections["BOOT"][0].strip().startswith("system boot")
    keys = honeypot.config.storage.data_dir / "keys"
    front = [
        subprocess.run(
            ["ssh-keygen", "-lf", str(keys / f"ssh_host_{kind}_key.pub")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for kind in ("rsa", "ecdsa", "ed25519")
    ]
    assert _fingerprints("\n".join(sections["KEYS"])) == _fingerprints("".join(front))
    assert all(line.endswith(")") and " root@" in line for line in sections["KEYS"])
    modes = {line.split()[2]: line.split()[0] for line in sections["MODES"]}
    assert modes["/etc/ssh/ssh_host_ed25519_key"] == "600"
    assert modes["/etc/ssh/ssh_host_ed25519_key.pub"] == "644"
    # Through the gate too, LXCFS's binds pass: the sandbox's own memory.
    assert sections["FREE"][1].split()[:2] == ["Mem:", "256"], sections["FREE"]
    # cron and rsyslogd run as systemd would start them, children of PID 1.
    daemons = {line.split(None, 1)[1]: line.split()[0] for line in sections["PS"]}
    assert daemons.get("/usr/sbin/cron -f") == "1", sections["PS"]
    assert daemons.get("/usr/sbin/rsyslogd -n -iNONE") == "1", sections["PS"]


def _sections(out: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.isupper() and line.isalpha():
            current = line
            sections[current] = []
        elif current and line.strip():
            sections[current].append(line)
    return sections


@pytest.fixture(scope="module")
def lxcfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Our own LXCFS on a private mount point (make test-tools installs the package)."""
    tmp_path = tmp_path_factory.mktemp("lxcfs")
    mount = tmp_path / "lxcfs"
    mount.mkdir()
    proc = subprocess.Popen(
        ["lxcfs", "-f", "-p", str(tmp_path / "lxcfs.pid"), str(mount)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not is_lxcfs_serving(str(mount)):
            assert proc.poll() is None and time.monotonic() < deadline, "lxcfs did not start"
            time.sleep(0.1)
        yield mount
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if os.path.ismount(mount):  # lxcfs unmounts on SIGTERM; this is for a crashed one
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


async def test_lxcfs_gives_the_sandbox_its_own_memory(
    sensor: str, tmp_path: Path, lxcfs: Path
) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1}, sandbox={"lxcfs_dir": str(lxcfs)})
    async with running_pool(config, Sink()) as pool, asyncio.timeout(90):
        await pool.wait_warm()
        sandbox = await pool.allocate(peer(1))
        mounts = json.loads(_docker_cli("inspect", sandbox.id))[0]["HostConfig"]["Mounts"]
        assert mounts == lxcfs_mounts(str(lxcfs))
        code, out = await sh(sandbox, "free -b | awk '/^Mem:/ {print $2} /^Swap:/ {print $2}'")
        assert code == 0 and out.split() == [str(256 * 1024 * 1024), "0"], out
        # nproc and /proc/cpuinfo agree (lxcfs without --enable-cfs shows the cpuset's CPUs).
        code, out = await sh(sandbox, "nproc; grep -c ^processor /proc/cpuinfo")
        assert code == 0 and len(set(out.split())) == 1, out
        # /proc/uptime stays the kernel's, so ps's elapsed times stay sane (no huge day counts).
        code, out = await sh(sandbox, "ps -o etimes= -p 1")
        assert code == 0 and 0 <= int(out) < 3600, out


async def test_without_lxcfs_sandboxes_still_work_and_startup_says_so(
    sensor: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    absent = tmp_path / "no-lxcfs"
    config = make_config(sensor, tmp_path, pool={"size": 1}, sandbox={"lxcfs_dir": str(absent)})
    with caplog.at_level(logging.WARNING, logger="sandtrap.sandbox.pool"):
        async with running_pool(config, Sink()) as pool, asyncio.timeout(90):
            await pool.wait_warm()
            sandbox = await pool.allocate(peer(1))
            code, out = await sh(sandbox, "echo alive")
            assert (code, out.strip()) == (0, "alive")
            mounts = json.loads(_docker_cli("inspect", sandbox.id))[0]["HostConfig"].get("Mounts")
            assert mounts in (None, [])
    assert not absent.exists()  # the engine created nothing on the host
    assert any("LXCFS is not running" in r.getMessage() for r in caplog.records)


def _docker_cli(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_verify_realism_sees_no_tell_we_mean_to_hide(tmp_path: Path, lxcfs: Path) -> None:
    """`sandtrap verify-realism` end to end (CI): a real service, a real login, no FAIL row."""
    config = tmp_path / "config.yaml"
    config.write_text(f"sandbox:\n  image: {IMAGE}\n  network: none\n  lxcfs_dir: {lxcfs}\n")
    # In-process (CliRunner), so coverage sees the check's runner.
    done = CliRunner().invoke(cli, ["verify-realism", "--json", "--config", str(config)])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    rows = {row["check"]: row for row in map(json.loads, lines)}
    print(done.stdout)  # each check with what it saw, in the CI log
    assert done.exit_code == 0, (
        done.stderr[-2000:],
        [r for r in rows.values() if r["status"] == "FAIL"],
    )
    for check in ("/proc/1/cgroup", "who shows this login", "host key fingerprint",
                  "free: memory total", "cron and rsyslogd under PID 1", "PID 1"):  # fmt: skip
        assert rows[check]["status"] == "PASS", rows[check]


async def test_a_restarted_sticky_sandbox_runs_its_daemons_again(
    sensor: str, tmp_path: Path
) -> None:
    config = make_config(sensor, tmp_path, pool={"size": 1, "sticky": True})
    async with running_pool(config, Sink()) as pool, asyncio.timeout(120):
        await pool.wait_warm()
        first = await pool.allocate(peer(1, "198.51.100.7"))
        await pool.release(first, peer(1, "198.51.100.7"))
        again = await pool.allocate(peer(2, "198.51.100.7"))
        assert again.id == first.id
        code, out = await sh(again, "ps -eo ppid=,args= | awk '$1 == 1'; who -b")
        assert code == 0 and "/usr/sbin/cron -f" in out and "rsyslogd" in out, out
        assert "system boot" in out


def test_a_users_login_is_recorded_under_its_name(honeypot: RunningService) -> None:
    done = honeypot.ssh("sleep 1.5; who", user="oracle", password="anything", extra=["-tt"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().replace("\r\n", "\n").splitlines()
    assert any(line.startswith("oracle ") and "(127.0.0.1)" in line for line in lines), lines


def test_a_shell_login_prints_the_previous_login_as_sshd_does(honeypot: RunningService) -> None:
    # admin's last login in the image's fake past, as lastlog has it.
    seen = _docker_run("--entrypoint", "lastlog", IMAGE, "-u", "admin").stdout.splitlines()[1]
    _user, _port, host, *when = seen.split()
    day, month, date, clock, _zone, year = when
    expected = f"Last login: {day} {month} {int(date):2d} {clock} {year} from {host}"
    argv = ["-p", "x", "ssh", "-tt", "-p", str(honeypot.port), *SSH_OPTS, "admin@127.0.0.1"]
    child = pexpect.spawn("sshpass", argv, timeout=30, dimensions=(30, 100))
    try:
        child.expect(re.escape(expected) + "\r\n")
        child.expect(r"admin@[\w-]+:~\$ ")
        child.sendline("sleep 2.5; lastlog -u admin | tail -n 1")
        child.expect(r"pts/\d+ +127\.0\.0\.1 ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    # root never logged in on this image: no line, as sshd prints none.
    done = honeypot.ssh(None, stdin=b"sleep 1; exit\n", extra=["-tt"])
    assert b"The programs included with the Debian" in done.stdout, done.stdout[-500:]
    assert b"Last login" not in done.stdout


def _image_mtimes(paths: list[str]) -> dict[str, int]:
    out = _docker_run("--entrypoint", "stat", IMAGE, "-c", "%Y %n", *paths).stdout
    return {name: int(t) for t, _, name in (line.partition(" ") for line in out.splitlines())}


def _started_at(container_id: str) -> float:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", container_id],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    return datetime.fromisoformat(out[:26].rstrip("Z") + "+00:00").timestamp()


async def test_the_images_logs_name_this_host_and_keep_their_times(
    sensor: str, tmp_path: Path
) -> None:
    """The fake past was written under the build's host name: preparation makes it this
    sandbox's, in every log file, and leaves each file's modification time as it was."""
    built = (
        await asyncio.to_thread(
            subprocess.run,
            ["docker", "image", "inspect", "-f",
             '{{index .Config.Labels "sandtrap.log-hostname"}}', IMAGE],
            capture_output=True, text=True, timeout=30, check=True,
        )
    ).stdout.strip()  # fmt: skip
    assert built, "the target image names the host its logs were written on"
    config = make_config(sensor, tmp_path, pool={"size": 1})
    async with running_pool(config, Sink()) as pool, asyncio.timeout(90):
        await pool.wait_warm()
        sandbox = await pool.allocate(peer(1))
        code, out = await sh(sandbox, f"grep -rlsF -- ' {built} ' /var/log | wc -l")
        assert code == 0 and out.strip() == "0", out
        code, out = await sh(sandbox, f"grep -rlsF -- ' {sandbox.hostname} ' /var/log")
        logs = out.split()
        assert code == 0 and len(logs) >= 2, out
        code, out = await sh(sandbox, "stat -c '%Y %n' " + " ".join(logs))
        ours = {name: int(t) for t, _, name in (line.partition(" ") for line in out.splitlines())}
        before = await asyncio.to_thread(_image_mtimes, logs)
        started = await asyncio.to_thread(_started_at, sandbox.id)
    kept = [name for name in logs if ours[name] == before[name]]
    # Each file keeps the image's time, unless a daemon of this sandbox wrote to it since.
    assert len(kept) >= 2, (ours, before)
    assert all(ours[n] >= started - 1 for n in logs if n not in kept), (ours, before, started)
