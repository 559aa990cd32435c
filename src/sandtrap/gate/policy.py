"""The gate's policy: pure functions deciding which Engine API requests may pass, and in what form.

Owns the allowlist of endpoints (exactly those `sandbox/docker.py` calls), the hardening check of
`containers/create` bodies, exec bodies, the label filter forced on listings, and the ownership
test of an inspected container. Sockets and the engine are left to `gate/proxy.py`.

Bodies are checked against exact-case key allowlists and forwarded re-encoded from what was
checked: the engine's JSON decoder matches keys case-insensitively and keeps the last duplicate,
so `{"Privileged": false, "privileged": true}` must never reach it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

from sandtrap.config import Config
from sandtrap.sandbox.hardening import LABEL_ROLE, LABEL_SENSOR, ROLE_SANDBOX, host_pids_limit

MAX_BODY_BYTES = 4 * 1024 * 1024

RouteKind = Literal["plain", "create", "list", "container", "exec_create", "exec"]

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._:@+-]*$")
_VERSION = re.compile(r"^v1\.\d{1,3}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")
_OUR_NAME = re.compile(r"^sandtrap-[A-Za-z0-9_.-]{1,120}$")
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9/_-]{1,64}$")


class Refused(Exception):
    """The request breaks the policy; `reason` says how, in words an operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(Exception):
    """The container or exec does not exist (any more): answered 404 as the engine would, so the
    client's "already gone" handling applies; not a policy refusal, so no event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GatePolicy:
    """What this sensor's sandboxes may look like (from the Config the pool builds them from)."""

    sensor: str
    api_version: str
    images: frozenset[str]
    cap_add: frozenset[str]
    runtime: str
    pids_limit: int
    memory_bytes: int
    nano_cpus: int
    custom_seccomp: bool
    # How many of this sensor's sandboxes may exist: running or created, and in all.
    max_live: int = 1_000_000
    max_total: int = 1_000_000

    @classmethod
    def from_config(cls, config: Config, api_version: str) -> GatePolicy:
        sandbox = config.sandbox
        return cls(
            sensor=config.sensor[:253],
            api_version=api_version,
            images=frozenset(item.image for item in sandbox.weighted_images()),
            cap_add=frozenset(sandbox.cap_add),
            runtime=sandbox.runtime,
            pids_limit=host_pids_limit(sandbox),
            memory_bytes=sandbox.memory_mb * 1024 * 1024,
            nano_cpus=int(sandbox.cpus * 1_000_000_000),
            custom_seccomp=sandbox.seccomp_profile != "default",
            # As many as the pool itself makes, with room for sandboxes still stopping while
            # their replacements are created; stopped ones up to what retention keeps.
            max_live=2 * config.pool.max_sandboxes,
            max_total=2 * config.pool.max_sandboxes + config.retention.max_count,
        )

    @property
    def labels(self) -> tuple[str, str]:
        return f"{LABEL_ROLE}={ROLE_SANDBOX}", f"{LABEL_SENSOR}={self.sensor}"


@dataclass(frozen=True)
class Route:
    """An allowed endpoint: `target` is a container reference or an exec id (checked later)."""

    kind: RouteKind
    method: str
    path: str  # after the version prefix, e.g. "containers/{id}/start"
    action: str = ""
    target: str = ""
    query: Mapping[str, list[str]] | None = None
    upgrade: bool = False


# Per-container actions: (method, action) -> allowed query parameters.
_CONTAINER_ACTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "start"): frozenset(),
    ("POST", "stop"): frozenset({"t"}),
    ("POST", "rename"): frozenset({"name"}),
    ("GET", "json"): frozenset({"size"}),
    ("GET", "changes"): frozenset(),
    ("HEAD", "archive"): frozenset({"path"}),
    ("GET", "archive"): frozenset({"path"}),
    ("POST", "exec"): frozenset(),
    ("DELETE", ""): frozenset({"force", "v"}),
}
_EXEC_ACTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "start"): frozenset(),
    ("POST", "resize"): frozenset({"h", "w"}),
    ("GET", "json"): frozenset(),
}


def _check_query(query: Mapping[str, list[str]], allowed: frozenset[str], what: str) -> None:
    extra = sorted(set(query) - allowed)
    if extra:
        raise Refused(f"{what}: query parameter {extra[0]!r} is not allowed")
    for name, values in query.items():
        if len(values) != 1:
            raise Refused(f"{what}: query parameter {name!r} given {len(values)} times")


def route(policy: GatePolicy, method: str, target: str, *, upgrade: bool = False) -> Route:
    """Match a request line against the endpoints SandTrap uses.

    Raises:
        Refused: any other endpoint, method, API version or an unusual path.
    """
    path, _, raw_query = target.partition("?")
    if not _SAFE_PATH.match(path) or "//" in path or "/./" in path or "/../" in path:
        raise Refused(f"path {path[:200]!r} is not in the form SandTrap uses")
    try:
        query = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError:
        raise Refused("malformed query string") from None
    parts = path.strip("/").split("/")
    if len(parts) == 1 and parts[0] in ("version", "_ping") and method in ("GET", "HEAD"):
        _check_query(query, frozenset(), parts[0])
        return Route("plain", method, parts[0])
    if not _VERSION.match(parts[0]) or parts[0] != policy.api_version:
        raise Refused(
            f"API version {parts[0][:20]!r} is not served (this gate speaks {policy.api_version})"
        )
    rest = parts[1:]
    if upgrade and not (
        method == "POST" and len(rest) == 3 and rest[0] == "exec" and rest[2] == "start"
    ):
        raise Refused("connection upgrade is allowed on exec start only")
    what = f"{method} /{'/'.join(rest)}"
    if method in ("GET", "HEAD") and rest in (["version"], ["info"], ["_ping"]):
        _check_query(query, frozenset(), what)
        return Route("plain", method, rest[0])
    if method == "GET" and len(rest) >= 3 and rest[0] == "images" and rest[-1] == "json":
        image = "/".join(rest[1:-1])
        if image not in policy.images:
            raise Refused(f"image {image!r} is not one of the configured target images")
        _check_query(query, frozenset(), what)
        return Route("plain", method, "/".join(rest))
    if rest == ["containers", "create"] and method == "POST":
        _check_query(query, frozenset({"name"}), what)
        name = query.get("name", [""])[0]
        if not _OUR_NAME.match(name):
            raise Refused(f"container name {name[:80]!r} must start with 'sandtrap-'")
        return Route("create", method, "containers/create", query=query)
    if rest == ["containers", "json"] and method == "GET":
        _check_query(query, frozenset({"all", "filters"}), what)
        return Route("list", method, "containers/json", query=force_label_filter(policy, query))
    if rest[0] == "containers" and 2 <= len(rest) <= 3 and _REF.match(rest[1]):
        action = rest[2] if len(rest) == 3 else ""
        allowed = _CONTAINER_ACTIONS.get((method, action))
        if allowed is None:
            raise Refused(f"{method} containers/{{id}}/{action} is not an endpoint SandTrap uses")
        _check_query(query, allowed, what)
        if action == "rename" and not _OUR_NAME.match(query.get("name", [""])[0]):
            raise Refused("a sandbox may only be renamed to a 'sandtrap-' name")
        kind: RouteKind = "exec_create" if action == "exec" else "container"
        return Route(kind, method, "", action, rest[1], query)
    if rest[0] == "exec" and len(rest) == 3 and _REF.match(rest[1]):
        allowed = _EXEC_ACTIONS.get((method, rest[2]))
        if allowed is None:
            raise Refused(f"{method} exec/{{id}}/{rest[2]} is not an endpoint SandTrap uses")
        _check_query(query, allowed, what)
        return Route("exec", method, "", rest[2], rest[1], query, upgrade)
    raise Refused(f"{what[:200]} is not an endpoint SandTrap uses")


def container_path(route_: Route, container_id: str) -> str:
    """The checked route's path with the reference replaced by the container's full id."""
    suffix = f"/{route_.action}" if route_.action else ""
    return f"containers/{container_id}{suffix}"


def encode_query(query: Mapping[str, list[str]] | None) -> str:
    return f"?{urlencode(query, doseq=True)}" if query else ""


def force_label_filter(policy: GatePolicy, query: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The list query with this sensor's sandbox labels added to its `label` filter (AND-ed)."""
    out = {key: list(values) for key, values in query.items()}
    raw = query.get("filters", ["{}"])[0] or "{}"
    try:
        filters = json.loads(raw)
    except ValueError:
        raise Refused("containers/json: filters is not JSON") from None
    if not isinstance(filters, dict) or set(filters) - {"label"}:
        raise Refused("containers/json: only a label filter is allowed")
    labels = filters.get("label", [])
    if isinstance(labels, dict):  # the engine's older map form {"k=v": true}
        labels = [key for key, on in labels.items() if on]
    if not isinstance(labels, list) or not all(isinstance(item, str) for item in labels):
        raise Refused("containers/json: label filter must be a list of strings")
    merged = list(dict.fromkeys([*labels, *policy.labels]))
    out["filters"] = [json.dumps({"label": merged}, separators=(",", ":"))]
    return out


def is_ours(policy: GatePolicy, inspected: Mapping[str, Any]) -> bool:
    """Whether an inspected container (containers/{id}/json) is one of this sensor's sandboxes."""
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_ROLE) == ROLE_SANDBOX and labels.get(LABEL_SENSOR) == policy.sensor


def is_full_id(ref: str) -> bool:
    return bool(_FULL_ID.match(ref))


# --- bodies ------------------------------------------------------------------------------------

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
