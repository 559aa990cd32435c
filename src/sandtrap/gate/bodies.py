"""The gate's body checks: allowlists by construction for create, exec and exec-start bodies.

Owns the decision on request bodies and the capacity check; routes and ownership are
gate/policy.py's. The gate builds the body it would send itself, with the functions SandTrap's
own engine client uses (`container_body`, `exec_body`, `exec_start_body`), from its own
configuration and the few fields that legitimately vary; a request passes only when it equals
that body, and what is forwarded is the gate's own body, never the client's bytes. A field the
pool does not set is refused whatever its value; a field added to the pool's body is allowed by
construction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sandtrap.config import HOSTNAME_RE
from sandtrap.events import rfc3339
from sandtrap.gate.policy import GatePolicy, Refused
from sandtrap.sandbox.docker import exec_body, exec_start_body
from sandtrap.sandbox.hardening import (
    LABEL_CREATED,
    LABEL_ROLE,
    LABEL_SENSOR,
    ROLE_SANDBOX,
    container_body,
    is_valid_username,
    parse_engine_time,
)

# The largest body each kind of request may carry: a create with a custom seccomp profile is tens
# of KiB; an exec carries the attacker's command (an SSH packet, at most 256 KiB, up to six bytes
# each once JSON-escaped); everything else SandTrap sends has no body.
MAX_CREATE_BYTES = 256 * 1024
MAX_EXEC_BYTES = 2 * 1024 * 1024
MAX_EXEC_START_BYTES = 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_ARGS = 4096
_BLKIO = frozenset({"BlkioDeviceReadBps", "BlkioDeviceWriteBps"})


def max_body_bytes(kind: str, action: str) -> int:
    """The body a route kind may carry (0: none)."""
    if kind == "create":
        return MAX_CREATE_BYTES
    if kind == "exec_create":
        return MAX_EXEC_BYTES
    if kind == "exec" and action == "start":
        return MAX_EXEC_START_BYTES
    return 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("duplicate key")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes, what: str, rule: str) -> dict[str, Any]:
    """A JSON object, strictly: no duplicate keys, no NaN/Infinity, bounded nesting.

    Raises:
        Refused: anything else (never another exception, whatever the bytes).
    """
    try:
        data = json.loads(
            body or b"{}", object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Refused(f"{what}: body is not strict JSON (or repeats a key)", rule) from None
    if not isinstance(data, dict):
        raise Refused(f"{what}: body must be a JSON object", rule)
    return data


def encode_body(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _canonical(value: Any) -> str:
    """Type-exact comparison: `true` is not `1`, `1.0` is not `1`, key order does not matter."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _first_difference(got: Any, want: Any, where: str) -> str:
    """The dotted path of the first field where `got` differs from `want` (for the reason)."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want), key=str):
            if key not in want:
                return f"{where}.{str(key)[:60]} is not a field of this sensor's sandboxes"
            if key not in got:
                return f"{where}.{key} is missing"
            if _canonical(got[key]) != _canonical(want[key]):
                return _first_difference(got[key], want[key], f"{where}.{key}")
    return f"{where} must be {_canonical(want)[:200]}, got {_canonical(got)[:200]}"


def _text(data: Mapping[str, Any], key: str, where: str, rule: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise Refused(f"{where}.{key} must be a string", rule)
    return value


def _bool(data: Mapping[str, Any], key: str, where: str, rule: str) -> bool:
    value = data.get(key)
    if type(value) is not bool:
        raise Refused(f"{where}.{key} must be a boolean", rule)
    return value


def _created(labels: Any) -> datetime:
    value = labels.get(LABEL_CREATED) if isinstance(labels, dict) else None
    moment = parse_engine_time(value) if isinstance(value, str) else None
    if moment is None or rfc3339(moment) != value:
        raise Refused(f"Labels.{LABEL_CREATED} must be an RFC 3339 UTC time", "create")
    return moment


def create_body(policy: GatePolicy, data: Mapping[str, Any]) -> dict[str, Any]:
    """The body to forward for a `containers/create` request: this sensor's sandbox body.

    Varying fields: `Image` (a configured target image), `Hostname` (a valid host name), the
    `sandtrap.created` label (a time). Every other field must equal the pool's; the blkio
    throttle may be absent from the request (the gate sets its own), or equal to the gate's.

    Raises:
        Refused: naming the first field that differs.
    """
    image = _text(data, "Image", "body", "create")
    if image not in policy.images:
        raise Refused(f"Image {image[:80]!r} is not a configured target image", "create")
    hostname = _text(data, "Hostname", "body", "create")
    if not HOSTNAME_RE.fullmatch(hostname):
        raise Refused(f"Hostname {hostname[:80]!r} is not a valid host name", "create")
    labels = data.get("Labels")
    if (
        not isinstance(labels, dict)
        or labels.get(LABEL_ROLE) != ROLE_SANDBOX
        or labels.get(LABEL_SENSOR) != policy.sensor
    ):
        raise Refused(f"Labels must carry {' and '.join(policy.labels)}", "create")
    created = _created(labels)

    def build(blkio_device: str | None, lxcfs: bool) -> dict[str, Any]:
        return container_body(
            policy.sandbox,
            image=image,
            hostname=hostname,
            sensor=policy.sensor,
            created=created,
            blkio_device=blkio_device,
            security_opt=list(policy.security_opt),
            lxcfs=lxcfs,
        )

    # LXCFS's read-only /proc binds (from the gate's own lxcfs_dir) may be there or not: the pool
    # binds them only while LXCFS serves. No other mount is ever allowed.
    host = data.get("HostConfig")
    lxcfs = isinstance(host, dict) and host.get("Mounts") not in (None, [])
    want, unthrottled = build(policy.blkio_device, lxcfs), build(None, lxcfs)
    got = _canonical(data)
    if got == _canonical(want):
        return want
    if got == _canonical(unthrottled):
        return build(policy.blkio_device, lxcfs)
    nearest = unthrottled if isinstance(host, dict) and _BLKIO.isdisjoint(host) else want
    raise Refused(_first_difference(data, nearest, "body"), "create")


def exec_create_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The body to forward for a `containers/{id}/exec` request: SandTrap's exec body.

    Varying fields: `Cmd`, `User` (root or a valid login name), `Env` (`NAME=value`),
    `WorkingDir` (absolute), `Tty`, `AttachStdin`. Never privileged.

    Raises:
        Refused: naming the first field that differs.
    """
    argv = data.get("Cmd")
    if (
        not isinstance(argv, list)
        or not 0 < len(argv) <= _MAX_ARGS
        or not all(isinstance(item, str) for item in argv)
    ):
        raise Refused("exec.Cmd must be a non-empty list of strings", "exec")
    user = _text(data, "User", "exec", "exec")
    if not is_valid_username(user):
        raise Refused(f"exec.User {user[:40]!r} is not root or a valid login name", "exec")
    env = data.get("Env")
    if not isinstance(env, list) or len(env) > _MAX_ARGS:
        raise Refused("exec.Env must be a list of NAME=value strings", "exec")
    pairs: dict[str, str] = {}
    for item in env:
        name, sep, value = item.partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not _ENV_NAME.fullmatch(name) or name in pairs:
            raise Refused("exec.Env must be a list of NAME=value strings", "exec")
        pairs[name] = value
    workdir = data.get("WorkingDir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise Refused("exec.WorkingDir must be an absolute path", "exec")
    want = exec_body(
        argv,
        user=user,
        tty=_bool(data, "Tty", "exec", "exec"),
        env=pairs,
        workdir=workdir,
        stdin=_bool(data, "AttachStdin", "exec", "exec"),
    )
    if _canonical(data) != _canonical(want):
        raise Refused(_first_difference(data, want, "exec"), "exec")
    return want


def exec_start_request_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The body to forward for `exec/{id}/start`: attached, with or without a TTY."""
    want = exec_start_body(_bool(data, "Tty", "exec start", "exec"))
    if _canonical(data) != _canonical(want):
        raise Refused(_first_difference(data, want, "exec start"), "exec")
    return want


_LIVE_STATES = frozenset({"created", "running", "paused", "restarting"})


def check_capacity(
    policy: GatePolicy, containers: Sequence[Mapping[str, Any]], *, starting: str | None = None
) -> None:
    """Refuse a create, or the start of a stopped sandbox, that would exceed the sensor's bound.

    `containers` is the engine's `GET /containers/json?all=1` listing, filtered to this sensor's
    labels; `starting` is the full id of the sandbox to be started (None for a create). Without
    this a compromised front could create sandboxes, or stop some and start others, until the
    host's memory, pids or disk ran out; with it, it is bounded like the pool.
    """
    live_items = [item for item in containers if item.get("State") in _LIVE_STATES]
    if starting is not None and any(item.get("Id") == starting for item in live_items):
        return  # already counted: starting a created or running sandbox adds nothing
    live = len(live_items)
    if live >= policy.max_live:
        raise Refused(
            f"capacity: {live} sandboxes of this sensor are running or created "
            f"(at most {policy.max_live}: 2 x pool.max_sandboxes)",
            "capacity",
        )
    if starting is None and len(containers) >= policy.max_total:
        raise Refused(
            f"capacity: {len(containers)} sandboxes of this sensor exist (at most "
            f"{policy.max_total}: 2 x pool.max_sandboxes + retention.max_count)",
            "capacity",
        )
