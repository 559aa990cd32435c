"""The peers SandTrap is measured against, each started on 127.0.0.1 by the harness.

- OpenSSH + docker exec: Debian's sshd with a throwaway config and user, `ForceCommand docker exec
  -i <container> sh -c "$SSH_ORIGINAL_COMMAND"` (or `docker exec -it <container> bash -l` for a
  shell with a PTY) into one warm container with SandTrap's hardening.
- Cowrie (PyPI `cowrie`) in its own venv (bench/.venv-cowrie), run as `nobody` (it refuses root).
Every start registers its undo with the run's `Cleanup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.resources import (
    BENCH_LABEL,
    Cleanup,
    Run,
    free_port,
    reap_orphans,
    stop_tree,
    wait_port,
)
from sandtrap.config import SandboxConfig
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import LABEL_ROLE, blkio_device_for, container_body

PEER_USER = "stbench"
PEER_PASSWORD = "benchpass"  # noqa: S105 - a throwaway login, removed after the run
COWRIE_VENV = Path(__file__).resolve().parent / ".venv-cowrie"
# Debian's interpreter: the venv must be runnable by `nobody`, and pyenv builds under /root are not.
SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass(frozen=True)
class Peer:
    """A running SSH server the harness can log in to."""

    name: str
    port: int
    user: str
    password: str
    pid: int  # root of its process tree, for RSS
    container_id: str = ""  # the peer's one container, if it has one
    log: Path | None = None  # its own event log, where it has one (Cowrie's cowrie.json)


def container_running(container_id: str) -> bool:
    """Whether a container is still up (an engine restart elsewhere stops it)."""
    proc = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Running}}", container_id],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.stdout.strip() == "true"


async def _start_hardened(sensor: str, run_id: str, image: str, pids_limit: int) -> str:
    config = SandboxConfig(image=image, pids_limit=pids_limit)
    engine = Engine(config.docker_url)
    try:
        info = await engine.info()
        body = container_body(
            config,
            image=image,
            hostname="web-prod-01",
            sensor=sensor,
            created=datetime.now(UTC),
            blkio_device=blkio_device_for(Path(str(info.get("DockerRootDir", "/var/lib/docker")))),
        )
        # Not role=sandbox: SandTrap's reconciliation and retention must leave it alone.
        body["Labels"][LABEL_ROLE] = "bench-peer"
        body["Labels"][BENCH_LABEL] = run_id
        container_id = await engine.create(body, f"bench-{run_id}-openssh-peer")
        await engine.start(container_id)
        return container_id
    finally:
        await engine.close()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _user_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


def _remove_user() -> None:
    """Remove the throwaway user and end its processes first, by pid.

    Closing a client does not end its session here: `docker exec -i` outlives the sshd child
    that started it (the command in the container ignores stdin), and the orphaned shell is
    adopted by the harness (a child subreaper); userdel refuses while any of them lives.
    """
    uid = pwd.getpwnam(PEER_USER).pw_uid
    for _ in range(60):
        for pid in _user_pids(uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        reap_orphans()
        proc = subprocess.run(
            ["userdel", "--remove", PEER_USER], capture_output=True, check=False, timeout=60
        )
        if proc.returncode in (0, 6):  # 6: no such user
            return
        time.sleep(0.3)
    raise RuntimeError(f"userdel {PEER_USER}: {proc.stderr.decode(errors='replace').strip()}")


def start_openssh(run: Run, image: str, cleanup: Cleanup, sessions: int) -> Peer:
    """sshd on a free loopback port, forcing `docker exec` into one hardened container.

    The container's pids limit is raised to fit `sessions` concurrent execs (two processes each);
    every other hardening option is SandTrap's default.
    """
    pids = max(100, 3 * sessions + 20)
    container_id = asyncio.run(_start_hardened(run.sensor, run.run_id, image, pids))
    workdir = Path(tempfile.mkdtemp(prefix="bench-sshd-"))
    cleanup.push("sshd temp dir", lambda: shutil.rmtree(workdir, ignore_errors=True))
    if subprocess.run(["id", PEER_USER], capture_output=True, check=False).returncode == 0:
        raise RuntimeError(f"user {PEER_USER} exists already; remove it or finish the other run")
    _sh("useradd", "--create-home", "--shell", "/bin/sh", "--groups", "docker", PEER_USER)
    cleanup.push("peer user", _remove_user)
    subprocess.run(
        ["chpasswd"], input=f"{PEER_USER}:{PEER_PASSWORD}\n".encode(), check=True, timeout=30
    )
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_ed25519"))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    # A command runs as before; a shell request gets a login bash, with a TTY when sshd made one.
    force = (
        f'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then exec docker exec -i {container_id} sh -c '
        f'"$SSH_ORIGINAL_COMMAND"; elif [ -t 0 ]; then exec docker exec -it {container_id} '
        f"bash -l; else exec docker exec -i {container_id} bash -l; fi"
    )
    (workdir / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {workdir / 'host_ed25519'}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AllowUsers {PEER_USER}",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication no",
                "UsePAM yes",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "MaxStartups 400",  # bursts of 200 logins at once
                "MaxSessions 200",
                f"ForceCommand {force}",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(workdir / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "sshd.log").open("wb"),
        start_new_session=True,
    )
    cleanup.push("sshd", lambda: stop_tree(proc))
    if not wait_port(port, 20, lambda: proc.poll() is None):
        raise RuntimeError(f"sshd did not start: {(workdir / 'sshd.log').read_text()[-500:]}")
    return Peer("OpenSSH+docker exec", port, PEER_USER, PEER_PASSWORD, proc.pid, container_id)


def ensure_cowrie_venv(build: bool) -> Path | None:
    """bench/.venv-cowrie with Cowrie installed (built when `build`); None when unavailable."""
    cowrie = COWRIE_VENV / "bin" / "cowrie"
    if cowrie.exists():
        return cowrie
    if not build:
        return None
    python = str(SYSTEM_PYTHON) if SYSTEM_PYTHON.exists() else sys.executable
    print(f"building {COWRIE_VENV} (pip install cowrie; once) ...", flush=True)
    try:
        subprocess.run([python, "-m", "venv", str(COWRIE_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(COWRIE_VENV / "bin" / "pip"), "install", "-q", "cowrie"],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"cannot build the Cowrie venv: {exc}", file=sys.stderr)
        shutil.rmtree(COWRIE_VENV, ignore_errors=True)
        return None
    return cowrie if cowrie.exists() else None


def cowrie_version() -> str | None:
    pip = COWRIE_VENV / "bin" / "pip"
    if not pip.exists():
        return None
    out = subprocess.run(
        [str(pip), "show", "cowrie"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    return next((line.split()[1] for line in out.splitlines() if line.startswith("Version:")), None)


def start_cowrie(cowrie: Path, cleanup: Cleanup, user: str = "nobody") -> Peer:
    """Cowrie in the foreground as `user`, SSH only, on a free loopback port; state in a tempdir."""
    state = Path(tempfile.mkdtemp(prefix="bench-cowrie-"))
    cleanup.push("cowrie state dir", lambda: shutil.rmtree(state, ignore_errors=True))
    for sub in ("etc", "var/log/cowrie", "var/lib/cowrie/tty", "var/lib/cowrie/downloads"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Cowrie's default user database minus its `*:x:*` lines: root still logs in with any password
    # but root and 123456 (the other benchmarks), other names never do (bench/brute_bench.py).
    (state / "etc" / "userdb.txt").write_text("root:x:!root\nroot:x:!123456\nroot:x:*\n")
    (state / "etc" / "cowrie.cfg").write_text(
        f"[honeypot]\nhostname = svr04\netc_path = {state / 'etc'}\n"
        f"[ssh]\nlisten_endpoints = tcp:{port}:interface=127.0.0.1\n"
        "[telnet]\nenabled = false\n"
    )
    shutil.chown(state, user)
    for root, dirs, files in os.walk(state):
        for name in dirs + files:
            shutil.chown(Path(root) / name, user)
    env = {
        "PATH": f"{cowrie.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(state),
        "COWRIE_STDOUT": "yes",  # foreground (twistd -n), so the process tree is ours to stop
        "LANG": "C.UTF-8",
    }
    assignments = [f"{key}={value}" for key, value in env.items()]
    proc = subprocess.Popen(
        ["/usr/sbin/runuser", "-u", user, "--", "env", *assignments, str(cowrie), "start"],
        cwd=state,
        stdout=(state / "cowrie.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    cleanup.push("cowrie", lambda: stop_tree(proc))
    if not wait_port(port, 60, lambda: proc.poll() is None):
        raise RuntimeError(f"Cowrie did not start: {(state / 'cowrie.out').read_text()[-500:]}")
    log = state / "var" / "log" / "cowrie" / "cowrie.json"
    return Peer("Cowrie", port, "root", PEER_PASSWORD, proc.pid, log=log)
