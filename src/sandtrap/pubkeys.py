"""OpenSSH public keys as text: SHA256 fingerprints and `authorized_keys` lines; pure.

Used where asyncssh may not be imported (sandbox/forensics.py reads keys an attacker planted);
the SSH front fingerprints offered keys with asyncssh itself, and both agree (a test checks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath

# sshd's default AuthorizedKeysFile names (.ssh/authorized_keys .ssh/authorized_keys2).
AUTHORIZED_KEYS_NAMES = frozenset({"authorized_keys", "authorized_keys2"})
MAX_KEYS_PER_FILE = 100
MAX_LINE_CHARS = 16 * 1024


@dataclass(frozen=True)
class PublicKey:
    """One key line: its type, `SHA256:` fingerprint, `type base64` text and comment."""

    key_type: str
    fingerprint: str
    key: str
    comment: str


def fingerprint(blob: bytes) -> str:
    """The fingerprint `ssh-keygen -l` prints: `SHA256:` and unpadded base64 of the blob's hash."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def is_authorized_keys(path: str) -> bool:
    """Whether sshd would read `path` as an authorized_keys file (by its name, any directory)."""
    return PurePosixPath(path).name in AUTHORIZED_KEYS_NAMES


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (length,) = struct.unpack_from(">I", blob)
    if length == 0 or length > 64 or 4 + length > len(blob):
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_key_line(line: str) -> PublicKey | None:
    """A key from one authorized_keys (or .pub) line, options before the type allowed.

    The key is found as the first `type base64` pair whose base64 decodes to a blob naming that
    type (sshd's own test); None for comments, blanks and anything else.
    """
    line = line.strip()[:MAX_LINE_CHARS]
    if not line or line.startswith("#"):
        return None
    tokens = line.split()
    for index in range(len(tokens) - 1):
        key_type, data = tokens[index], tokens[index + 1]
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            continue
        if _blob_type(blob) != key_type:
            continue
        comment = " ".join(tokens[index + 2 :])
        return PublicKey(key_type, fingerprint(blob), f"{key_type} {data}", comment)
    return None


def parse_authorized_keys(text: str) -> list[PublicKey]:
    """Every key in an authorized_keys file's text, in order, at most MAX_KEYS_PER_FILE."""
    keys: list[PublicKey] = []
    for line in text.splitlines():
        key = parse_key_line(line)
        if key is not None:
            keys.append(key)
            if len(keys) >= MAX_KEYS_PER_FILE:
                break
    return keys


__all__ = [
    "AUTHORIZED_KEYS_NAMES",
    "PublicKey",
    "fingerprint",
    "is_authorized_keys",
    "parse_authorized_keys",
    "parse_key_line",
]
