"""Malware triage of one captured file: hashes, type, fuzzy hashes, ELF architecture, indicators,
YARA matches. Synchronous and CPU-bound: it runs in the triage worker process
(analysis/triager.py), never on the event loop.

The libraries of the `analysis` extra (python-magic, ppdeep, py-tlsh, yara-python) are optional:
a missing one leaves its fields null and is named in `Triage.missing`.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bounds (docs/analysis.md): what one artifact may cost.
READ_MAX_BYTES = 64 * 1024 * 1024  # hashed whole up to the capture cap; read at most this much
SCAN_MAX_BYTES = 16 * 1024 * 1024  # indicators and YARA look at the first 16 MiB
SSDEEP_MAX_BYTES = 4 * 1024 * 1024  # ppdeep is pure Python (about 1 MB/s)
MAGIC_BYTES = 1024 * 1024
MAX_INDICATORS = 100
MAX_INDICATOR_CHARS = 2048
YARA_TIMEOUT_SECONDS = 30

STARTER_RULES = Path(__file__).resolve().parent.parent / "defaults" / "yara"

# ELF e_machine values (System V ABI, elf.h) of the architectures bots ship binaries for.
_ELF_MACHINES = {
    2: "sparc",
    3: "x86",
    4: "m68k",
    8: "mips",
    20: "powerpc",
    21: "powerpc64",
    22: "s390",
    40: "arm",
    42: "superh",
    43: "sparcv9",
    62: "x86-64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}

_URL = re.compile(
    rb"(?:https?|ftp|tftp|stratum\+(?:tcp|ssl|tls))://[\x21-\x7e]{1,2000}", re.IGNORECASE
)
_URL_TAIL = b"'\"<>`),;]}\\"
_IPV4 = re.compile(rb"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# Stand-alone domains only with a TLD bots use (binaries are full of "libc.so", "main.c").
_TLDS = (
    b"com|net|org|info|biz|io|ru|cn|su|xyz|top|pw|cc|tk|ml|ga|cf|gq|de|uk|nl|fr|br|in|ir|kr|jp|"
    b"us|me|co|online|site|club|icu|live|vip|shop|duckdns\\.org|onion"
)
_DOMAIN = re.compile(
    rb"(?<![\w.-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:" + _TLDS + rb")(?![\w.-])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Triage:
    """What triage found in one file (fields null when the library for them is missing)."""

    sha256: str
    md5: str | None
    sha1: str | None
    size: int
    magic: str | None = None
    mime: str | None = None
    ssdeep: str | None = None
    tlsh: str | None = None
    elf_arch: str | None = None
    yara: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def elf_arch(head: bytes) -> str | None:
    """`<machine>-<32|64>-<le|be>` of an ELF header (e.g. `mips-32-be`), None for other files."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    bits = {1: "32", 2: "64"}.get(head[4])
    order = {1: "le", 2: "be"}.get(head[5])
    if bits is None or order is None:
        return "unknown"
    (machine,) = struct.unpack_from("<H" if order == "le" else ">H", head, 18)
    return f"{_ELF_MACHINES.get(machine, f'machine-{machine}')}-{bits}-{order}"


def _unique(values: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if len(seen) >= MAX_INDICATORS:
            break
        seen.setdefault(value[:MAX_INDICATOR_CHARS], None)
    return list(seen)


def indicators(data: bytes) -> tuple[list[str], list[str], list[str]]:
    """URLs, public IPv4 addresses and domains in `data` (first MAX_INDICATORS of each, in order).

    Addresses that cannot be a remote host (private, loopback, version-like 0.x) are left out.
    """
    urls = [m.group().rstrip(_URL_TAIL).decode("ascii") for m in _URL.finditer(data)]
    ips = []
    for match in _IPV4.finditer(data):
        try:
            address = ipaddress.IPv4Address(match.group().decode("ascii"))
        except ValueError:
            continue
        if address.is_global:
            ips.append(str(address))
    hosts = []
    for url in urls:
        host = url.split("://", 1)[1].split("/", 1)[0].split("@")[-1].rsplit(":", 1)[0]
        if host and not _IPV4.fullmatch(host.encode()):
            hosts.append(host.lower())
    hosts += [m.group().decode("ascii").lower() for m in _DOMAIN.finditer(data)]
    return _unique(urls), _unique(ips), _unique(hosts)


def compile_rules(directories: list[Path]) -> tuple[Any, list[str]]:
    """YARA rules from every `*.yar`/`*.yara` in `directories` (each file its own namespace).

    Returns (compiled rules or None, problems): a file that does not compile is left out and
    named, so one bad operator rule never disables the rest.
    """
    yara = _optional("yara")
    if yara is None:
        return None, ["yara-python is not installed"]
    sources: dict[str, str] = {}
    problems = []
    for directory in directories:
        if not directory.is_dir():
            problems.append(f"{directory}: not a directory")
            continue
        for path in sorted([*directory.glob("*.yar"), *directory.glob("*.yara")]):
            try:
                yara.compile(filepath=str(path))
            except yara.Error as exc:
                problems.append(f"{path}: {exc}")
                continue
            sources[f"{directory.name}/{path.stem}"] = str(path)
    if not sources:
        return None, problems
    return yara.compile(filepaths=sources), problems


def triage_bytes(data: bytes, rules: Any = None, size: int | None = None) -> Triage:
    """Triage `data` (the file's first READ_MAX_BYTES; `size` its real size when larger)."""
    missing = []
    magic_text = mime = ssdeep_hash = tlsh_hash = None
    magic = _optional("magic")
    if magic is None:
        missing.append("python-magic")
    else:
        magic_text = str(magic.from_buffer(data[:MAGIC_BYTES]))
        mime = str(magic.from_buffer(data[:MAGIC_BYTES], mime=True))
    ppdeep = _optional("ppdeep")
    if ppdeep is None:
        missing.append("ppdeep")
    elif len(data) <= SSDEEP_MAX_BYTES:
        ssdeep_hash = str(ppdeep.hash(data))
    tlsh = _optional("tlsh")
    if tlsh is None:
        missing.append("py-tlsh")
    else:
        value = str(tlsh.hash(data))
        tlsh_hash = None if value in ("", "TNULL") else value  # too short or too uniform
    scanned = data[:SCAN_MAX_BYTES]
    matches: list[str] = []
    error = None
    if rules is not None:
        try:
            matches = sorted(
                {m.rule for m in rules.match(data=scanned, timeout=YARA_TIMEOUT_SECONDS)}
            )
        except Exception as exc:  # yara.Error or its timeout: recorded in the event, not fatal
            error = f"yara: {exc}"
    urls, ips, domains = indicators(scanned)
    return Triage(
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        size=len(data) if size is None else size,
        magic=magic_text,
        mime=mime,
        ssdeep=ssdeep_hash,
        tlsh=tlsh_hash,
        elf_arch=elf_arch(data[:64]),
        yara=matches,
        urls=urls,
        ips=ips,
        domains=domains,
        missing=missing,
        error=error,
    )


def triage_file(path: Path, rules: Any = None) -> Triage:
    """Triage a stored artifact; the hashes cover the whole file, the rest its first bytes."""
    size = path.stat().st_size
    if size <= READ_MAX_BYTES:
        return triage_bytes(path.read_bytes(), rules)
    digests = [
        hashlib.sha256(),
        hashlib.md5(usedforsecurity=False),
        hashlib.sha1(usedforsecurity=False),
    ]
    head = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if len(head) < READ_MAX_BYTES:
                head += chunk[: READ_MAX_BYTES - len(head)]
            for digest in digests:
                digest.update(chunk)
    result = triage_bytes(head, rules, size=size)
    sha256, md5, sha1 = (d.hexdigest() for d in digests)
    return Triage(**{**result.__dict__, "sha256": sha256, "md5": md5, "sha1": sha1, "ssdeep": None})


__all__ = [
    "STARTER_RULES",
    "Triage",
    "compile_rules",
    "elf_arch",
    "indicators",
    "triage_bytes",
    "triage_file",
]
