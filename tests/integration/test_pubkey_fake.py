"""Public-key capture and the key policy through the real SSH front (fake engine): asyncssh and
OpenSSH `ssh -i` clients, the latter signing with publickey-hostbound-v00@openssh.com."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh

from sandtrap import events as ev
from sandtrap.pubkeys import parse_key_line
from tests.integration.test_ssh_fake import Start, host_keys_dir, start

__all__ = ["host_keys_dir", "start"]

_OPENSSH_KEY_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "PasswordAuthentication=no",
    "-o",
    "KbdInteractiveAuthentication=no",
]


def _keygen(path: Path) -> tuple[str, str]:
    """A new ed25519 key at `path`: its .pub line and the fingerprint ssh-keygen -l prints."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bot@c2", "-f", str(path)],
        check=True,
    )
    listed = subprocess.run(
        ["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, check=True
    )
    return Path(f"{path}.pub").read_text().strip(), listed.stdout.split()[1]


def _ssh_i(port: int, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-vvv", "-p", str(port), *_OPENSSH_KEY_OPTS, "-i", str(key)]
    argv += ["root@127.0.0.1", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


async def test_asyncssh_second_key_accepted_after_offers(start: Start) -> None:
    h = await start(auth={"accept_keys_after_offers": 2, "credentials": []})
    first = asyncssh.generate_private_key("ssh-ed25519")
    second = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    async with await h.connect(client_keys=[first, second], password=None) as conn:
        assert (await conn.run("echo in")).stdout == "in\n"
    await h.sink.wait_for(ev.SessionClosed)
    (failed,) = h.sink.of(ev.AuthFailed)
    assert failed.key_fingerprint == first.get_fingerprint("sha256")
    assert (
        failed.key
        == first.export_public_key().decode().split()[0]
        + " "
        + (first.export_public_key().decode().split()[1])
    )
    assert failed.reason == "public key refused"
    (success,) = h.sink.of(ev.AuthSuccess)
    assert success.method == "publickey"
    assert success.key_type == "ecdsa-sha2-nistp256"
    assert success.key_fingerprint.startswith("SHA256:")
    assert success.key_fingerprint == second.get_fingerprint("sha256")
    assert success.key.split()[:2] == second.export_public_key().decode().split()[:2]
    assert success.reason == "accept_keys_after_offers"
    record = ev.to_record(success, "s")
    assert record["key"].startswith("ecdsa-sha2-nistp256 AAAA")


async def test_openssh_key_listed_logs_in_through_hostbound(start: Start, tmp_path: Path) -> None:
    line, fingerprint = _keygen(tmp_path / "id")
    # The pure parser (sandbox/forensics.py uses it) agrees with ssh-keygen.
    parsed = parse_key_line(line)
    assert parsed is not None
    assert (parsed.fingerprint, parsed.comment) == (fingerprint, "bot@c2")
    h = await start(auth={"accepted_key_fingerprints": [fingerprint]})
    result = await asyncio.to_thread(_ssh_i, h.port, tmp_path / "id", "echo keyed")
    assert "using publickey-hostbound-v00@openssh.com" in result.stderr
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "keyed\n"
    await h.sink.wait_for(ev.SessionClosed)
    assert not h.sink.of(ev.AuthFailed)
    (success,) = h.sink.of(ev.AuthSuccess)
    assert (success.key_type, success.key_fingerprint) == ("ssh-ed25519", fingerprint)
    # The wire carries no comment: the key is type and blob, as ssh-keygen wrote them.
    assert success.key == " ".join(line.split()[:2])
    assert success.reason == "listed key"


async def test_openssh_refused_key_recorded(start: Start, tmp_path: Path) -> None:
    line, _ = _keygen(tmp_path / "id")
    h = await start()
    result = await asyncio.to_thread(_ssh_i, h.port, tmp_path / "id", "true")
    assert result.returncode == 255
    await h.sink.wait_for(ev.SessionClosed)
    (failed,) = h.sink.of(ev.AuthFailed)
    assert failed.key == " ".join(line.split()[:2])
    assert failed.reason == "public key refused"
    assert not h.sink.of(ev.AuthSuccess)


async def test_accepted_key_without_signature_is_a_failure(start: Start) -> None:
    """A client that learns a key is accepted but cannot sign (key probing) has not logged in."""
    h = await start(auth={"accept_public_keys": True})
    key = asyncssh.generate_private_key("ssh-ed25519")
    keypair = asyncssh.load_keypairs([key])[0]

    sign = keypair.sign

    # The query succeeds; the signed request carries a signature of other data. Then the password.
    keypair.sign = lambda data: sign(b"not the request" + data)  # type: ignore[method-assign]

    class Mismatched(asyncssh.SSHClient):
        offered = False

        def public_key_auth_requested(self) -> asyncssh.SSHKeyPair | None:
            if self.offered:
                return None
            self.offered = True
            return keypair

    async with await h.connect(client_factory=Mismatched) as conn:
        assert (await conn.run("echo pw")).stdout == "pw\n"
    await h.sink.wait_for(ev.SessionClosed)
    (failed,) = h.sink.of(ev.AuthFailed)
    assert failed.key_fingerprint == key.get_fingerprint("sha256")
    assert failed.reason == "public key accepted, no valid signature"
    (success,) = h.sink.of(ev.AuthSuccess)
    assert success.method == "password"
