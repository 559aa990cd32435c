"""Pure sandbox logic: refill planning, retention planning, hardening body, names."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandtrap.config import Config, RetentionConfig, SandboxConfig, WeightedImage
from sandtrap.errors import ConfigError
from sandtrap.sandbox.forensics import first_file_in_tar, is_regular, store_artifact
from sandtrap.sandbox.hardening import (
    HostnamePicker,
    container_body,
    is_valid_username,
    parse_session_name,
    pool_name,
    session_name,
)
from sandtrap.sandbox.poolstate import plan_refill
from sandtrap.sandbox.retention import Kept, plan_prune

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_refill_fills_to_size_within_room() -> None:
    images = [WeightedImage(image="a")]
    assert plan_refill(images, {"a": 1}, {}, pool_size=3, room=10) == ["a", "a"]
    assert plan_refill(images, {"a": 1}, {"a": 1}, pool_size=3, room=10) == ["a"]
    assert plan_refill(images, {"a": 0}, {}, pool_size=3, room=1) == ["a"]
    assert plan_refill(images, {"a": 5}, {}, pool_size=3, room=10) == []
    assert plan_refill(images, {}, {}, pool_size=3, room=0) == []


def test_refill_keeps_weights_in_proportion() -> None:
    images = [WeightedImage(image="deb", weight=3), WeightedImage(image="ubu", weight=1)]
    plan = plan_refill(images, {}, {}, pool_size=8, room=100)
    assert plan.count("deb") == 6
    assert plan.count("ubu") == 2
    # With the debian share already warm, the next slots go to ubuntu.
    assert plan_refill(images, {"deb": 6}, {}, pool_size=8, room=100) == ["ubu", "ubu"]


def _kept(name: str, days_old: float, size_mb: int = 1) -> Kept:
    return Kept(name, name, NOW - timedelta(days=days_old), size_mb * 1024 * 1024)


def test_prune_by_count_oldest_first() -> None:
    kept = [_kept("new", 1), _kept("old", 3), _kept("mid", 2)]
    doomed = plan_prune(kept, RetentionConfig(max_count=1, max_age_days=30, max_disk_mb=0), NOW)
    # max_disk_mb=0 would remove everything; use a big disk budget for the count check.
    doomed = plan_prune(kept, RetentionConfig(max_count=1, max_age_days=30, max_disk_mb=999), NOW)
    assert [(k.name, why) for k, why in doomed] == [("old", "max_count"), ("mid", "max_count")]


def test_prune_by_age_and_disk() -> None:
    kept = [_kept("ancient", 40, 1), _kept("a", 3, 50), _kept("b", 2, 50), _kept("c", 1, 50)]
    policy = RetentionConfig(max_count=100, max_age_days=30, max_disk_mb=120)
    doomed = plan_prune(kept, policy, NOW)
    assert [(k.name, why) for k, why in doomed] == [
        ("ancient", "max_age_days"),
        ("a", "max_disk_mb"),
    ]


def test_prune_nothing_when_within_policy() -> None:
    kept = [_kept("a", 1), _kept("b", 2)]
    assert plan_prune(kept, RetentionConfig(), NOW) == []


def test_container_body_is_hardened() -> None:
    config = SandboxConfig(io_bps_limit=1000, network="none")
    body = container_body(
        config,
        image="img",
        hostname="web-prod-01",
        sensor="s",
        created=NOW,
        blkio_device="/dev/vda",
    )
    host = body["HostConfig"]
    assert body["NetworkDisabled"] is True
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert set(host["CapAdd"]) == set(config.cap_add)
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 100
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["Binds"] == [] and host["Mounts"] == [] and host["Devices"] == []
    assert host["BlkioDeviceWriteBps"] == [{"Path": "/dev/vda", "Rate": 1000}]
    assert body["Hostname"] == "web-prod-01"
    assert body["Labels"]["sandtrap.role"] == "sandbox"
    assert body["Labels"]["sandtrap.created"] == "2026-11-29T12:00:00.000000Z"
    assert {u["Name"] for u in host["Ulimits"]} == {"nofile", "nproc"}


def test_custom_seccomp_profile(tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ERRNO"}')
    body = container_body(
        SandboxConfig(seccomp_profile=str(profile)),
        image="i",
        hostname="h",
        sensor="s",
        created=NOW,
    )
    assert 'seccomp={"defaultAction":"SCMP_ACT_ERRNO"}' in body["HostConfig"]["SecurityOpt"]
    with pytest.raises(ConfigError, match="seccomp_profile"):
        container_body(
            SandboxConfig(seccomp_profile=str(tmp_path / "missing.json")),
            image="i",
            hostname="h",
            sensor="s",
            created=NOW,
        )


def test_names_round_trip() -> None:
    assert pool_name().startswith("sandtrap-pool-")
    name = session_name("0123456789ab", "203.0.113.9")
    assert name == "sandtrap-s-0123456789ab-203.0.113.9"
    parsed = parse_session_name("/" + name)
    assert parsed is not None and parsed.src_ip == "203.0.113.9"
    parsed6 = parse_session_name(session_name("0123456789abcdef", "2001:db8::1"))
    assert parsed6 is not None and parsed6.src_ip == "2001:db8::1"
    assert parse_session_name("sandtrap-pool-abc") is None
    with pytest.raises(ValueError, match="session id"):
        session_name("../../etc", "1.2.3.4")


def test_hostnames_from_list_and_pattern() -> None:
    picker = HostnamePicker(SandboxConfig(hostnames=["db01", "web02"]))
    assert [picker.pick() for _ in range(3)] == ["db01", "web02", "db01"]
    pattern = HostnamePicker(SandboxConfig(), rng=random.Random(1))
    name = pattern.pick()
    assert name.count("-") == 2 and name[-2:].isdigit()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("root", True),
        ("deploy_1", True),
        ("-rf", False),
        ("Admin", False),
        ("a" * 33, False),
        ("x;rm", False),
        ("", False),
        ("user\n", False),
    ],
)
def test_valid_usernames(name: str, ok: bool) -> None:
    assert is_valid_username(name) is ok


def test_artifact_helpers(tmp_path: Path) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"#!/bin/sh\necho pwned\n"
        info = tarfile.TarInfo("../../etc/evil")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert first_file_in_tar(buffer.getvalue()) == data
    assert first_file_in_tar(b"not a tar") is None
    digest, path = store_artifact(tmp_path, data)
    assert path == tmp_path / digest and path.read_bytes() == data
    assert store_artifact(tmp_path, data) == (digest, path)
    assert is_regular({"mode": 0o644}) and not is_regular({"mode": (1 << 31) | 0o755})


def test_config_images_default() -> None:
    assert Config().sandbox.weighted_images() == [WeightedImage(image="sandtrap/target-debian:12")]
