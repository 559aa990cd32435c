"""Property-based tests of the gate's pure parts: arbitrary input never raises anything but the
gate's own refusals, and nothing but SandTrap's own bodies is ever forwarded."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandtrap.config import parse_config
from sandtrap.gate.bodies import (
    create_body,
    exec_create_body,
    exec_start_request_body,
    parse_body,
)
from sandtrap.gate.http import BadRequest, parse_head
from sandtrap.gate.policy import GatePolicy, Refused, route
from sandtrap.sandbox.hardening import container_body

CONFIG = parse_config({"sensor": "s1", "sandbox": {"image": "sandtrap/target-debian:12"}})
POLICY = GatePolicy.from_config(CONFIG, "v1.41", blkio_device="/dev/sda")
GOOD = container_body(
    CONFIG.sandbox,
    image="sandtrap/target-debian:12",
    hostname="web-prod-01",
    sensor="s1",
    created=datetime(2026, 1, 1, tzinfo=UTC),
    blkio_device="/dev/sda",
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)
# Keys an attacker would try: the engine's own field names in odd cases, and near-misses.
key_names = st.sampled_from(
    [
        "Privileged", "privileged", "PRIVILEGED", "SecurityOpt", "securityopt", "Init", "LogConfig",
        "Binds", "Mounts", "Devices", "CapAdd", "PidMode", "Runtime", "Labels", "HostConfig",
        "NetworkMode", "Memory", "Image", "Hostname", "Cmd", "Entrypoint", "User", "Env",
        "Privileged ", "\u0130nit", "com.docker.compose.project", "sandtrap.sensor",
    ]
) | st.text(max_size=12)  # fmt: skip


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        dicts = [p for p in _paths(body) if isinstance(_get(body, p), dict)]
        where = draw(st.sampled_from(dicts))
        node = _get(body, where)
        key = draw(key_names | st.sampled_from(sorted(node)) if node else key_names)
        if draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = draw(json_values)
    return body


def _outcome(call: Callable[[], Any]) -> tuple[Any, Refused | None]:
    """The call's result, or the refusal it raised (anything else fails the test)."""
    try:
        return call(), None
    except Refused as exc:
        return None, exc


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes_are_a_request_head_or_a_bad_request(raw: bytes) -> None:
    for head in (raw + b"\r\n\r\n", b"GET /v1.41/version HTTP/1.1\r\n" + raw + b"\r\n\r\n"):
        try:
            request = parse_head(head)
        except BadRequest:
            continue
        assert request.content_length >= 0
        assert not any(ch in request.target for ch in "\r\n\x00 ")


@SETTINGS
@given(
    st.sampled_from(["GET", "POST", "HEAD", "DELETE", "PUT", "get", "OPTIONS"]),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80)
    | st.builds("/v1.41/{}".format, st.text(max_size=80)),
    st.booleans(),
)
def test_any_target_is_routed_or_refused(method: str, target: str, upgrade: bool) -> None:
    checked, refused = _outcome(lambda: route(POLICY, method, target, upgrade=upgrade))
    if refused is not None:
        assert refused.rule == "route"
        return
    assert ".." not in checked.path and "\n" not in checked.target and "\r" not in checked.path
    if checked.upgrade:
        assert (checked.kind, checked.action) == ("exec", "start")


@SETTINGS
@given(st.binary(max_size=400) | st.builds(str.encode, st.text(max_size=200)))
def test_any_body_bytes_parse_or_are_refused(raw: bytes) -> None:
    data, refused = _outcome(lambda: parse_body(raw, "create", "create"))
    assert isinstance(data, dict) or refused is not None


@SETTINGS
@given(mutated_bodies())
def test_a_create_passes_only_as_this_sensors_sandbox_body(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    forwarded, refused = _outcome(lambda: create_body(POLICY, parse_body(raw, "create", "create")))
    if refused is not None:
        assert refused.rule == "create"
        return
    # What is forwarded is the pool's body: the same HostConfig, the same keys and labels.
    assert forwarded["HostConfig"] == GOOD["HostConfig"]
    assert set(forwarded) == set(GOOD) and set(forwarded["Labels"]) == set(GOOD["Labels"])
    assert json.dumps(forwarded, sort_keys=True) == json.dumps(
        {**GOOD, "Hostname": forwarded["Hostname"], "Labels": forwarded["Labels"],
         "Image": forwarded["Image"]}, sort_keys=True
    )  # fmt: skip


@SETTINGS
@given(
    st.dictionaries(key_names, json_values, max_size=8)
    | st.fixed_dictionaries(
        {
            "Cmd": st.lists(st.text(max_size=10), max_size=3),
            "User": st.sampled_from(["root", "alice", "0", "root:root", ""]),
            "Tty": json_values,
            "AttachStdin": st.booleans(),
            "AttachStdout": st.just(True),
            "AttachStderr": st.just(True),
            "Privileged": json_values,
            "Env": st.lists(st.text(max_size=10), max_size=3),
        }
    )
)
def test_an_exec_passes_only_as_sandtraps_exec_body(body: dict[str, Any]) -> None:
    forwarded, refused = _outcome(lambda: exec_create_body(body))
    if refused is not None:
        assert refused.rule == "exec"
    else:
        assert forwarded["Privileged"] is False and forwarded["AttachStdout"] is True
        assert set(forwarded) <= {
            "Cmd", "User", "Tty", "AttachStdin", "AttachStdout", "AttachStderr", "Privileged",
            "Env", "WorkingDir",
        }  # fmt: skip
    started, refused = _outcome(lambda: exec_start_request_body(body))
    if refused is not None:
        return
    assert started["Detach"] is False and set(started) == {"Detach", "Tty"}
