"""The gate's body checks: which `containers/create`, exec and exec-start bodies may pass.

Owns the hardening check of create bodies (exact-case key allowlists, the configured security
options and limits) and the exec bodies, and the capacity check before a create. Routes and
ownership are gate/policy.py's.

Bodies are checked against exact-case key allowlists and forwarded re-encoded from what was
checked: the engine's JSON decoder matches keys case-insensitively and keeps the last duplicate,
so `{"Privileged": false, "privileged": true}` must never reach it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sandtrap.gate.policy import GatePolicy, Refused
from sandtrap.sandbox.hardening import LABEL_ROLE, LABEL_SENSOR, ROLE_SANDBOX

MAX_BODY_BYTES = 4 * 1024 * 1024
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9/_-]{1,64}$")

_CREATE_KEYS = frozenset({
    "Image", "Hostname", "Domainname", "NetworkDisabled", "Tty", "OpenStdin", "StdinOnce",
    "AttachStdin", "AttachStdout", "AttachStderr", "StopSignal", "StopTimeout", "Labels",
    "HostConfig", "Cmd", "Entrypoint", "Env", "User", "WorkingDir",
})  # fmt: skip
_HOST_KEYS = frozenset({
    "NetworkMode", "Privileged", "CapDrop", "CapAdd", "SecurityOpt", "PidsLimit", "Memory",
    "MemorySwap", "NanoCpus", "Ulimits", "Runtime", "IpcMode", "ReadonlyRootfs", "Binds", "Mounts",
    "Devices", "RestartPolicy", "AutoRemove", "LogConfig", "Init", "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
})  # fmt: skip
_EMPTY_ONLY = ("Binds", "Mounts", "Devices")
_EXEC_KEYS = frozenset({
    "Cmd", "User", "Tty", "AttachStdin", "AttachStdout", "AttachStderr", "Privileged", "Env",
    "WorkingDir",
})  # fmt: skip
_START_KEYS = frozenset({"Detach", "Tty"})
_LOG_DRIVERS = frozenset({"none", "json-file", "local"})


def parse_body(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise Refused(f"{what}: body larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise Refused(f"{what}: body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(f"{what}: body must be a JSON object")
    return data


def encode_body(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _keys(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise Refused(f"{where}.{key[:60]} is not allowed")


def _int(data: Mapping[str, Any], key: str, where: str, high: int) -> int:
    value = data.get(key)
    if type(value) is not int or not 0 < value <= high:
        raise Refused(f"{where}.{key} must be set, between 1 and {high}, got {value!r}")
    return value


def _flag(data: Mapping[str, Any], key: str, where: str, *, must: bool | None = None) -> None:
    value = data.get(key)
    if value is None and must is None:
        return
    if type(value) is not bool or (must is not None and value is not must):
        wanted = "a boolean" if must is None else str(must).lower()
        raise Refused(f"{where}.{key} must be {wanted}, got {value!r}")


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Refused(f"{where} must be a list of strings")
    return value


def _check_security_opts(policy: GatePolicy, opts: list[str]) -> None:
    seen_nnp = seen_seccomp = False
    for opt in opts:
        key, _, value = _split_opt(opt)
        if key == "no-new-privileges" and value in ("", "true"):
            seen_nnp = True
        elif key == "seccomp" and value and value != "unconfined":
            seen_seccomp = True
        else:
            raise Refused(f"HostConfig.SecurityOpt {opt[:60]!r} is not allowed")
    if not seen_nnp:
        raise Refused("HostConfig.SecurityOpt must contain no-new-privileges:true")
    if policy.custom_seccomp and not seen_seccomp:
        raise Refused("HostConfig.SecurityOpt must carry the configured seccomp profile")


def _split_opt(opt: str) -> tuple[str, str, str]:
    match = re.match(r"^([a-z-]+)(?:([=:])(.*))?$", opt, re.DOTALL)
    if match is None:
        return opt, "", ""
    return match.group(1), match.group(2) or "", match.group(3) or ""


def _check_host_config(policy: GatePolicy, host: Any) -> None:
    where = "HostConfig"
    if not isinstance(host, dict):
        raise Refused("HostConfig must be set")
    _keys(host, _HOST_KEYS, where)
    if host.get("NetworkMode") != "none":
        raise Refused(f"HostConfig.NetworkMode must be 'none', got {host.get('NetworkMode')!r}")
    if "Privileged" in host:
        _flag(host, "Privileged", where, must=False)
    for key in _EMPTY_ONLY:
        if host.get(key):
            raise Refused(
                f"HostConfig.{key} must be empty (sandboxes get no host mounts or devices)"
            )
    if "ALL" not in _strings(host.get("CapDrop"), "HostConfig.CapDrop"):
        raise Refused("HostConfig.CapDrop must contain ALL")
    for cap in _strings(host.get("CapAdd"), "HostConfig.CapAdd"):
        name = cap.upper().removeprefix("CAP_")
        if name not in policy.cap_add:
            raise Refused(f"HostConfig.CapAdd {cap[:40]!r} is beyond the configured capabilities")
    _check_security_opts(policy, _strings(host.get("SecurityOpt"), "HostConfig.SecurityOpt"))
    _int(host, "PidsLimit", where, policy.pids_limit)
    memory = _int(host, "Memory", where, policy.memory_bytes)
    if host.get("MemorySwap") != memory:
        raise Refused("HostConfig.MemorySwap must equal Memory (no extra swap)")
    _int(host, "NanoCpus", where, policy.nano_cpus)
    runtime = host.get("Runtime") or "runc"
    if runtime != policy.runtime:
        raise Refused(f"HostConfig.Runtime must be {policy.runtime!r}, got {runtime!r}")
    if host.get("IpcMode", "private") not in ("", "private", "none"):
        raise Refused(f"HostConfig.IpcMode {host.get('IpcMode')!r} is not allowed")
    for key in ("ReadonlyRootfs", "AutoRemove", "Init"):
        _flag(host, key, where)
    for item in host.get("Ulimits") or []:
        if not isinstance(item, dict) or set(item) != {"Name", "Soft", "Hard"}:
            raise Refused("HostConfig.Ulimits entries must be {Name, Soft, Hard}")
    restart = host.get("RestartPolicy") or {}
    if (
        not isinstance(restart, dict)
        or set(restart) - {"Name", "MaximumRetryCount"}
        or restart.get("Name", "no") not in ("", "no")
    ):
        raise Refused("HostConfig.RestartPolicy must be 'no'")
    log_config = host.get("LogConfig") or {}
    if (
        not isinstance(log_config, dict)
        or set(log_config) - {"Type", "Config"}
        or log_config.get("Type", "none") not in _LOG_DRIVERS
    ):
        raise Refused(f"HostConfig.LogConfig must use one of {sorted(_LOG_DRIVERS)}")
    for key in ("BlkioDeviceReadBps", "BlkioDeviceWriteBps"):
        for item in host.get(key) or []:
            if (
                not isinstance(item, dict)
                or set(item) != {"Path", "Rate"}
                or not _DEVICE.match(str(item.get("Path")))
                or type(item.get("Rate")) is not int
            ):
                raise Refused(f"HostConfig.{key} entries must be {{Path: /dev/..., Rate: int}}")


_LIVE_STATES = frozenset({"created", "running", "paused", "restarting"})


def check_capacity(policy: GatePolicy, containers: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a create when this sensor already has as many sandboxes as it may.

    `containers` is the engine's `GET /containers/json?all=1` listing, filtered to this sensor's
    labels. Without this a compromised front could create hardened sandboxes until the host's
    memory, pids or disk ran out; with it, it is bounded like the pool.
    """
    live = sum(1 for item in containers if str(item.get("State", "")) in _LIVE_STATES)
    if live >= policy.max_live:
        raise Refused(
            f"capacity: {live} sandboxes of this sensor are running or created "
            f"(at most {policy.max_live}: 2 x pool.max_sandboxes)"
        )
    if len(containers) >= policy.max_total:
        raise Refused(
            f"capacity: {len(containers)} sandboxes of this sensor exist (at most "
            f"{policy.max_total}: 2 x pool.max_sandboxes + retention.max_count)"
        )


def check_create(policy: GatePolicy, data: Mapping[str, Any]) -> None:
    """A `containers/create` body must be one of this sensor's hardened sandboxes.

    Raises:
        Refused: naming the first field that breaks the policy.
    """
    _keys(data, _CREATE_KEYS, "body")
    labels = data.get("Labels")
    if (
        not isinstance(labels, dict)
        or labels.get(LABEL_ROLE) != ROLE_SANDBOX
        or labels.get(LABEL_SENSOR) != policy.sensor
    ):
        raise Refused(f"Labels must carry {' and '.join(policy.labels)}")
    if data.get("Image") not in policy.images:
        raise Refused(f"Image {str(data.get('Image'))[:80]!r} is not a configured target image")
    _flag(data, "NetworkDisabled", "body", must=True)
    _check_host_config(policy, data.get("HostConfig"))


def check_exec(data: Mapping[str, Any]) -> None:
    """An exec create body: never privileged."""
    _keys(data, _EXEC_KEYS, "exec")
    if "Privileged" in data:
        _flag(data, "Privileged", "exec", must=False)
    if not _strings(data.get("Cmd"), "exec.Cmd"):
        raise Refused("exec.Cmd must be a non-empty list of strings")


def check_exec_start(data: Mapping[str, Any]) -> None:
    _keys(data, _START_KEYS, "exec start")
    _flag(data, "Detach", "exec start")
    _flag(data, "Tty", "exec start")
