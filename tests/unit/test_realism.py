"""The realism scripts' inputs (sandbox/realism.py): host-key payload, login record argv."""

from __future__ import annotations

import base64
import struct

import pytest

from sandtrap.sandbox.realism import (
    UTMP_SCRIPT,
    HostKeyFiles,
    host_keys_payload,
    login_record_argv,
)


def test_payload_carries_public_halves_and_private_only_when_shared() -> None:
    keys = [
        HostKeyFiles("ssh_host_ed25519_key", b"ssh-ed25519 AAAA\n"),
        HostKeyFiles("ssh_host_rsa_key", b"ssh-rsa BBBB\n", private=b"-----BEGIN-----\n"),
    ]
    lines = [line.split("\t") for line in host_keys_payload(keys).decode().splitlines()]
    assert [(name, mode) for name, mode, _ in lines] == [
        ("ssh_host_ed25519_key.pub", "644"),
        ("ssh_host_rsa_key.pub", "644"),
        ("ssh_host_rsa_key", "600"),
    ]
    assert base64.b64decode(lines[2][2]) == b"-----BEGIN-----\n"
    assert host_keys_payload([]) == b""


def test_payload_refuses_other_file_names() -> None:
    with pytest.raises(ValueError, match="not a host key file name"):
        host_keys_payload([HostKeyFiles("../../root/.ssh/authorized_keys", b"x")])


def test_login_record_takes_addresses_only() -> None:
    argv = login_record_argv("root", "203.0.113.7")
    assert argv[:2] == ["/usr/bin/python3", "-c"] and argv[3:] == ["login", "root", "203.0.113.7"]
    assert login_record_argv("oracle", "2001:db8::1")[-1] == "2001:db8::1"
    for bad in ("", "1.2.3.4; rm -rf /", "-x", "a" * 46):
        with pytest.raises(ValueError, match="not an address"):
            login_record_argv("root", bad)


def test_utmp_layout_is_glibcs() -> None:
    # utmp(5) on 64-bit glibc: 384 bytes per record.
    layout = UTMP_SCRIPT.split('F = "', 1)[1].split('"', 1)[0]
    assert struct.calcsize(layout) == 384
