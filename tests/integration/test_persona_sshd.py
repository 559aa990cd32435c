"""Debian's real sshd and SandTrap's SSH front side by side on loopback, compared on the wire.

The real sshd is the reference: same host keys, and SandTrap's banner set to the installed
openssh-server's version. Everything is compared for equality; what may differ is listed once, in
KNOWN_DIFFERENCES, and mirrored in docs/fingerprinting.md (checked below).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sandtrap import events as ev
from sandtrap.config import Config
from sandtrap.ssh import SSHFront, start_ssh_server
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from tests.fakepool import running_pool

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
SSH_AUDIT = Path(sys.executable).parent / "ssh-audit"
DOCS = Path(__file__).parents[2] / "docs" / "fingerprinting.md"

# Everything compared here must be equal except these, each with its reason. Keys starting with
# "ssh-audit " name a top-level key of `ssh-audit -j`; the others name a probe below.
# docs/fingerprinting.md lists the same keys (checked by test_known_differences_are_documented).
KNOWN_DIFFERENCES: dict[str, str] = {
    "ssh-audit /target": "the two servers listen on different ports",
    "bad-ident close": "input after a bad identification line: sshd leaves it unread, so its close "
    "is a RST; asyncssh has read it, so SandTrap's close is a FIN",
}
AUDIT_ALLOWED = {key.split(" ", 1)[1] for key in KNOWN_DIFFERENCES if key.startswith("ssh-audit ")}

# What the test's sshd_config sets besides paths. Debian's defaults for everything visible before
# authentication, except UsePAM no: with PAM each failed password costs ~2 s (SandTrap's
# `auth_failure_delay_seconds`, covered in test_ssh_fake.py), which would make this test slow.
SSHD_SETTINGS = """\
ListenAddress 127.0.0.1
UsePAM no
KbdInteractiveAuthentication no
PasswordAuthentication yes
MaxAuthTries 6
LoginGraceTime 120
Subsystem sftp /usr/lib/openssh/sftp-server
"""

CLIENT_IDENT = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"
SSH_OPTS = [
    "-F",
    "/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "ConnectTimeout=10",
]


def debian_to_banner(version: str) -> str:
    """dpkg's `1:9.2p1-2+deb12u10` -> sshd's `OpenSSH_9.2p1 Debian-2+deb12u10`."""
    upstream, _, revision = version.split(":", 1)[-1].partition("-")
    return f"OpenSSH_{upstream} Debian-{revision}"


def test_debian_to_banner() -> None:
    assert debian_to_banner("1:9.2p1-2+deb12u10") == "OpenSSH_9.2p1 Debian-2+deb12u10"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ListSink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)


@dataclass(frozen=True)
class RealSSHD:
    port: int
    version: str


@pytest.fixture(scope="module")
def host_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SandTrap's host keys (RSA 3072, ECDSA P-256, Ed25519); the real sshd loads the same files."""
    keys = tmp_path_factory.mktemp("keys")
    load_or_create_host_keys(keys)
    return keys


@pytest.fixture(scope="module")
def real_sshd(tmp_path_factory: pytest.TempPathFactory, host_keys_dir: Path) -> Iterator[RealSSHD]:
    if not SSHD.exists():
        pytest.fail(f"{SSHD} is missing: install openssh-server (the project's scripts do)")
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "openssh-server"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # sshd's privilege-separation directory; Debian's package creates it at boot.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    work = tmp_path_factory.mktemp("sshd")
    port = free_port()
    keys = "".join(
        f"HostKey {host_keys_dir / name}\n"
        for name in ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key")
    )
    config = work / "sshd_config"
    config.write_text(f"Port {port}\n{keys}PidFile {work / 'sshd.pid'}\n{SSHD_SETTINGS}")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        # -D -e: sshd logs to stderr; this line means it is accepting.
        deadline = time.monotonic() + 10
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if not line or "Server listening on" in line:
                break
        if "Server listening on" not in lines[-1]:
            pytest.fail("sshd did not start:\n" + "".join(lines))
        yield RealSSHD(port, debian_to_banner(version))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
async def sandtrap_port(
    tmp_path: Path, host_keys_dir: Path, real_sshd: RealSSHD
) -> AsyncIterator[int]:
    shutil.copytree(host_keys_dir, tmp_path / "keys")
    config = Config.model_validate(
        {
            "ssh": {
                "listen": ["127.0.0.1:0"],
                "banner_version": real_sshd.version,
                "auth_failure_delay_seconds": 0,
            },
            "auth": {"credentials": []},
            "storage": {"data_dir": str(tmp_path)},
        }
    )
    sink = ListSink()
    async with running_pool(config, sink) as pool:
        front: SSHFront = await start_ssh_server(config, pool, sink)
        try:
            yield front.ports[0]
        finally:
            await front.wait_closed()


# --- ssh-audit ---------------------------------------------------------------------------------


def json_diff(real: Any, ours: Any, path: str = "") -> list[str]:
    """Paths (`/key/0/...`) where two JSON documents differ."""
    if isinstance(real, dict) and isinstance(ours, dict):
        out = []
        for key in sorted(set(real) | set(ours)):
            sub = f"{path}/{key}"
            if key not in real or key not in ours:
                out.append(sub)
            else:
                out += json_diff(real[key], ours[key], sub)
        return out
    if isinstance(real, list) and isinstance(ours, list) and len(real) == len(ours):
        return [
            p
            for i, (a, b) in enumerate(zip(real, ours, strict=True))
            for p in json_diff(a, b, f"{path}/{i}")
        ]
    return [] if real == ours else [path]


async def ssh_audit(port: int) -> dict[str, Any]:
    # The rate test measures connections per second, a timing property documented separately.
    proc = await asyncio.create_subprocess_exec(
        str(SSH_AUDIT),
        "-j",
        "--skip-rate-test",
        "-t",
        "10",
        "-p",
        str(port),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    try:
        result: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ssh-audit output is not JSON: {stdout[:500]!r} {stderr[:500]!r}")
    return result


async def test_ssh_audit_matches_real_sshd(real_sshd: RealSSHD, sandtrap_port: int) -> None:
    if not SSH_AUDIT.exists():
        pytest.fail("ssh-audit is missing: pip install -e '.[dev]'")
    real, ours = await asyncio.gather(ssh_audit(real_sshd.port), ssh_audit(sandtrap_port))
    assert real["banner"]["raw"] == "SSH-2.0-" + real_sshd.version
    # The lists the issue names, first, for a readable failure.
    for key in ("banner", "kex", "key", "enc", "mac", "compression"):
        assert ours[key] == real[key], key
    differing = {"/" + path.split("/")[1] for path in json_diff(real, ours)}
    assert differing <= AUDIT_ALLOWED, sorted(differing - AUDIT_ALLOWED)
    gex = [kex for kex in real["kex"] if kex["algorithm"].startswith("diffie-hellman-group-exch")]
    assert gex and gex[0].get("keysize", 0) >= 2048


def test_known_differences_are_documented() -> None:
    section = DOCS.read_text().split("## SSH front", 1)[1].split("\n## ", 1)[0]
    for key in KNOWN_DIFFERENCES:
        assert f"`{key}`" in section, key


# --- raw-socket probes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KexInit:
    ident: bytes
    packet_length: int
    padding_length: int
    # The payload after the message byte and the 16-byte random cookie.
    lists: bytes


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += _recv_exact(sock, 1)
    return data


def probe_kexinit(port: int) -> KexInit:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(CLIENT_IDENT)
        ident = _read_line(sock)
        packet_length, padding_length = struct.unpack(">IB", _recv_exact(sock, 5))
        body = _recv_exact(sock, packet_length - 1)
        payload = body[: packet_length - 1 - padding_length]
        assert payload[0] == 20  # SSH_MSG_KEXINIT
        return KexInit(ident, packet_length, padding_length, payload[17:])


def probe_reply(port: int, data: bytes) -> tuple[bytes, bytes, str]:
    """(banner line, everything after it, "eof" or "reset") for `data` sent after the banner."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        banner = _read_line(sock)
        sock.sendall(data)
        rest = b""
        try:
            while chunk := sock.recv(4096):
                rest += chunk
        except ConnectionResetError:
            return banner, rest, "reset"
        return banner, rest, "eof"


async def test_kexinit_byte_for_byte(real_sshd: RealSSHD, sandtrap_port: int) -> None:
    real, ours = await asyncio.gather(
        asyncio.to_thread(probe_kexinit, real_sshd.port),
        asyncio.to_thread(probe_kexinit, sandtrap_port),
    )
    assert ours.ident == real.ident == f"SSH-2.0-{real_sshd.version}\r\n".encode()
    assert ours.lists == real.lists
    assert (ours.packet_length, ours.padding_length) == (real.packet_length, real.padding_length)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", b"Invalid SSH identification string."),
        (b"SSH-1.5-x\r\n", b"Protocol major versions differ."),
    ],
)
async def test_bad_identification_reply(
    real_sshd: RealSSHD, sandtrap_port: int, data: bytes, text: bytes
) -> None:
    real, ours = await asyncio.gather(
        asyncio.to_thread(probe_reply, real_sshd.port, data),
        asyncio.to_thread(probe_reply, sandtrap_port, data),
    )
    assert ours[0] == real[0]
    # sshd writes the text, then "\r\n", then closes; with unread input that close is a reset,
    # which can discard the not yet sent "\r\n". Compare without it, then ours exactly.
    assert real[1].rstrip(b"\r\n") == text
    assert ours[1] == text + b"\r\n"
    if ours[2] != real[2]:
        assert data.count(b"\n") > 1 and "bad-ident close" in KNOWN_DIFFERENCES, (real, ours)


# --- OpenSSH client: kex, EXT_INFO, auth methods -------------------------------------------------

_VERBOSE_KEPT = re.compile(
    r"^debug1: (Remote protocol version|kex: |kex_input_ext_info|"
    r"Authentications that can continue|SSH2_MSG_KEX_DH_GEX_REQUEST)"
)


async def openssh_verbose(port: int, kex: str | None) -> list[str]:
    """The `ssh -v` lines that describe the server, for a login that offers no credentials."""
    extra = ["-o", f"KexAlgorithms={kex}"] if kex else []
    proc = await asyncio.create_subprocess_exec(
        "ssh",
        "-v",
        *SSH_OPTS,
        *extra,
        "-p",
        str(port),
        "nobody@127.0.0.1",
        "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    lines = stderr.decode(errors="replace").splitlines()
    kept = [line for line in lines if _VERBOSE_KEPT.match(line)]
    kept += [line.split(": ", 1)[1] for line in lines if "Permission denied" in line]
    return kept


@pytest.mark.parametrize(
    "kex",
    [
        None,
        "sntrup761x25519-sha512@openssh.com",
        "sntrup761x25519-sha512",
        "diffie-hellman-group-exchange-sha256",
    ],
)
async def test_openssh_client_sees_the_same(
    real_sshd: RealSSHD, sandtrap_port: int, kex: str | None
) -> None:
    real, ours = await asyncio.gather(
        openssh_verbose(real_sshd.port, kex), openssh_verbose(sandtrap_port, kex)
    )
    assert ours == real
    assert "Permission denied (publickey,password)." in real
    assert "debug1: Authentications that can continue: publickey,password" in real
    assert any(line.startswith("debug1: kex: algorithm: " + (kex or "")) for line in real)


# --- MaxAuthTries ---------------------------------------------------------------------------------


class _WrongPasswords(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.attempts = 0

    def password_auth_requested(self) -> str:
        self.attempts += 1
        return f"wrong-{self.attempts}"


async def too_many_failures(port: int) -> tuple[int, str, str, int]:
    client = _WrongPasswords()
    with pytest.raises(asyncssh.DisconnectError) as info:
        await asyncssh.connect(
            "127.0.0.1",
            port,
            username="nobody",
            client_factory=lambda: client,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
            kex_algs=["curve25519-sha256"],
        )
    return info.value.code, info.value.reason, info.value.lang, client.attempts


async def test_too_many_auth_failures(real_sshd: RealSSHD, sandtrap_port: int) -> None:
    real, ours = await asyncio.gather(
        too_many_failures(real_sshd.port), too_many_failures(sandtrap_port)
    )
    assert ours == real
    assert real[:3] == (asyncssh.DISC_PROTOCOL_ERROR, "Too many authentication failures", "")
