"""Persona data, option translation, KEXINIT parsing and HASSH, host keys, extra kex algorithms."""

from __future__ import annotations

import hashlib
import stat
import struct
from pathlib import Path

import asyncssh
import pytest
from asyncssh import kex as asyncssh_kex
from asyncssh import kex_dh

from sandtrap.config import SSHConfig
from sandtrap.persona import DEBIAN12, banner_from_package, package_version, persona_for
from sandtrap.ssh.connection import parse_kexinit
from sandtrap.ssh.hostkeys import load_or_create_host_keys
from sandtrap.ssh.kexalgs import (
    DEFAULT_MODULI_PATH,
    GEX_SHA256,
    SNTRUP761_NAMES,
    Modulus,
    choose_group,
    enable_openssh_gex,
    enable_sntrup761,
    gex_bounds,
    is_valid_dh_public,
    load_moduli,
    parse_moduli,
)
from sandtrap.ssh.persona import hassh, server_options, unsupported_algorithms


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


# --- kexalgs: sntrup761 through pqcrypto, OpenSSH's group exchange -------------------------------


def test_sntrup761_completes_the_persona_kex_list() -> None:
    assert enable_sntrup761()
    assert enable_sntrup761()  # idempotent
    assert server_options(DEBIAN12, [])["kex_algs"] == list(DEBIAN12.kex_algs)
    assert "kex" not in unsupported_algorithms(DEBIAN12)


def test_sntrup761_kem_round_trip() -> None:
    assert enable_sntrup761()
    kem_class = asyncssh_kex._kex_handlers[b"sntrup761x25519-sha512"][2][0]
    server, client = kem_class(b"sntrup761"), kem_class(b"sntrup761")
    secret, ciphertext = client.encaps(server.get_public())
    assert len(secret) == 32
    assert server.decaps(ciphertext) == secret
    with pytest.raises(ValueError, match="public key"):
        client.encaps(b"short")


def _registry() -> tuple[list[bytes], list[bytes], dict[bytes, object]]:
    return (
        list(asyncssh_kex._kex_algs),
        list(asyncssh_kex._default_kex_algs),
        dict(asyncssh_kex._kex_handlers),
    )


def test_sntrup761_registers_once() -> None:
    assert enable_sntrup761()
    before = _registry()
    assert enable_sntrup761()
    after = _registry()
    assert after[0] == before[0] and after[1] == before[1]
    assert all(after[2][name] is before[2][name] for name in before[2])
    for name in SNTRUP761_NAMES:
        assert asyncssh_kex._kex_algs.count(name) == 1


def test_openssh_gex_registers_once_and_the_last_moduli_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandtrap.ssh import kexalgs

    # Restore asyncssh's registry and our groups afterwards: other tests start real servers.
    monkeypatch.setitem(
        asyncssh_kex._kex_handlers, GEX_SHA256, asyncssh_kex._kex_handlers[GEX_SHA256]
    )
    monkeypatch.setattr(kexalgs._OpenSSHGex, "groups", kexalgs._OpenSSHGex.groups)
    enable_openssh_gex([Modulus(2048, 2, P2048)])
    before = _registry()
    handler = asyncssh_kex._kex_handlers[GEX_SHA256]
    assert issubclass(handler[0], kex_dh._KexDHGex)
    enable_openssh_gex([Modulus(3072, 5, P3072A)])
    after = _registry()
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2].keys() == before[2].keys()
    assert all(after[2][name] is before[2][name] for name in before[2])
    assert asyncssh_kex._kex_algs.count(GEX_SHA256) == 1
    assert handler[0].groups == (Modulus(3072, 5, P3072A),)


def _moduli_line(bits: int, prime: int, kind: int = 2, tests: int = 6, generator: int = 2) -> str:
    return f"20230101000000 {kind} {tests} 100 {bits - 1} {generator:X} {prime:X}"


P2048 = (1 << 2047) + 1
P3072A = (1 << 3071) + 3
P3072B = (1 << 3071) + 5
P4096 = (1 << 4095) + 7


def test_parse_moduli_keeps_what_sshd_accepts() -> None:
    text = "\n".join(
        [
            "# Time Type Tests Tries Size Generator Modulus",
            "",
            _moduli_line(2048, P2048),
            _moduli_line(3072, P3072A, generator=5),
            _moduli_line(3072, P3072B, kind=4),  # not a safe prime
            _moduli_line(4096, P4096, tests=1),  # composite
            _moduli_line(4096, P4096, tests=0),  # untested
            _moduli_line(4096, P2048),  # size column does not match the prime
            "20230101000000 2 6 100 4095 2",  # too few fields
            "20230101000000 2 6 100 4095 2 XYZ",  # not hex
        ]
    )
    assert parse_moduli(text) == (Modulus(2048, 2, P2048), Modulus(3072, 5, P3072A))


def test_load_moduli_missing_file_falls_back(tmp_path: Path) -> None:
    assert load_moduli(tmp_path / "absent") == ()
    assert load_moduli(DEFAULT_MODULI_PATH) or not DEFAULT_MODULI_PATH.exists()


def test_gex_bounds_as_sshd() -> None:
    assert gex_bounds(1024, 3072, 8192) == (2048, 3072, 8192)
    assert gex_bounds(2048, 8192, 8192) == (2048, 8192, 8192)
    assert gex_bounds(2048, 4096, 16384) == (2048, 4096, 8192)
    assert gex_bounds(1024, 1024, 2048) == (2048, 2048, 2048)
    # Refused (silent close): below DH_GRP_MIN, or inconsistent.
    assert gex_bounds(512, 1024, 1536) is None
    assert gex_bounds(4096, 2048, 8192) is None
    assert gex_bounds(2048, 8192, 4096) is None


def test_choose_group_as_sshd_choose_dh() -> None:
    moduli = (
        Modulus(2048, 2, P2048),
        Modulus(3072, 2, P3072A),
        Modulus(3072, 5, P3072B),
        Modulus(4096, 2, P4096),
    )
    # The smallest size at or above the wanted one, a random prime of that size.
    assert {choose_group(moduli, 2048, 3072, 8192) for _ in range(50)} == {
        (2, P3072A),
        (5, P3072B),
    }
    assert choose_group(moduli, 2048, 2500, 8192)[1] in (P3072A, P3072B)
    assert choose_group(moduli, 2048, 8192, 8192) == (2, P4096)
    assert choose_group(moduli, 2048, 2048, 2048) == (2, P2048)
    # Nothing within [min, max]: RFC 3526 group 14, 16 or 18 by max, as dh_new_group_fallback().
    assert choose_group((), 2048, 2048, 2048) == (2, kex_dh._group14_p)
    assert choose_group((), 2048, 4096, 4096) == (2, kex_dh._group16_p)
    assert choose_group((), 2048, 8192, 8192) == (2, kex_dh._group18_p)
    assert choose_group(moduli, 6144, 8192, 8192) == (2, kex_dh._group18_p)


def test_dh_public_value_check() -> None:
    prime = kex_dh._group14_p
    assert is_valid_dh_public(3, prime)
    for value in (0, 1, 2, 4, prime - 1, prime):
        assert not is_valid_dh_public(value, prime), value


def test_banner_from_debian_package_version() -> None:
    assert banner_from_package("1:9.2p1-2+deb12u7") == "OpenSSH_9.2p1 Debian-2+deb12u7"
    assert (
        banner_from_package("1:8.9p1-3ubuntu0.10", "Ubuntu") == "OpenSSH_8.9p1 Ubuntu-3ubuntu0.10"
    )
    assert banner_from_package("9.2p1") is None


def test_package_version_reads_installed_stanzas_only() -> None:
    status = (
        "Package: openssh-server\nStatus: deinstall ok config-files\nVersion: 1:8.0p1-1\n\n"
        "Package: openssh-client\nStatus: install ok installed\nVersion: 1:9.2p1-2+deb12u7\n"
        "Description: secure shell\n multi-line: text\n"
    )
    assert package_version(status, "openssh-client") == "1:9.2p1-2+deb12u7"
    assert package_version(status, "openssh-server") is None


def test_login_runs_the_motd_then_a_login_bash() -> None:
    assert DEBIAN12.login_shell[:2] == ("/bin/bash", "-c")
    assert DEBIAN12.login_shell[2].endswith("exec -a -bash /bin/bash")
    assert DEBIAN12.accept_env == ("LANG", "LC_*")
