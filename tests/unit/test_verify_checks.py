"""The verifier's judgement: pure functions from observations to rows (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandtrap.config import parse_config
from sandtrap.errors import ConfigError
from sandtrap.sandboxconfig import sensor_subnet
from sandtrap.verify import checks, hostchecks
from sandtrap.verify.checks import Context
from sandtrap.verify.runner import verifier_config
from sandtrap.verify.sinkself import bridge_row, sinkhole_self_rows


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.1.5+ds1", ["CVE-2024-21626", "CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]),
        ("1.1.12", ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]),
        ("1.2.8", []),
        ("1.3.2", ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]),
        ("1.3.3", []),
        ("v1.4.0-rc.2", ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]),
        ("1.4.0-rc.3", []),
        (
            "1.0.0-rc5",
            [
                "CVE-2019-5736",
                "CVE-2024-21626",
                "CVE-2025-31133",
                "CVE-2025-52565",
                "CVE-2025-52881",
            ],
        ),
        ("garbage", []),
    ],
)
def test_runc_advisories(version: str, expected: list[str]) -> None:
    assert hostchecks.runc_advisories(version) == expected


def test_flagged_runc_warns_unless_strict() -> None:
    components = {"Engine": "20.10.24", "runc": "1.1.5+ds1-1+deb12u1"}
    (engine, runc) = hostchecks.version_rows(components, strict=False)
    assert engine.status == "INFO"
    assert runc.status == "WARN"
    assert "backported" in runc.observed
    assert hostchecks.version_rows(components, strict=True)[1].status == "FAIL"
    assert hostchecks.version_rows({"runc": "1.3.3"}, strict=True)[0].status == "PASS"


def test_capability_masks() -> None:
    assert checks.cap_names("00000000000000eb") == {
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "KILL",
        "SETGID",
        "SETUID",
    }


def _observations(**changes: object) -> dict[str, object]:
    obs: dict[str, object] = {
        "interfaces": ["lo"],
        "routes": [],
        "tcp": {"127.0.0.1:5000": "ECONNREFUSED", "172.17.0.1:5001": "ENETUNREACH"},
        "icmp": {"172.17.0.1": "send:ENETUNREACH"},
        "raw_socket": "EPERM",
        "packet_socket": "EPERM",
        "mount": "EPERM",
        "unshare_user": "EPERM",
        "unshare_net": "EPERM",
        "unshare_mount": "EPERM",
        "unshare_cgroup": "EPERM",
        "ptrace": "EPERM",
        "module_load": "EPERM",
        "proc_sys": {"/proc/sys/kernel/core_pattern": "EROFS"},
        "sys_write": {"/sys/kernel/mm/ksm/run": "EROFS"},
        "sysrq": "ENOENT",
        "mknod_block": "EPERM",
        "release_agent": {"/sys/fs/cgroup/pids/notify_on_release": "EROFS"},
        "mount_cgroup": "EPERM",
        "status": {
            "CapEff": "00000000000000eb",
            "CapBnd": "00000000000000eb",
            "NoNewPrivs": "1",
            "Seccomp": "2",
        },
        "processes": ["init", "python3"],
        "mounts": [
            ["/", "/", "overlay", "rw"],
            ["/etc/hosts", "/var/lib/docker/x/hosts", "ext4", "rw"],
        ],
        "sockets": ["/dev/log"],
    }
    obs.update(changes)
    return obs


CTX = Context(
    "runc",
    ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"),
    {"127.0.0.1:5000": "host loopback", "172.17.0.1:5001": "docker bridge gateway"},
)


def test_clean_observations_pass() -> None:
    rows = checks.probe_rows(_observations(), "root", CTX)
    assert [r for r in rows if r.status != "PASS"] == []


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"interfaces": ["eth0", "lo"]}, "network: interfaces"),
        ({"tcp": {"172.17.0.1:5001": "connected:sandtrap-verify\n"}}, "network: TCP"),
        ({"raw_socket": "ok"}, "network: raw ICMP socket"),
        ({"unshare_user": "ok"}, "unshare user namespace"),
        ({"mknod_block": "ok;open:EPERM"}, "mknod block device"),
        ({"proc_sys": {"/proc/sys/kernel/core_pattern": "ok"}}, "write /proc/sys"),
        ({"release_agent": {"/sys/fs/cgroup/x/release_agent": "ok"}}, "cgroup release_agent"),
        (
            {
                "status": {
                    "CapEff": "00000000002000eb",
                    "CapBnd": "00000000002000eb",
                    "NoNewPrivs": "1",
                    "Seccomp": "2",
                }
            },
            "capabilities",
        ),
        (
            {"status": {"CapEff": "0", "CapBnd": "eb", "NoNewPrivs": "0", "Seccomp": "2"}},
            "no_new_privs",
        ),
        ({"processes": ["init", "dockerd"]}, "pid namespace"),
        ({"mounts": [["/srv", "/home/host", "ext4", "rw"]]}, "host paths"),
        ({"sockets": ["/run/docker.sock"]}, "container engine socket"),
    ],
)
def test_each_breach_fails(changes: dict[str, object], check: str) -> None:
    rows = checks.probe_rows(_observations(**changes), "root", CTX)
    failed = [r.check for r in rows if r.status == "FAIL"]
    assert failed
    assert all(name.startswith(check) for name in failed), failed


def test_userns_device_binds_are_not_host_paths() -> None:
    # Under userns-remap the runtime binds the host's default devices in and masks /proc files
    # with /dev/null; any other devtmpfs node (a disk) or a host directory still fails.
    remapped = [
        ["/dev/null", "/null", "devtmpfs", "rw"],
        ["/dev/urandom", "/urandom", "devtmpfs", "rw"],
        ["/proc/keys", "/null", "devtmpfs", "rw"],
    ]
    assert checks.mount_row(remapped, "root", CTX).status == "PASS"
    disk = [*remapped, ["/dev/sda", "/sda", "devtmpfs", "rw"]]
    row = checks.mount_row(disk, "root", CTX)
    assert row.status == "FAIL"
    assert "/dev/sda" in row.observed


def test_userns_row() -> None:
    assert hostchecks.userns_row(False, 0).status == "INFO"
    assert hostchecks.userns_row(True, 165536).status == "PASS"
    assert hostchecks.userns_row(True, 0).status == "FAIL"
    assert hostchecks.userns_row(True, None).status == "INFO"  # cannot observe: not a claim


def test_gvisor_expectations_are_runtime_aware() -> None:
    ctx = Context("runsc", CTX.cap_add, CTX.targets)
    obs = _observations(
        unshare_user="ok",
        unshare_mount="ok",
        mknod_block="ok;open:ENXIO",
        status={"CapEff": "eb", "CapBnd": "eb", "Seccomp": "0"},
    )
    rows = {r.check: r for r in checks.probe_rows(obs, "user", ctx)}
    assert rows["unshare user namespace"].status == "PASS"
    assert rows["mknod block device"].status == "PASS"
    assert rows["capabilities: effective"].status == "WARN"
    assert rows["no_new_privs / seccomp"].status == "INFO"
    # The net namespace and an openable block device stay failures under gVisor too.
    obs = _observations(unshare_net="ok", mknod_block="ok;open:ok")
    rows = {r.check: r for r in checks.probe_rows(obs, "root", ctx)}
    assert rows["unshare net namespace"].status == "FAIL"
    assert rows["mknod block device"].status == "FAIL"


def test_bomb_rows() -> None:
    assert (
        hostchecks.forkbomb_row({"peak_processes": 100}, 100, 100, "answers", "runc").status
        == "PASS"
    )
    assert (
        hostchecks.forkbomb_row({"peak_processes": 300}, 300, 100, "answers", "runc").status
        == "FAIL"
    )
    assert hostchecks.forkbomb_row(None, 90, 100, "stopped", "runsc").status == "PASS"
    assert hostchecks.forkbomb_row(None, 90, 100, "hung", "runsc").status == "FAIL"
    assert hostchecks.membomb_row({"returncode": -9, "reached_mb": 240}, 256).status == "PASS"
    assert hostchecks.membomb_row({"returncode": 0, "reached_mb": 1024}, 256).status == "FAIL"
    ended = {"sandbox_ended": True, "oom_killed": True, "exit_code": 137}
    assert hostchecks.membomb_row(ended, 256, "runsc").status == "PASS"
    assert hostchecks.membomb_row(ended, 256, "runc").status == "FAIL"
    unflagged = {**ended, "oom_killed": False}
    assert hostchecks.membomb_row(unflagged, 256, "runsc").status == "PASS"  # SIGKILL, exit 137
    assert hostchecks.membomb_row({**unflagged, "exit_code": 2}, 256, "runsc").status == "FAIL"
    assert hostchecks.cpu_row(2.0, 4.0, 0.5, 30).status == "PASS"
    assert hostchecks.cpu_row(4.0, 4.0, 0.5, 0).status == "FAIL"
    assert hostchecks.disk_row({"size_mb": 70}, 2.0, 64).status == "PASS"
    assert hostchecks.disk_row(None, None, 64).status == "FAIL"
    assert hostchecks.login_row(0.3).status == "PASS"
    assert hostchecks.login_row(2.5).status == "FAIL"
    assert hostchecks.login_row(None, "refused").status == "FAIL"


def test_lxcfs_proc_files_are_not_host_paths_but_other_fuse_mounts_are() -> None:
    lxcfs = [["/proc/meminfo", "/proc/meminfo", "fuse.lxcfs", "ro"]]
    assert checks.mount_row(lxcfs, "root", CTX).status == "PASS"
    other = [*lxcfs, ["/proc/kcore", "/proc/kcore", "fuse.lxcfs", "ro"]]
    assert checks.mount_row(other, "root", CTX).status == "FAIL"
    assert checks.mount_row([["/srv", "/", "fuse.sshfs", "rw"]], "root", CTX).status == "FAIL"


# The sinkhole's own reach (verify/sinkself.py).
_SINK_CLEAN: dict[str, object] = {
    "uid": 65534,
    "processes": [["1", "65534", "0000000000000000"], ["7", "65533", "0000000000000000"]],
    "default_route": False,
    "tcp": {
        "10.0.0.5:4711": "timeout",
        "172.17.0.1:4712": "EHOSTUNREACH",
        "203.0.113.7:80": "timeout",
    },
    "unix": {"/run/sandtrap-fetch/fetch.sock": "connected", "/var/run/docker.sock": "absent"},
}


def _sink_rows(obs: dict[str, object], hits: list[str] | None = None) -> dict[str, str]:
    rows = sinkhole_self_rows(obs, hits or [], {"10.0.0.5:4711": "host address (eth0)"})
    return {row.check: row.status for row in rows}


def test_a_contained_sinkhole_passes() -> None:
    statuses = _sink_rows(_SINK_CLEAN)
    assert len(statuses) == 4 and set(statuses.values()) == {"PASS"}, statuses


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"processes": [["1", "0", "0000000000000000"]]}, "sinkhole: processes"),
        ({"processes": [["1", "65534", "0000000000002000"]]}, "sinkhole: processes"),
        ({"processes": []}, "sinkhole: processes"),
        ({"default_route": True}, "sinkhole: default route"),
        (
            {"tcp": {"10.0.0.5:4711": "connected"}},
            "sinkhole: TCP to the host, the bridge gateway, a documentation address",
        ),
        ({"tcp": {}}, "sinkhole: TCP to the host, the bridge gateway, a documentation address"),
        ({"unix": {"/var/run/docker.sock": "connected"}}, "sinkhole: Unix sockets (engine, gate)"),
        (
            {"unix": {"/srv/var/run/gate.sock": "connected"}},
            "sinkhole: Unix sockets (engine, gate)",
        ),
    ],
)
def test_each_sinkhole_breach_fails(change: dict[str, object], check: str) -> None:
    statuses = _sink_rows({**_SINK_CLEAN, **change})
    assert statuses[check] == "FAIL"
    assert sum(status == "FAIL" for status in statuses.values()) == 1, statuses


def test_a_listener_hit_during_the_sinkhole_probe_fails() -> None:
    statuses = _sink_rows(_SINK_CLEAN, ["('10.0.0.2', 40000)"])
    assert (
        statuses["sinkhole: TCP to the host, the bridge gateway, a documentation address"] == "FAIL"
    )


def test_bridge_row() -> None:
    ports = {"vs": (7, False), "va": (8, True), "vb": (9, True)}
    assert bridge_row(ports, 7).status == "PASS"
    assert bridge_row({**ports, "vb": (9, False)}, 7).status == "FAIL"  # a sandbox port open
    assert bridge_row({**ports, "vs": (7, True)}, 7).status == "FAIL"  # the sinkhole cut off
    assert bridge_row(ports, None).status == "FAIL"  # the sinkhole's port not found
    assert bridge_row(None, None).status == "WARN"  # not the host's network namespace


def test_the_verifiers_config_gets_its_own_sinkhole_subnet_and_runsc_no_network(
    tmp_path: Path,
) -> None:
    config = parse_config({"sensor": "honeypot-1"})
    mine, _ = verifier_config(config, tmp_path, None)
    assert mine.sandbox.network == "sinkhole"
    assert mine.sandbox.sinkhole.subnet == sensor_subnet(mine.sensor)
    assert mine.sandbox.sinkhole.subnet != config.sandbox.sinkhole.subnet  # runs beside it
    given = parse_config({"sensor": "h", "sandbox": {"sinkhole": {"subnet": "10.7.0.0/16"}}})
    assert verifier_config(given, tmp_path, None)[0].sandbox.sinkhole.subnet == "10.7.0.0/16"
    assert verifier_config(config, tmp_path, "runsc")[0].sandbox.network == "none"
    with pytest.raises(ConfigError, match="runsc"):  # asked for explicitly: said, not dropped
        verifier_config(parse_config({"sandbox": {"network": "sinkhole"}}), tmp_path, "runsc")
