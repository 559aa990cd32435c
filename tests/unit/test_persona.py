"""Persona data, option translation, KEXINIT parsing and HASSH, host keys."""

from __future__ import annotations

import hashlib
import stat
import struct
from pathlib import Path

import asyncssh
import pytest

from sandtrap.config import SSHConfig
from sandtrap.ssh.connection import parse_kexinit
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from sandtrap.ssh.persona import DEBIAN12, hassh, persona_for, server_options


def test_debian12_identification() -> None:
    assert DEBIAN12.identification == "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10"
    assert DEBIAN12.auth_methods == ("publickey", "password")
    assert DEBIAN12.max_auth_tries == 6
    assert DEBIAN12.login_grace_seconds == 120.0
    assert DEBIAN12.wire_kex_algs[-1] == "kex-strict-s-v00@openssh.com"
    assert "ext-info-s" not in DEBIAN12.wire_kex_algs


def test_config_overrides_persona() -> None:
    persona = persona_for(
        SSHConfig(
            banner_version="OpenSSH_9.2p1 Debian-2+deb12u7",
            max_auth_tries=3,
            login_grace_seconds=30,
        )
    )
    assert persona.identification == "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7"
    assert persona.max_auth_tries == 3
    assert persona.login_grace_seconds == 30
    assert persona_for(SSHConfig()).software_version == DEBIAN12.software_version


def test_server_options_keep_sshd_order() -> None:
    options = server_options(DEBIAN12, [])
    assert options["server_version"] == DEBIAN12.software_version
    assert options["encryption_algs"] == list(DEBIAN12.encryption_algs)
    assert options["mac_algs"] == list(DEBIAN12.mac_algs)
    # Whatever asyncssh cannot offer is left out, the rest keeps sshd's order.
    kex = options["kex_algs"]
    assert kex == [alg for alg in DEBIAN12.kex_algs if alg in kex]
    assert "curve25519-sha256" in kex
    assert options["kbdint_auth"] is False
    assert options["agent_forwarding"] is False
    assert options["x11_forwarding"] is False
    assert options["line_editor"] is False
    assert options["encoding"] is None


def _name_list(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def test_parse_kexinit_and_hassh() -> None:
    lists = [
        "k1,k2",
        "ssh-ed25519",
        "aes128-ctr",
        "aes256-ctr",
        "hmac-sha2-256",
        "hmac-sha1",
        "none",
        "zlib",
        "",
        "",
    ]
    payload = bytes([20]) + b"\x00" * 16 + b"".join(_name_list(item) for item in lists) + b"\0" * 5
    kexinit = parse_kexinit(payload)
    assert kexinit.kex == "k1,k2"
    assert kexinit.encryption == "aes128-ctr"
    assert kexinit.mac == "hmac-sha2-256"
    assert kexinit.compression == "none"
    digest, algorithms = hassh(kexinit.kex, kexinit.encryption, kexinit.mac, kexinit.compression)
    assert algorithms == "k1,k2;aes128-ctr;hmac-sha2-256;none"
    assert digest == hashlib.md5(algorithms.encode(), usedforsecurity=False).hexdigest()
    with pytest.raises(ValueError, match="truncated"):
        parse_kexinit(payload[:30])
    with pytest.raises(ValueError, match="not a KEXINIT"):
        parse_kexinit(b"\x15" + payload[1:])


def test_host_keys_generated_once_with_mode_0600(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    first = load_or_create_host_keys(keys_dir)
    assert [key.get_algorithm() for key in first] == [
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ssh-ed25519",
    ]
    for name in ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key"):
        assert stat.S_IMODE((keys_dir / name).stat().st_mode) == 0o600
    second = load_or_create_host_keys(keys_dir)
    assert [key.public_data for key in second] == [key.public_data for key in first]
    assert isinstance(second[0], asyncssh.SSHKey)
