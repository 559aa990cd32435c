"""A stored artifact as the console shows it: digests, a type guessed from its first bytes, a hex
dump of its head and the printable strings near its start.

Reads var/artifacts/<sha256> only, on a worker thread, never executing or unpacking anything; the
pure parts (`sniff`, `hexdump`, `strings`) work on bytes. Analysis proper is artifact.* events'.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from starlette.concurrency import run_in_threadpool

HEAD_BYTES = 256
STRINGS_WINDOW = 64 * 1024
MAX_STRINGS = 40
_PRINTABLE = re.compile(rb"[\x20-\x7e]{6,}")
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x7fELF", "ELF executable"),
    (b"#!", "script"),
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"MZ", "PE/DOS executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal / Java class"),
    (b"ssh-", "SSH public key"),
    (b"-----BEGIN ", "PEM"),
]


def sniff(head: bytes) -> str:
    """A coarse type from the first bytes (ELF, script, archive, text, data)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            if name == "script":
                first = head.split(b"\n", 1)[0][2:].strip()
                return f"script ({first.decode('ascii', 'replace')[:60]})" if first else name
            return name
    if len(head) > 257 + 5 and head[257 : 257 + 5] == b"ustar":
        return "tar"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "data"
    return "text"


def hexdump(data: bytes) -> list[str]:
    """`offset  hex bytes  |ascii|` lines, 16 bytes each."""
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{start:08x}  {hexes:<47}  |{text}|")
    return lines


def strings(data: bytes, limit: int = MAX_STRINGS) -> list[str]:
    """Printable ASCII runs of 6+ characters, at most `limit`, each cut to 200 characters."""
    return [match.decode("ascii")[:200] for match in _PRINTABLE.findall(data)[:limit]]


@dataclass(frozen=True)
class StoredFile:
    present: bool
    size: int = 0
    md5: str = ""
    sha1: str = ""
    sha256: str = ""
    kind: str = ""
    head: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)


def read_stored(path: Path) -> StoredFile:
    """Digests and previews of the stored copy; `present=False` when it is not (or no longer)
    there."""
    if not path.is_file():
        return StoredFile(present=False)
    md5, sha1, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha1(), hashlib.sha256()  # noqa: S324 - md5/sha1 are lookup keys for threat feeds, not security
    size = 0
    start = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if len(start) < STRINGS_WINDOW:
                start += chunk[: STRINGS_WINDOW - len(start)]
            for digest in (md5, sha1, sha256):
                digest.update(chunk)
            size += len(chunk)
    return StoredFile(
        present=True,
        size=size,
        md5=md5.hexdigest(),
        sha1=sha1.hexdigest(),
        sha256=sha256.hexdigest(),
        kind=sniff(start[:512]),
        head=hexdump(start[:HEAD_BYTES]),
        strings=strings(start),
    )


async def describe(path: Path) -> StoredFile:
    return await run_in_threadpool(read_stored, path)
