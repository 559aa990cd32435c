"""Personas: what a real sshd puts on the wire (banner, KEXINIT lists, EXT_INFO, auth, texts).

Owns the measured description of each persona and its translation into asyncssh server options.
Applying what options cannot express is left to `ssh/connection.py`. Measured values and the
differences we cannot remove are in docs/fingerprinting.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.compression import get_compression_algs
from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_public_key_algs

from sandtrap.config import SSHConfig


@dataclass(frozen=True)
class Persona:
    """One sshd build as seen from the network, before and during authentication."""

    name: str
    # Identification string without "SSH-2.0-" and CRLF (RFC 4253 section 4.2).
    software_version: str
    # KEXINIT name-lists in the server's preference order; `kex_pseudo_algs` follow `kex_algs`.
    kex_algs: tuple[str, ...]
    kex_pseudo_algs: tuple[str, ...]
    host_key_algs: tuple[str, ...]
    encryption_algs: tuple[str, ...]
    mac_algs: tuple[str, ...]
    compression_algs: tuple[str, ...]
    # SSH_MSG_EXT_INFO (RFC 8308), sent after the first NEWKEYS when the client offers ext-info-c.
    ext_info: tuple[tuple[str, str], ...]
    auth_methods: tuple[str, ...]
    max_auth_tries: int
    login_grace_seconds: float
    # OpenSSH's packet_disconnect() texts and its replies to a bad identification line.
    too_many_auth_failures_text: str = "Too many authentication failures"
    invalid_ident_text: str = "Invalid SSH identification string."
    version_mismatch_text: str = "Protocol major versions differ."
    # sshd's reply to a refused direct-tcpip open (serverloop.c: errmsg NULL -> "open failed").
    forward_refused_text: str = "open failed"
    # What runs for `subsystem sftp` (sshd_config `Subsystem sftp`).
    sftp_server: str = "/usr/lib/openssh/sftp-server"

    @property
    def identification(self) -> str:
        """The identification line as sent, without CRLF."""
        return "SSH-2.0-" + self.software_version

    @property
    def wire_kex_algs(self) -> tuple[str, ...]:
        """The kex name-list exactly as it appears in the server KEXINIT."""
        return self.kex_algs + self.kex_pseudo_algs

    @property
    def server_sig_algs(self) -> tuple[str, ...]:
        for name, value in self.ext_info:
            if name == "server-sig-algs":
                return tuple(value.split(","))
        return ()


# Measured on the wire from Debian 12's sshd (openssh-server 1:9.2p1-2+deb12u10) with Debian's
# default sshd_config and its three default host keys (RSA 3072, ECDSA P-256, Ed25519).
DEBIAN12 = Persona(
    name="debian12",
    software_version="OpenSSH_9.2p1 Debian-2+deb12u10",
    kex_algs=(
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group14-sha256",
    ),
    # OpenSSH 9.2 servers send no ext-info-s (that came with 9.6); strict kex is the Terrapin fix.
    kex_pseudo_algs=("kex-strict-s-v00@openssh.com",),
    host_key_algs=("rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256", "ssh-ed25519"),
    encryption_algs=(
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    ),
    mac_algs=(
        "umac-64-etm@openssh.com",
        "umac-128-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha1-etm@openssh.com",
        "umac-64@openssh.com",
        "umac-128@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-512",
        "hmac-sha1",
    ),
    compression_algs=("none", "zlib@openssh.com"),
    ext_info=(
        (
            "server-sig-algs",
            "ssh-ed25519,sk-ssh-ed25519@openssh.com,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,"
            "ecdsa-sha2-nistp521,sk-ecdsa-sha2-nistp256@openssh.com,"
            "webauthn-sk-ecdsa-sha2-nistp256@openssh.com,ssh-dss,ssh-rsa,rsa-sha2-256,"
            "rsa-sha2-512",
        ),
        ("publickey-hostbound@openssh.com", "0"),
    ),
    # Debian's sshd_config sets KbdInteractiveAuthentication no, so keyboard-interactive is not
    # offered at all.
    auth_methods=("publickey", "password"),
    max_auth_tries=6,
    login_grace_seconds=120.0,
)

PERSONAS: dict[str, Persona] = {DEBIAN12.name: DEBIAN12}


def persona_for(config: SSHConfig) -> Persona:
    """The configured persona with the operator's overrides (banner, MaxAuthTries, grace time)."""
    base = PERSONAS[config.persona]
    return dataclasses.replace(
        base,
        software_version=config.banner_version or base.software_version,
        max_auth_tries=config.max_auth_tries,
        login_grace_seconds=config.login_grace_seconds,
    )


def _names(algs: Sequence[bytes]) -> set[str]:
    return {alg.decode("ascii") for alg in algs}


def unsupported_algorithms(persona: Persona) -> dict[str, list[str]]:
    """Algorithms the persona advertises that this asyncssh cannot offer, by list."""
    have = {
        "kex": _names(get_kex_algs()),
        "encryption": _names(get_encryption_algs()),
        "mac": _names(get_mac_algs()),
        "compression": _names(get_compression_algs()),
        "signature": _names(get_public_key_algs()),
    }
    wanted = {
        "kex": persona.kex_algs,
        "encryption": persona.encryption_algs,
        "mac": persona.mac_algs,
        "compression": persona.compression_algs,
        "signature": persona.server_sig_algs,
    }
    out = {}
    for kind, algs in wanted.items():
        missing = [alg for alg in algs if alg not in have[kind]]
        if missing:
            out[kind] = missing
    return out


def server_options(persona: Persona, host_keys: Sequence[asyncssh.SSHKey]) -> dict[str, Any]:
    """Keyword arguments for `asyncssh.SSHServerConnectionOptions` that make it look like `persona`.

    Algorithms this asyncssh cannot offer are left out (asyncssh rejects unknown names); see
    `unsupported_algorithms` and docs/fingerprinting.md.
    """
    kex = _names(get_kex_algs())
    sig = _names(get_public_key_algs())
    return {
        "server_version": persona.software_version,
        "kex_algs": [alg for alg in persona.kex_algs if alg in kex],
        "encryption_algs": list(persona.encryption_algs),
        "mac_algs": list(persona.mac_algs),
        "compression_algs": list(persona.compression_algs),
        "signature_algs": [alg for alg in persona.server_sig_algs if alg in sig],
        "server_host_keys": list(host_keys),
        "login_timeout": persona.login_grace_seconds,
        "public_key_auth": "publickey" in persona.auth_methods,
        "password_auth": "password" in persona.auth_methods,
        "kbdint_auth": "keyboard-interactive" in persona.auth_methods,
        "host_based_auth": False,
        "gss_kex": False,
        "gss_auth": False,
        # The honeypot never relays: these are refused (with events) in ssh/server.py.
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_scp": False,
        "allow_pty": True,
        # The shell in the sandbox does its own line editing; asyncssh's editor would be a tell.
        "line_editor": False,
        # Raw bytes both ways: the proxy is binary-safe and decodes nothing.
        "encoding": None,
        # asyncssh's default keepalive is off, as is OpenSSH's ClientAliveInterval.
        "keepalive_interval": 0,
        "config": None,
    }


def hassh(kex: str, encryption: str, mac: str, compression: str) -> tuple[str, str]:
    """HASSH of a client KEXINIT (salesforce/hassh): (MD5 hex, the `kex;enc;mac;cmp` string).

    Arguments are the raw comma-separated client-to-server name-lists.
    """
    algorithms = f"{kex};{encryption};{mac};{compression}"
    digest = hashlib.md5(algorithms.encode("ascii", "replace"), usedforsecurity=False).hexdigest()
    return digest, algorithms


__all__ = [
    "DEBIAN12",
    "PERSONAS",
    "Persona",
    "hassh",
    "persona_for",
    "server_options",
    "unsupported_algorithms",
]
