"""OpenSSH key lines and fingerprints, parsed without asyncssh (sandtrap/pubkeys.py)."""

from __future__ import annotations

import asyncssh

from sandtrap.pubkeys import is_authorized_keys, parse_authorized_keys, parse_key_line


def _line(key: asyncssh.SSHKey, comment: str = "") -> str:
    return key.export_public_key("openssh").decode().strip() + (f" {comment}" if comment else "")


def test_fingerprint_matches_asyncssh_for_each_key_type() -> None:
    for alg in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        key = (
            asyncssh.generate_private_key(alg, key_size=1024)
            if alg == "ssh-rsa"
            else (asyncssh.generate_private_key(alg))
        )
        parsed = parse_key_line(_line(key))
        assert parsed is not None
        assert parsed.fingerprint == key.get_fingerprint("sha256")
        assert parsed.key_type == key.get_algorithm()


def test_authorized_keys_with_options_comments_and_junk() -> None:
    one = asyncssh.generate_private_key("ssh-ed25519")
    two = asyncssh.generate_private_key("ssh-ed25519")
    text = "\n".join(
        [
            "# planted",
            "",
            _line(one, "mdrfckr"),
            'command="/bin/sh",no-pty ' + _line(two, "with options"),
            "ssh-ed25519 not-base64!!",
            "ssh-rsa " + _line(one).split()[1],  # blob names ed25519, not rsa: not a key
            "\x1b[2Jgarbage",
        ]
    )
    keys = parse_authorized_keys(text)
    assert [(k.fingerprint, k.comment) for k in keys] == [
        (one.get_fingerprint("sha256"), "mdrfckr"),
        (two.get_fingerprint("sha256"), "with options"),
    ]
    assert keys[1].key == " ".join(_line(two).split()[:2])


def test_authorized_keys_names() -> None:
    assert is_authorized_keys("/root/.ssh/authorized_keys")
    assert is_authorized_keys("/home/x/.ssh/authorized_keys2")
    assert is_authorized_keys("/tmp/authorized_keys")
    assert not is_authorized_keys("/root/.ssh/authorized_keys.bak")
    assert not is_authorized_keys("/root/.ssh/known_hosts")
