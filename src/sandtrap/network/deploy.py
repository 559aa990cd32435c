"""The sinkhole's network and container on the engine: created, checked and kept running.

Run by whoever holds the engine: the gate (`sandbox.gate` auto or a socket; the front can neither
create networks nor the sinkhole), or the service itself with `sandbox.gate: off`. Bodies are
`sandbox/sinknet.py`'s; the engine restarts a crashed sinkhole itself (restart policy
`unless-stopped`: one its keeper stopped stays stopped across engine restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from typing import Any

from sandtrap.config import Config
from sandtrap.errors import EngineError, ImageMissing, SandboxError, SandboxGone
from sandtrap.events import utcnow
from sandtrap.network.hostwall import keep_rules, remove_rules
from sandtrap.network.isolate import PortIsolation
from sandtrap.network.seal import ResolverKeeper
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.sinknet import (
    LABEL_ROLE,
    LABEL_SENSOR,
    ROLE_SINK_NETWORK,
    ROLE_SINKHOLE,
    bridge_name,
    container_name,
    fetch_socket_dir,
    network_body,
    network_name,
    sinkhole_body,
)

log = logging.getLogger(__name__)

LABEL_SPEC = "sandtrap.sinkhole-spec"
SUPERVISE_INTERVAL_SECONDS = 15.0
STOP_SECONDS = 5


class SinkholeError(SandboxError):
    """The sinkhole network or container cannot be made as configured."""


def network_mismatch(want: dict[str, Any], have: dict[str, Any]) -> str | None:
    """Why an existing network is not the one we would create (pure); None when it is."""
    if have.get("Driver") != want["Driver"]:
        return f"driver {have.get('Driver')!r}"
    for key in ("Internal", "EnableIPv6"):
        if bool(have.get(key)) != want[key]:
            return f"{key} {have.get(key)!r}"
    options = have.get("Options") or {}
    for key, value in want["Options"].items():
        if options.get(key) != value:
            return f"option {key}={options.get(key)!r}"
    config = [
        {k: item.get(k) for k in ("Subnet", "IPRange", "Gateway")}
        for item in (have.get("IPAM") or {}).get("Config") or []
    ]
    if config != want["IPAM"]["Config"]:
        return f"IPAM {config!r}"
    labels = have.get("Labels") or {}
    if (
        labels.get(LABEL_ROLE) != ROLE_SINK_NETWORK
        or labels.get(LABEL_SENSOR) != want["Labels"][LABEL_SENSOR]
    ):
        return "labels"
    return None


def spec_hash(body: dict[str, Any], image_id: str) -> str:
    """What makes a sinkhole container current: its body (creation time aside) and image."""
    stable = {
        **body,
        "Labels": {k: v for k, v in body["Labels"].items() if k != "sandtrap.created"},
    }
    text = json.dumps(stable, sort_keys=True, separators=(",", ":")) + image_id
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def ensure_network(engine: Engine, config: Config) -> None:
    """Create the sinkhole network, or check that the existing one is exactly ours.

    Raises:
        SinkholeError: a network of that name exists with other settings (never reused: a
            network with NAT would let sandboxes out).
    """
    want = network_body(config.sandbox, config.sensor)
    try:
        have = await engine.request("GET", f"networks/{want['Name']}", operation="network")
    except SandboxGone:
        try:
            await engine.request("POST", "networks/create", body=want, operation="network create")
        except EngineError as exc:
            # "Pool overlaps ...", or "failed to allocate gateway ...: Address already in use"
            if not any(word in str(exc).lower() for word in ("overlap", "already in use")):
                raise
            raise SinkholeError(
                f"cannot create the sinkhole network {want['Name']}: its subnet "
                f"{config.sandbox.sinkhole.subnet} overlaps another Docker network on this "
                f"engine ({exc}); set sandbox.sinkhole.subnet to a free private range"
            ) from None
        log.info("created sinkhole network %s (%s)", want["Name"], config.sandbox.sinkhole.subnet)
        return
    why = network_mismatch(want, have if isinstance(have, dict) else {})
    if why is not None:
        raise SinkholeError(
            f"network {want['Name']} exists with other settings ({why}); remove it "
            f"(docker network rm {want['Name']}) so SandTrap can create its own"
        )


async def _image_id(engine: Engine, image: str) -> str:
    try:
        details = await engine.request("GET", f"images/{image}/json", operation="image inspect")
    except (ImageMissing, SandboxGone):
        raise ImageMissing(
            f"sinkhole image {image} is missing: run `sandtrap image build --sinkhole`"
        ) from None
    return str(details.get("Id", ""))


async def ensure_sinkhole(engine: Engine, config: Config) -> str:
    """The network and a running, current sinkhole container; returns the container's id.

    Raises:
        SinkholeError, ImageMissing, EngineUnavailable.
    """
    await ensure_network(engine, config)
    sandbox = config.sandbox
    name = container_name(config.sensor)
    fetch_dir = fetch_socket_dir(sandbox, config.storage.data_dir)
    if sandbox.sinkhole.fetch.enabled:
        await asyncio.to_thread(fetch_dir.mkdir, parents=True, exist_ok=True)
    body = sinkhole_body(sandbox, config.sensor, utcnow(), fetch_dir)
    spec = spec_hash(body, await _image_id(engine, sandbox.sinkhole.image))
    body["Labels"][LABEL_SPEC] = spec
    try:
        have = await engine.inspect(name)
    except SandboxGone:
        have = None
    if have is not None:
        labels = (have.get("Config") or {}).get("Labels") or {}
        if (
            labels.get(LABEL_ROLE) != ROLE_SINKHOLE
            or labels.get(LABEL_SENSOR) != config.sensor[:253]
        ):
            raise SinkholeError(f"container {name} exists and is not this sensor's sinkhole")
        if labels.get(LABEL_SPEC) == spec:
            if not (have.get("State") or {}).get("Running"):
                await engine.start(str(have["Id"]))
                log.info("started sinkhole %s", name)
            return str(have["Id"])
        log.info("sinkhole %s is out of date; replacing it", name)
        await engine.remove(str(have["Id"]))
    container_id = await engine.create(body, name)
    await engine.start(container_id)
    log.info("sinkhole %s running on %s", name, network_name(config.sensor))
    return container_id


async def remove_sinkhole(engine: Engine, config: Config) -> None:
    """Remove this sensor's sinkhole container and network, and the host's rules for its bridge
    (a throwaway sensor's, e.g. the verifier's, when it is done); what is gone is no error."""
    await engine.remove(container_name(config.sensor))
    await remove_rules(bridge_name(config.sensor))
    with contextlib.suppress(SandboxGone):
        await engine.request(
            "DELETE", f"networks/{network_name(config.sensor)}", operation="network remove"
        )


async def supervise(
    engine: Engine,
    config: Config,
    interval: float = SUPERVISE_INTERVAL_SECONDS,
    sealed: dict[str, int] | None = None,
) -> None:
    """Keep the sinkhole there (the engine restarts a crash; this recreates a removed one) and
    its bridge's sandbox ports isolated (`network/isolate.py`); `sealed`: the gate's record of
    the sandboxes it sealed at start (`network/seal.py`'s ResolverKeeper).

    Runs until cancelled; engine trouble is logged and retried at the next interval.
    """
    try:
        async with asyncio.TaskGroup() as tasks:
            isolation = PortIsolation(engine, config)
            isolation.on_new_ports = ResolverKeeper(engine, config, sealed=sealed).check
            tasks.create_task(isolation.run(), name="sinkhole-isolation")
            tasks.create_task(keep_rules(bridge_name(config.sensor)), name="sinkhole-hostwall")
            tasks.create_task(_keep(engine, config, interval), name="sinkhole-keeper")
    finally:
        # With its keeper gone nothing reads its records: stopped, not removed (the next start
        # starts it again); one that keeps running after `compose down` would be an orphan.
        with contextlib.suppress(SandboxError, TimeoutError):
            async with asyncio.timeout(STOP_SECONDS + 10):
                await engine.stop(container_name(config.sensor), timeout_seconds=STOP_SECONDS)


async def _keep(engine: Engine, config: Config, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await ensure_sinkhole(engine, config)
        except SandboxError as exc:
            log.warning("sinkhole check failed: %s", exc)
