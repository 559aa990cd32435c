"""The gate's policy (pure): hostile Engine API requests are refused, SandTrap's own ones pass."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from sandtrap.config import parse_config
from sandtrap.gate.bodies import (
    check_capacity,
    check_create,
    check_exec,
    check_exec_start,
    encode_body,
    parse_body,
)
from sandtrap.gate.policy import GatePolicy, Refused, force_label_filter, is_ours, route
from sandtrap.sandbox.hardening import container_body

CONFIG = parse_config({"sensor": "s1", "sandbox": {"image": "sandtrap/target-debian:12"}})
POLICY = GatePolicy.from_config(CONFIG, "v1.41")
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


def test_the_pools_own_body_passes() -> None:
    check_create(POLICY, good_body())


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


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("HostConfig.Privileged", True, "Privileged must be false"),
        ("HostConfig.Binds", ["/:/host"], "Binds must be empty"),
        ("HostConfig.Mounts", [{"Type": "bind", "Source": "/", "Target": "/h"}], "Mounts"),
        ("HostConfig.Devices", [{"PathOnHost": "/dev/sda"}], "Devices must be empty"),
        ("HostConfig.NetworkMode", "bridge", "NetworkMode must be 'none'"),
        ("HostConfig.NetworkMode", "host", "NetworkMode must be 'none'"),
        ("HostConfig.NetworkMode", "container:abc", "NetworkMode must be 'none'"),
        ("HostConfig.CapAdd", ["SYS_ADMIN"], "beyond the configured capabilities"),
        ("HostConfig.CapAdd", ["CAP_NET_RAW"], "beyond the configured capabilities"),
        ("HostConfig.CapAdd", ["ALL"], "beyond the configured capabilities"),
        ("HostConfig.CapDrop", [], "CapDrop must contain ALL"),
        ("HostConfig.SecurityOpt", [], "no-new-privileges"),
        ("HostConfig.SecurityOpt", ["no-new-privileges:false"], "not allowed"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"], "not allowed"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "apparmor=unconfined"], "not allowed"),
        ("HostConfig.SecurityOpt", ["no-new-privileges", "label=disable"], "not allowed"),
        ("HostConfig.PidsLimit", KeyError, "PidsLimit must be set"),
        ("HostConfig.PidsLimit", -1, "PidsLimit must be set"),
        ("HostConfig.PidsLimit", 10**6, "PidsLimit must be set"),
        ("HostConfig.Memory", 0, "Memory must be set"),
        ("HostConfig.MemorySwap", -1, "MemorySwap must equal Memory"),
        ("HostConfig.Runtime", "runsc-debug", "Runtime must be 'runc'"),
        ("HostConfig.PidMode", "host", "HostConfig.PidMode is not allowed"),
        ("HostConfig.IpcMode", "host", "IpcMode 'host' is not allowed"),
        ("HostConfig.UTSMode", "host", "HostConfig.UTSMode is not allowed"),
        ("HostConfig.UsernsMode", "host", "HostConfig.UsernsMode is not allowed"),
        ("HostConfig.VolumesFrom", ["other"], "HostConfig.VolumesFrom is not allowed"),
        ("HostConfig.ExtraHosts", ["metadata:169.254.169.254"], "ExtraHosts is not allowed"),
        ("HostConfig.PortBindings", {"22/tcp": [{"HostPort": "22"}]}, "PortBindings"),
        ("HostConfig.Sysctls", {"kernel.x": "1"}, "Sysctls is not allowed"),
        ("HostConfig.MaskedPaths", [], "MaskedPaths is not allowed"),
        ("HostConfig.CgroupParent", "/", "CgroupParent is not allowed"),
        ("HostConfig.privileged", True, "HostConfig.privileged is not allowed"),
        ("HostConfig.RestartPolicy", {"Name": "always"}, "RestartPolicy must be 'no'"),
        ("HostConfig.LogConfig", {"Type": "syslog", "Config": {}}, "LogConfig"),
        ("HostConfig.BlkioDeviceReadBps", [{"Path": "/etc/passwd", "Rate": 1}], "Blkio"),
        ("HostConfig", KeyError, "HostConfig must be set"),
        ("Labels", {}, "Labels must carry"),
        ("Labels.sandtrap.sensor", "other", "Labels must carry"),
        ("Image", "alpine:latest", "not a configured target image"),
        ("NetworkDisabled", False, "NetworkDisabled must be true"),
        ("Volumes", {"/data": {}}, "body.Volumes is not allowed"),
        ("ExposedPorts", {"22/tcp": {}}, "body.ExposedPorts is not allowed"),
        ("NetworkingConfig", {"EndpointsConfig": {"bridge": {}}}, "NetworkingConfig"),
    ],
)
def test_hostile_create_bodies_are_refused(path: str, value: Any, reason: str) -> None:
    if path == "Labels.sandtrap.sensor":
        body = good_body()
        body["Labels"]["sandtrap.sensor"] = value
    else:
        body = _with(path, value)
    with pytest.raises(Refused, match=reason.replace("(", r"\(")):
        check_create(POLICY, body)


def test_case_and_duplicate_key_tricks_do_not_pass() -> None:
    # Go's JSON decoder matches keys case-insensitively and keeps the last duplicate.
    raw = json.dumps(good_body())[:-1] + ', "hostconfig": {"Privileged": true}}'
    with pytest.raises(Refused, match="hostconfig is not allowed"):
        check_create(POLICY, parse_body(raw.encode(), "create"))
    raw = json.dumps(good_body()).replace(
        '"Privileged": false', '"Privileged": false, "Privileged": true'
    )
    with pytest.raises(Refused, match="Privileged must be false"):
        check_create(POLICY, parse_body(raw.encode(), "create"))
    # What is forwarded is the re-encoding of what was checked: one key each.
    data = good_body()
    assert json.loads(encode_body(data)) == data


def test_bodies_that_are_not_objects_are_refused() -> None:
    for raw in (b"[]", b"not json", b'"x"', b"\xff"):
        with pytest.raises(Refused):
            parse_body(raw, "create")


def test_exec_bodies() -> None:
    check_exec({"Cmd": ["/bin/bash"], "User": "root", "Tty": True, "Privileged": False})
    with pytest.raises(Refused, match="Privileged must be false"):
        check_exec({"Cmd": ["/bin/sh"], "Privileged": True})
    with pytest.raises(Refused, match="privileged is not allowed"):
        check_exec({"Cmd": ["/bin/sh"], "privileged": True})
    with pytest.raises(Refused, match="Cmd must be"):
        check_exec({"Cmd": []})
    check_exec_start({"Detach": False, "Tty": True})
    with pytest.raises(Refused):
        check_exec_start({"Detach": False, "ConsoleSize": [1, 1]})


@pytest.mark.parametrize(
    ("method", "target", "kind"),
    [
        ("GET", "/version", "plain"),
        ("GET", "/v1.41/version", "plain"),
        ("GET", "/v1.41/info", "plain"),
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
