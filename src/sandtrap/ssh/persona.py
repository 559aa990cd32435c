"""A persona (sandtrap/persona.py) in asyncssh's terms: server options, unsupported algorithms.

Owns the translation of the persona's facts into asyncssh server options, and the client's HASSH.
Applying what options cannot express is left to `ssh/connection.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import asyncssh
from asyncssh.compression import get_compression_algs
from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_public_key_algs

from sandtrap.persona import Persona


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
    "hassh",
    "server_options",
    "unsupported_algorithms",
]
