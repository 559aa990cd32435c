"""Host keys: generated on first start into <data_dir>/keys/ (mode 0600) and reused after.

Owns the key files and their types (Debian's defaults: RSA 3072, ECDSA P-256, Ed25519, loaded in
that order as sshd does). Which algorithms are advertised is left to the persona.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import asyncssh

from sandtrap.sandbox.realism import HostKeyFiles

log = logging.getLogger(__name__)

# (file name, asyncssh algorithm, RSA key size), in sshd's HostKey order.
KEY_SPECS: tuple[tuple[str, str, int | None], ...] = (
    ("ssh_host_rsa_key", "ssh-rsa", 3072),
    ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256", None),
    ("ssh_host_ed25519_key", "ssh-ed25519", None),
)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def load_or_create_host_keys(keys_dir: Path) -> list[asyncssh.SSHKey]:
    """The host keys in `keys_dir`, generating any that are missing.

    Blocking (file I/O and RSA generation): call once at start-up, e.g. via `asyncio.to_thread`.

    Raises:
        OSError: the directory or a key cannot be written or read.
        asyncssh.KeyImportError: a key file exists but is not a usable private key.
    """
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = []
    for name, algorithm, key_size in KEY_SPECS:
        path = keys_dir / name
        if not path.exists():
            key = (
                asyncssh.generate_private_key(algorithm, key_size=key_size)
                if key_size
                else asyncssh.generate_private_key(algorithm)
            )
            _write_new(path, key.export_private_key("openssh"), 0o600)
            pub = path.with_name(name + ".pub")
            pub.unlink(missing_ok=True)
            _write_new(pub, key.export_public_key("openssh"), 0o644)
            log.info("generated host key %s (%s)", path, algorithm)
        else:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("host key %s had mode %o; setting 0600", path, mode)
                path.chmod(0o600)
            key = asyncssh.read_private_key(path)
        keys.append(key)
    return keys


def sandbox_host_keys(keys_dir: Path, mode: str) -> tuple[HostKeyFiles, ...]:
    """The front's host keys as the files each sandbox's /etc/ssh gets (`sandbox.host_keys`).

    Blocking like `load_or_create_host_keys` (and generates missing keys the same way).
    'public': the public halves only; 'private': both; 'image': none (the image keeps its own).
    """
    if mode == "image":
        return ()
    keys = load_or_create_host_keys(keys_dir)
    return tuple(
        HostKeyFiles(
            name=name,
            public=key.export_public_key("openssh"),
            private=key.export_private_key("openssh") if mode == "private" else None,
        )
        for (name, _, _), key in zip(KEY_SPECS, keys, strict=True)
    )


__all__ = ["KEY_SPECS", "load_or_create_host_keys", "sandbox_host_keys"]
