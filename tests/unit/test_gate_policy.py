"""The gate's policy (pure): hostile Engine API requests are refused, SandTrap's own ones pass."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from sandtrap.config import parse_config
from sandtrap.gate.bodies import (
    check_capacity,
    create_body,
    encode_body,
    exec_create_body,
    exec_start_request_body,
    parse_body,
)
from sandtrap.gate.policy import GatePolicy, Refused, force_label_filter, is_ours, route
from sandtrap.sandbox.docker import exec_body
from sandtrap.sandbox.hardening import container_body

CONFIG = parse_config(
    {"sensor": "s1", "sandbox": {"image": "sandtrap/target-debian:12", "network": "none"}}
)
POLICY = GatePolicy.from_config(CONFIG, "v1.41", blkio_device="/dev/sda")
CID = "a" * 64


def good_body() -> dict[str, Any]:
    return container_body(
        CONFIG.sandbox,
        image="sandtrap/target-debian:12",
        hostname="web-prod-01",
        sensor="s1",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        blkio_device="/dev/sda",
    )


def check_create(policy: GatePolicy, body: dict[str, Any]) -> dict[str, Any]:
    return create_body(policy, parse_body(encode_body(body), "create", "create"))


def test_the_pools_own_body_passes_and_is_what_is_forwarded() -> None:
    assert check_create(POLICY, good_body()) == good_body()
    # Without the blkio throttle (a front that cannot see the disk): the gate adds its own.
    body = good_body()
    del body["HostConfig"]["BlkioDeviceReadBps"], body["HostConfig"]["BlkioDeviceWriteBps"]
    assert check_create(POLICY, body) == good_body()
    # The image, host name and creation time vary; the labels follow them.
    probe = container_body(
        CONFIG.sandbox,
        image="sandtrap/target-debian:12",
        hostname="probe",
        sensor="s1",
        created=datetime(2027, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )
    assert check_create(POLICY, probe)["Hostname"] == "probe"


def test_runsc_bodies_get_room_for_gvisors_own_tasks() -> None:
    config = parse_config(
        {"sensor": "s1", "sandbox": {"image": "sandtrap/target-debian:12", "runtime": "runsc"}}
    )
    body = container_body(
        config.sandbox,
        image="sandtrap/target-debian:12",
        hostname="web-prod-01",
        sensor="s1",
        created=datetime(2026, 1, 1, tzinfo=UTC),
    )
    # 100 processes inside need about 12 host tasks each under gVisor's ptrace platform.
    assert body["HostConfig"]["PidsLimit"] == 64 + 12 * 100
    assert body["HostConfig"]["Runtime"] == "runsc"
    policy = GatePolicy.from_config(config, "v1.41")
    check_create(policy, body)
    body["HostConfig"]["PidsLimit"] += 1
    with pytest.raises(Refused, match="PidsLimit"):
        check_create(policy, body)
    # The runc policy does not take a runsc-sized limit.
    with pytest.raises(Refused, match="PidsLimit"):
        check_create(POLICY, _with("HostConfig.PidsLimit", 64 + 12 * 100))


def _with(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(good_body())
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return body


SECCOMP_ALLOW = 'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("HostConfig.Privileged", True, "Privileged must be false"),
        ("HostConfig.Binds", ["/:/host"], "Binds must be []"),
        ("HostConfig.Mounts", [{"Type": "bind", "Source": "/", "Target": "/h"}], "Mounts"),
        ("HostConfig.Devices", [{"PathOnHost": "/dev/sda"}], "Devices must be []"),
        ("HostConfig.NetworkMode", "bridge", 'NetworkMode must be "none"'),
        ("HostConfig.NetworkMode", "host", "NetworkMode must be"),
        ("HostConfig.NetworkMode", "container:abc", "NetworkMode must be"),
        ("HostConfig.CapAdd", ["SYS_ADMIN"], "CapAdd must be"),
        ("HostConfig.CapAdd", ["CAP_NET_RAW"], "CapAdd must be"),
        ("HostConfig.CapAdd", ["ALL"], "CapAdd must be"),
        ("HostConfig.CapAdd", [], "CapAdd must be"),
        ("HostConfig.CapDrop", [], "CapDrop must be"),
        ("HostConfig.SecurityOpt", [], "SecurityOpt must be"),
        ("HostConfig.SecurityOpt", ["no-new-privileges:false"], "SecurityOpt must be"),
        ("HostConfig.SecurityOpt", ["no-new-privileges:true", SECCOMP_ALLOW], "SecurityOpt"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"], "SecurityOpt"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "apparmor=unconfined"], "SecurityOpt"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "label=disable"], "SecurityOpt"),
        ("HostConfig.PidsLimit", KeyError, "PidsLimit is missing"),
        ("HostConfig.PidsLimit", -1, "PidsLimit must be 100"),
        ("HostConfig.PidsLimit", 99, "PidsLimit must be 100"),
        ("HostConfig.PidsLimit", 100.0, "PidsLimit must be 100, got 100.0"),
        ("HostConfig.Memory", 0, "Memory must be"),
        ("HostConfig.MemorySwap", -1, "MemorySwap must be"),
        ("HostConfig.Runtime", "runsc-debug", 'Runtime must be "runc"'),
        ("HostConfig.PidMode", "host", "HostConfig.PidMode is not a field"),
        ("HostConfig.IpcMode", "host", "IpcMode must be"),
        ("HostConfig.CgroupnsMode", "host", 'CgroupnsMode must be "private"'),
        ("HostConfig.CgroupnsMode", KeyError, "CgroupnsMode is missing"),
        ("HostConfig.UTSMode", "host", "HostConfig.UTSMode is not a field"),
        ("HostConfig.UsernsMode", "host", "HostConfig.UsernsMode is not a field"),
        ("HostConfig.VolumesFrom", ["other"], "HostConfig.VolumesFrom is not a field"),
        ("HostConfig.ExtraHosts", ["metadata:169.254.169.254"], "ExtraHosts is not a field"),
        ("HostConfig.PortBindings", {"22/tcp": [{"HostPort": "22"}]}, "PortBindings"),
        ("HostConfig.Sysctls", {"kernel.x": "1"}, "Sysctls is not a field"),
        ("HostConfig.MaskedPaths", [], "MaskedPaths is not a field"),
        ("HostConfig.CgroupParent", "/", "CgroupParent is not a field"),
        ("HostConfig.privileged", True, "HostConfig.privileged is not a field"),
        ("HostConfig.RestartPolicy", {"Name": "always"}, "RestartPolicy.Name must be"),
        ("HostConfig.LogConfig", {"Type": "json-file", "Config": {}}, "LogConfig.Type must be"),
        ("HostConfig.LogConfig", {"Type": "syslog", "Config": {}}, "LogConfig"),
        ("HostConfig.Init", True, "Init must be false"),
        ("HostConfig.Init", KeyError, "Init is missing"),
        ("HostConfig.BlkioDeviceReadBps", [{"Path": "/etc/passwd", "Rate": 1}], "Blkio"),
        ("HostConfig.BlkioDeviceWriteBps", [], "Blkio"),
        ("HostConfig", KeyError, "HostConfig is missing"),
        ("Labels", {}, "Labels must carry"),
        ("Labels.sandtrap.sensor", "other", "Labels must carry"),
        ("Labels.com.docker.compose.project", "sandtrap", "is not a field"),
        ("Labels.sandtrap.created", "yesterday", "sandtrap.created must be"),
        ("Labels.sandtrap.image", "alpine", "sandtrap.image must be"),
        ("Labels.sandtrap.hostname", "db-1", "sandtrap.hostname must be"),
        ("Image", "alpine:latest", "not a configured target image"),
        ("Image", KeyError, "Image must be a string"),
        ("Hostname", "a b", "not a valid host name"),
        ("NetworkDisabled", False, "NetworkDisabled must be true"),
        ("Volumes", {"/data": {}}, "body.Volumes is not a field"),
        ("ExposedPorts", {"22/tcp": {}}, "body.ExposedPorts is not a field"),
        ("NetworkingConfig", {"EndpointsConfig": {"bridge": {}}}, "NetworkingConfig"),
        ("Entrypoint", ["/bin/sh"], "Entrypoint is not a field"),
        ("Cmd", ["/bin/sh"], "Cmd is not a field"),
        ("User", "0", "User is not a field"),
    ],
)
def test_hostile_create_bodies_are_refused(path: str, value: Any, reason: str) -> None:
    if path.startswith("Labels."):
        body = good_body()
        body["Labels"][path.removeprefix("Labels.")] = value
    else:
        body = _with(path, value)
    with pytest.raises(Refused, match=re.escape(reason)) as caught:
        check_create(POLICY, body)
    assert caught.value.rule == "create"


def test_case_and_duplicate_key_tricks_do_not_pass() -> None:
    # Go's JSON decoder matches keys case-insensitively and keeps the last duplicate.
    raw = json.dumps(good_body())[:-1] + ', "hostconfig": {"Privileged": true}}'
    with pytest.raises(Refused, match="hostconfig is not a field"):
        create_body(POLICY, parse_body(raw.encode(), "create", "create"))
    raw = json.dumps(good_body()).replace(
        '"Privileged": false', '"Privileged": false, "Privileged": true'
    )
    with pytest.raises(Refused, match="repeats a key"):
        parse_body(raw.encode(), "create", "create")
    # Unicode escapes decode to the same key (as in Go), so they change nothing.
    raw = json.dumps(good_body()).replace('"Privileged": false', '"\\u0050rivileged": true')
    with pytest.raises(Refused, match="Privileged must be false"):
        create_body(POLICY, parse_body(raw.encode(), "create", "create"))


def test_bodies_that_are_not_strict_json_objects_are_refused() -> None:
    for raw in (b"[]", b"not json", b'"x"', b"\xff", b'{"a": NaN}', b"[" * 100_000, b"{" * 5):
        with pytest.raises(Refused):
            parse_body(raw, "create", "create")


def test_exec_bodies_are_sandtraps_own() -> None:
    own = exec_body(["/bin/bash"], user="root", tty=True, env={"LANG": "C"}, workdir=None)
    assert exec_create_body(own) == own
    run = exec_body(["id"], user="alice", tty=False, env=None, workdir="/", stdin=True)
    assert exec_create_body(run) == run
    for change, reason in [
        ({"Privileged": True}, "Privileged must be false"),
        ({"privileged": True}, "privileged is not a field"),
        ({"Cmd": []}, "Cmd must be"),
        ({"User": "0:0"}, "not root or a valid login name"),
        ({"Env": ["LD_PRELOAD"]}, "NAME=value"),
        ({"WorkingDir": "tmp"}, "absolute"),
        ({"AttachStdout": False}, "AttachStdout must be true"),
        ({"DetachKeys": "ctrl-p"}, "DetachKeys is not a field"),
        ({"ConsoleSize": [1, 1]}, "ConsoleSize is not a field"),
    ]:
        with pytest.raises(Refused, match=re.escape(reason)):
            exec_create_body({**own, **change})
    assert exec_start_request_body({"Detach": False, "Tty": True}) == {"Detach": False, "Tty": True}
    for bad in ({"Detach": True, "Tty": False}, {"Detach": False, "ConsoleSize": [1, 1]}, {}):
        with pytest.raises(Refused):
            exec_start_request_body(bad)


@pytest.mark.parametrize(
    ("method", "target", "kind"),
    [
        ("GET", "/version", "plain"),
        ("GET", "/v1.41/version", "plain"),
        ("GET", "/v1.41/info", "info"),
        ("GET", f"/v1.41/images/{quote('sandtrap/target-debian:12', safe='/:')}/json", "plain"),
        ("POST", "/v1.41/containers/create?name=sandtrap-pool-0123", "create"),
        ("GET", "/v1.41/containers/json?all=true&filters=%7B%7D", "list"),
        ("POST", f"/v1.41/containers/{CID}/start", "container"),
        ("POST", f"/v1.41/containers/{CID}/stop?t=2", "container"),
        (
            "POST",
            f"/v1.41/containers/{CID}/rename?name=sandtrap-s-0123456789ab-1.2.3.4",
            "container",
        ),
        ("DELETE", f"/v1.41/containers/{CID}?force=true&v=true", "container"),
        ("GET", f"/v1.41/containers/{CID}/json?size=true", "container"),
        ("GET", f"/v1.41/containers/{CID}/changes", "container"),
        ("HEAD", f"/v1.41/containers/{CID}/archive?path=%2Fetc%2Fpasswd", "container"),
        ("GET", f"/v1.41/containers/{CID}/archive?path=%2Ftmp", "container"),
        ("POST", f"/v1.41/containers/{CID}/exec", "exec_create"),
        ("POST", f"/v1.41/exec/{CID}/resize?h=24&w=80", "exec"),
        ("GET", f"/v1.41/exec/{CID}/json", "exec"),
    ],
)
def test_the_engine_calls_sandtrap_makes_are_routed(method: str, target: str, kind: str) -> None:
    assert route(POLICY, method, target).kind == kind


def test_exec_start_may_upgrade() -> None:
    assert route(POLICY, "POST", f"/v1.41/exec/{CID}/start", upgrade=True).upgrade


@pytest.mark.parametrize(
    ("method", "target", "reason"),
    [
        ("POST", f"/v1.41/containers/{CID}/attach?stream=1", "not an endpoint"),
        ("POST", "/v1.41/images/create?fromImage=alpine", "not an endpoint"),
        ("POST", "/v1.41/build", "not an endpoint"),
        ("GET", "/v1.41/swarm", "not an endpoint"),
        ("POST", "/v1.41/volumes/create", "not an endpoint"),
        ("GET", "/v1.41/networks", "not an endpoint"),
        ("GET", "/v1.41/plugins", "not an endpoint"),
        ("POST", "/v1.41/session", "not an endpoint"),
        ("GET", "/v1.41/images/alpine/json", "not one of the configured target images"),
        ("PUT", f"/v1.41/containers/{CID}/archive?path=/", "not an endpoint"),
        ("POST", f"/v1.41/containers/{CID}/update", "not an endpoint"),
        ("POST", f"/v1.41/containers/{CID}/commit", "not an endpoint"),
        ("GET", f"/v1.41/containers/{CID}/export", "not an endpoint"),
        ("POST", f"/v1.41/containers/{CID}/kill", "not an endpoint"),
        ("GET", "/v1.40/info", "API version"),
        ("GET", "/info", "API version"),
        ("GET", "/v1.41/../v1.40/info", "not in the form"),
        ("GET", "/v1.41//info", "not in the form"),
        ("GET", "/v1.41/containers/%2e%2e/json", "not in the form"),
        ("POST", "/v1.41/containers/create?name=evil", "must start with 'sandtrap-'"),
        ("POST", "/v1.41/containers/create?name=sandtrap-x&name=sandtrap-y", "given 2 times"),
        ("POST", f"/v1.41/containers/{CID}/rename?name=evil", "renamed"),
        ("DELETE", f"/v1.41/containers/{CID}?link=true", "'link' is not allowed"),
        ("GET", "/v1.41/containers/json?filters=%7B%22id%22%3A%5B%22x%22%5D%7D", "only a label"),
        ("POST", f"/v1.41/containers/{CID}/start", "connection upgrade"),
        ("POST", f"/v1.41/containers/{CID}/stop?t=1%0d%0aX:y", "has value"),
        ("GET", "/v1.41/containers/json?all=yes%0a", "has value"),
        ("GET", "/v1.41", "not an endpoint"),
        ("GET", "/v1.41/", "not an endpoint"),
        ("HEAD", "/v1.41/info", "not an endpoint"),
        ("GET", "/v1.41/containers/../info", "not in the form"),
        ("GET", "/v1.41/./info", "not in the form"),
        ("GET", "/v1.41/containers/%2e%2e/info", "not in the form"),
        ("GET", "/v1.41/info\n", "not in the form"),
        ("POST", f"/v1.41/containers/{CID}\n/start", "not in the form"),
        ("POST", f"/v1.41/containers/{CID}/restart", "not an endpoint"),
        ("POST", f"/v1.41/containers/{CID}/unpause", "not an endpoint"),
        ("POST", "/v1.41/containers/create?name=sandtrap-x%0a", "must start with 'sandtrap-'"),
    ],
)
def test_everything_else_is_refused(method: str, target: str, reason: str) -> None:
    upgrade = reason == "connection upgrade"
    with pytest.raises(Refused, match=reason):
        route(POLICY, method, target, upgrade=upgrade)


def test_list_gets_the_label_filter_forced() -> None:
    query = force_label_filter(POLICY, {"filters": ['{"label": ["sandtrap.role=sandbox"]}']})
    assert json.loads(query["filters"][0]) == {
        "label": ["sandtrap.role=sandbox", "sandtrap.sensor=s1"]
    }
    query = force_label_filter(POLICY, {"all": ["true"]})
    assert json.loads(query["filters"][0])["label"] == list(POLICY.labels)


def test_ownership_needs_both_labels() -> None:
    labels = {"sandtrap.role": "sandbox", "sandtrap.sensor": "s1"}
    assert is_ours(POLICY, {"Config": {"Labels": labels}})
    assert not is_ours(POLICY, {"Config": {"Labels": {**labels, "sandtrap.sensor": "s2"}}})
    assert not is_ours(POLICY, {"Config": {"Labels": None}})
    assert not is_ours(POLICY, {})


def test_capacity_bounds_live_and_total_sandboxes() -> None:
    config = parse_config(
        {
            "sensor": "s1",
            "sandbox": {"image": "sandtrap/target-debian:12"},
            "pool": {"size": 2, "max_sandboxes": 3},
            "retention": {"max_count": 4},
        }
    )
    policy = GatePolicy.from_config(config, "v1.41")
    assert (policy.max_live, policy.max_total) == (6, 10)
    running = [{"State": "running"}] * 5
    check_capacity(policy, running)
    with pytest.raises(Refused, match="capacity: 6 sandboxes of this sensor are running"):
        check_capacity(policy, [*running, {"State": "created"}])
    # Stopped (kept) sandboxes count only against the total.
    check_capacity(policy, [*running, *[{"State": "exited"}] * 4])
    with pytest.raises(Refused, match="capacity: 10 sandboxes of this sensor exist"):
        check_capacity(policy, [*running, *[{"State": "exited"}] * 5])


def test_capacity_counts_the_start_of_a_stopped_sandbox() -> None:
    config = parse_config(
        {"sensor": "s1", "sandbox": {"image": "sandtrap/target-debian:12"},
         "pool": {"size": 1, "max_sandboxes": 1}}
    )  # fmt: skip
    policy = GatePolicy.from_config(config, "v1.41")
    listing = [
        {"Id": "a", "State": "running"},
        {"Id": "b", "State": "created"},
        {"Id": "c", "State": "exited"},
    ]
    check_capacity(policy, listing, starting="b")  # created is counted already
    with pytest.raises(Refused, match="capacity: 2 sandboxes") as caught:
        check_capacity(policy, listing, starting="c")
    assert caught.value.rule == "capacity"
    check_capacity(policy, listing[:1] + listing[2:], starting="c")


def _lxcfs_body(**changes: Any) -> dict[str, Any]:
    body = container_body(
        CONFIG.sandbox,
        image="sandtrap/target-debian:12",
        hostname="web-prod-01",
        sensor="s1",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        blkio_device="/dev/sda",
        lxcfs=True,
    )
    body["HostConfig"]["Mounts"][0].update(changes)
    return body


def test_lxcfs_binds_pass_exactly_and_no_other_mount_does() -> None:
    mounts = _lxcfs_body()["HostConfig"]["Mounts"]
    assert {m["Target"] for m in mounts} == {
        "/proc/cpuinfo", "/proc/diskstats", "/proc/loadavg", "/proc/meminfo", "/proc/stat",
        "/proc/swaps",
    }  # fmt: skip
    assert all(
        m["ReadOnly"] is True and m["Source"].startswith("/var/lib/lxcfs/proc/") for m in mounts
    )
    assert check_create(POLICY, _lxcfs_body()) == _lxcfs_body()
    for change, reason in (
        ({"Source": "/"}, "Mounts"),
        ({"Source": "/var/lib/lxcfs/../../etc/shadow"}, "Mounts"),
        ({"ReadOnly": False}, "Mounts"),
        ({"Target": "/proc/sysrq-trigger"}, "Mounts"),
        ({"Type": "volume"}, "Mounts"),
        ({"BindOptions": {"Propagation": "rshared"}}, "Mounts must be"),
    ):
        with pytest.raises(Refused, match=re.escape(reason)):
            check_create(POLICY, _lxcfs_body(**change))
    extra = _lxcfs_body()
    extra["HostConfig"]["Mounts"].append(
        {"Type": "bind", "Source": "/", "Target": "/host", "ReadOnly": True}
    )
    with pytest.raises(Refused, match="Mounts"):
        check_create(POLICY, extra)
    # With sandbox.lxcfs off in the gate's configuration, not even LXCFS's binds pass.
    off = parse_config(
        {"sensor": "s1", "sandbox": {**CONFIG.sandbox.model_dump(mode="json"), "lxcfs": "off"}}
    )
    with pytest.raises(Refused, match="Mounts must be"):
        check_create(GatePolicy.from_config(off, "v1.41", blkio_device="/dev/sda"), _lxcfs_body())
