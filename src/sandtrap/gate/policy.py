"""The gate's policy: pure functions deciding which Engine API requests may pass, and in what form.

Owns the allowlist of endpoints (exactly those `sandbox/docker.py` calls), the label filter
forced on listings, and the ownership test of an inspected container. Request bodies are checked
in `gate/bodies.py`; sockets and the engine are left to `gate/proxy.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

from sandtrap.config import Config, SandboxConfig
from sandtrap.sandbox.hardening import LABEL_ROLE, LABEL_SENSOR, ROLE_SANDBOX, security_opts
from sandtrap.sandbox.sinknet import ROLE_SINKHOLE, container_name

RouteKind = Literal[
    "plain", "info", "create", "list", "container", "exec_create", "exec", "sinkhole_logs"
]

_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._:@+-]*")
_VERSION = re.compile(r"v1\.[0-9]{1,3}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FULL_ID = re.compile(r"[0-9a-f]{64}")
# Patterns are used with fullmatch only: `$` would let a trailing newline through.
_OUR_NAME = re.compile(r"sandtrap-[A-Za-z0-9_.-]{1,120}")


class Refused(Exception):
    """The request breaks the policy; `reason` says how, in words an operator can act on.

    `rule` names the check that refused it, from a fixed set (RULES): refusal events are
    aggregated per rule, so hostile requests with ever-different reasons still make few events.
    """

    def __init__(self, reason: str, rule: str = "route") -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


# Every `Refused.rule` (a test keeps this list and docs/events.md in step).
RULES = (
    "request",  # malformed HTTP: request line, headers, framing, timeout
    "busy",  # connection or buffered-bytes cap reached
    "route",  # endpoint, method, API version, path form, query
    "ownership",  # the container or exec is not one of this sensor's sandboxes
    "create",  # a create body other than this sensor's sandbox body
    "exec",  # an exec or exec start body other than SandTrap's
    "capacity",  # a create or start beyond the sensor's sandbox bound
)


class NotFound(Exception):
    """The container or exec does not exist (any more): answered 404 as the engine would, so the
    client's "already gone" handling applies; not a policy refusal, so no event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GatePolicy:
    """What this sensor's sandboxes may look like (from the Config the pool builds them from).

    `blkio_device` is the gate's own view of the disk under the engine's data root (the pool's
    function, `blkio_device_for`, on the engine's `DockerRootDir`); `security_opt` is read once.
    """

    sensor: str
    api_version: str
    images: frozenset[str]
    sandbox: SandboxConfig
    security_opt: tuple[str, ...]
    blkio_device: str | None = None
    docker_root_dir: str = "/var/lib/docker"
    # How many of this sensor's sandboxes may exist: running or created, and in all.
    max_live: int = 1_000_000
    max_total: int = 1_000_000

    @classmethod
    def from_config(
        cls,
        config: Config,
        api_version: str,
        *,
        blkio_device: str | None = None,
        docker_root_dir: str = "/var/lib/docker",
    ) -> GatePolicy:
        """Raises ConfigError when a custom seccomp profile cannot be read."""
        sandbox = config.sandbox
        return cls(
            sensor=config.sensor[:253],
            api_version=api_version,
            images=frozenset(item.image for item in sandbox.weighted_images()),
            sandbox=sandbox,
            security_opt=tuple(security_opts(sandbox)),
            blkio_device=blkio_device,
            docker_root_dir=docker_root_dir,
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
    ("POST", "pause"): frozenset(),
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


_FLAG = re.compile(r"true|false|1|0")
_NUMBER = re.compile(r"[0-9]{1,5}")
# The values SandTrap's client sends; `name`, `filters` and `path` are checked where they are used.
_QUERY_VALUES: dict[str, re.Pattern[str]] = {
    "t": _NUMBER, "h": _NUMBER, "w": _NUMBER, "size": _FLAG, "force": _FLAG, "v": _FLAG,
    "all": _FLAG, "follow": _FLAG, "stdout": _FLAG, "stderr": _FLAG,
    "since": re.compile(r"[0-9]{1,12}"),
}  # fmt: skip
# The sinkhole's records: its stdout only, read by the front (network/feed.py); nothing else of
# the sinkhole (no exec, archive, stop or remove) is reachable through the gate.
_SINKHOLE_LOGS_QUERY = frozenset({"follow", "stdout", "stderr", "since"})


def _check_query(query: Mapping[str, list[str]], allowed: frozenset[str], what: str) -> None:
    extra = sorted(set(query) - allowed)
    if extra:
        raise Refused(f"{what}: query parameter {extra[0][:40]!r} is not allowed")
    for name, values in query.items():
        if len(values) != 1:
            raise Refused(f"{what}: query parameter {name!r} given {len(values)} times")
        pattern = _QUERY_VALUES.get(name)
        if pattern is not None and not pattern.fullmatch(values[0]):
            raise Refused(f"{what}: query parameter {name!r} has value {values[0][:40]!r}")


def route(policy: GatePolicy, method: str, target: str, *, upgrade: bool = False) -> Route:
    """Match a request line against the endpoints SandTrap uses.

    Raises:
        Refused: any other endpoint, method, API version or an unusual path.
    """
    path, _, raw_query = target.partition("?")
    if (
        not _SAFE_PATH.fullmatch(path)
        or "//" in path
        or any(part in (".", "..") for part in path.split("/"))
    ):
        raise Refused(f"path {path[:200]!r} is not in the form SandTrap uses")
    try:
        query = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError:
        raise Refused("malformed query string") from None
    parts = path.strip("/").split("/")
    if len(parts) == 1 and parts[0] in ("version", "_ping") and method in ("GET", "HEAD"):
        _check_query(query, frozenset(), parts[0])
        return Route("plain", method, parts[0])
    if not _VERSION.fullmatch(parts[0]) or parts[0] != policy.api_version:
        raise Refused(
            f"API version {parts[0][:20]!r} is not served (this gate speaks {policy.api_version})"
        )
    rest = parts[1:]
    if not rest or not all(rest):
        raise Refused(f"{method} {path[:200]!r} is not an endpoint SandTrap uses")
    if upgrade and not (
        method == "POST" and len(rest) == 3 and rest[0] == "exec" and rest[2] == "start"
    ):
        raise Refused("connection upgrade is allowed on exec start only")
    what = f"{method} /{'/'.join(rest)}"
    if method in ("GET", "HEAD") and rest in (["version"], ["_ping"]):
        _check_query(query, frozenset(), what)
        return Route("plain", method, rest[0])
    if method == "GET" and rest == ["info"]:
        # Answered by the gate itself with the one field SandTrap reads (the pool's data-root
        # device): the engine's own /info names the host, its proxies, registries and more.
        _check_query(query, frozenset(), what)
        return Route("info", method, "info")
    if method == "GET" and len(rest) >= 3 and rest[0] == "images" and rest[-1] == "json":
        image = "/".join(rest[1:-1])
        if image not in policy.images:
            raise Refused(f"image {image[:80]!r} is not one of the configured target images")
        _check_query(query, frozenset(), what)
        return Route("plain", method, "/".join(rest))
    if rest == ["containers", "create"] and method == "POST":
        _check_query(query, frozenset({"name"}), what)
        name = query.get("name", [""])[0]
        if not _OUR_NAME.fullmatch(name):
            raise Refused(f"container name {name[:80]!r} must start with 'sandtrap-'")
        return Route("create", method, "containers/create", query=query)
    if rest == ["containers", "json"] and method == "GET":
        _check_query(query, frozenset({"all", "filters"}), what)
        return Route("list", method, "containers/json", query=force_label_filter(policy, query))
    if (
        method == "GET"
        and len(rest) == 3
        and rest[0] == "containers"
        and rest[2] == "logs"
        and policy.sandbox.network == "sinkhole"
        and rest[1] == container_name(policy.sensor)
    ):
        _check_query(query, _SINKHOLE_LOGS_QUERY, what)
        if query.get("stderr", ["0"])[0] not in ("0", "false"):
            raise Refused("the sinkhole's stderr is not served")
        return Route("sinkhole_logs", method, "", "logs", rest[1], query)
    if rest[0] == "containers" and 2 <= len(rest) <= 3 and _REF.fullmatch(rest[1]):
        action = rest[2] if len(rest) == 3 else ""
        allowed = _CONTAINER_ACTIONS.get((method, action))
        if allowed is None:
            raise Refused(
                f"{method} containers/{{id}}/{action[:40]} is not an endpoint SandTrap uses"
            )
        _check_query(query, allowed, what)
        if action == "rename" and not _OUR_NAME.fullmatch(query.get("name", [""])[0]):
            raise Refused("a sandbox may only be renamed to a 'sandtrap-' name")
        kind: RouteKind = "exec_create" if action == "exec" else "container"
        return Route(kind, method, "", action, rest[1], query)
    if rest[0] == "exec" and len(rest) == 3 and _REF.fullmatch(rest[1]):
        allowed = _EXEC_ACTIONS.get((method, rest[2]))
        if allowed is None:
            raise Refused(f"{method} exec/{{id}}/{rest[2][:40]} is not an endpoint SandTrap uses")
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
    except (ValueError, RecursionError):
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


def is_sinkhole(policy: GatePolicy, inspected: Mapping[str, Any]) -> bool:
    """Whether an inspected container is this sensor's sinkhole (sandbox/sinknet.py)."""
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_ROLE) == ROLE_SINKHOLE and labels.get(LABEL_SENSOR) == policy.sensor


def is_full_id(ref: str) -> bool:
    return bool(_FULL_ID.fullmatch(ref))
