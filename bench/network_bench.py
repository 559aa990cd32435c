"""Network figures (issue 16): what `sandbox.network: sinkhole` costs against `none`.

Two SandTrap services at once, the same defaults but the network mode (own sensor names, so
neither touches the other's containers): the login latency, interleaved round-robin as in the
connect figure, and the sandbox creation rate (a pool refilled after `pool.size` allocations from
distinct source addresses). The sinkhole's container and network are removed with the run.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import ssh_bench
from bench.peers import Peer
from bench.resources import Cleanup, Run, remove_labelled_containers, remove_sinkhole_network
from bench.service import BENCH_PASSWORD, BENCH_USER, RunningService, bench_config
from bench.stats import Figure, Row, Summary
from sandtrap.config import Config, parse_config
from sandtrap.events import Peer as SessionPeer
from sandtrap.network.image import build_sinkhole

NONE = "network none"


@dataclass(frozen=True)
class NetworkPlan:
    connects: int
    connect_warmups: int
    refill_size: int  # sandboxes allocated, then refilled, per round
    refill_rounds: int


def plan(quick: bool) -> NetworkPlan:
    if quick:
        return NetworkPlan(connects=4, connect_warmups=1, refill_size=3, refill_rounds=1)
    return NetworkPlan(connects=40, connect_warmups=3, refill_size=8, refill_rounds=3)


def _config(base: Config, network: str) -> Config:
    data = base.model_dump(mode="json")
    data["sandbox"]["network"] = network
    return parse_config(data, f"<bench {network}>")


def _refill_rate(service: RunningService, size: int) -> float:
    """Sandboxes per second: `size` allocations (distinct addresses, so none share a sandbox)
    released at once, until the pool is warm again with `size` new ones."""
    pool = service.service.pool

    async def cycle() -> float:
        await pool.wait_warm()
        began = time.monotonic()
        held = []
        for n in range(size):
            peer = SessionPeer(secrets.token_hex(8), f"127.0.9.{n + 1}", 40000 + n, 22)
            held.append((await pool.allocate(peer), peer))
        for sandbox, peer in held:
            await pool.release(sandbox, peer)
        await pool.wait_warm()
        return size / (time.monotonic() - began)

    return service.call(cycle, timeout_seconds=600)


def figures(run: Run, workdir: Path, image: str, cleanup: Cleanup, quick: bool) -> list[Figure]:
    steps = plan(quick)
    services: dict[str, RunningService] = {}
    for network in ("none", "sinkhole"):
        sensor = f"{run.sensor}-{network}"
        base = bench_config(workdir / network, sensor, image, None, pool_size=steps.refill_size)
        config = _config(base, network)
        if network == "sinkhole":
            build_sinkhole(config.sandbox.sinkhole.image)
        service = RunningService(config)
        # Undone newest first: the service, its containers, then the network they were on.
        if network == "sinkhole":
            cleanup.push("sinkhole network", partial(remove_sinkhole_network, sensor))
        cleanup.push(f"containers (network {network})", partial(remove_labelled_containers, sensor))
        cleanup.push(f"SandTrap service (network {network})", service.stop)
        service.start()
        services[network] = service
    for service in services.values():
        service.wait_warm(600)
    targets = [
        Peer(
            ssh_bench.SANDTRAP, services["sinkhole"].port, BENCH_USER, BENCH_PASSWORD, os.getpid()
        ),
        Peer(NONE, services["none"].port, BENCH_USER, BENCH_PASSWORD, os.getpid()),
    ]
    connect = ssh_bench.connect_figure(
        targets, ssh_bench.SshPlan(steps.connects, steps.connect_warmups, 0, 0, ())
    )
    connect.key = "network-login"
    connect.title = "Login with sandbox.network: sinkhole (SandTrap) vs none: ssh host 'echo hi'"
    connect.notes.append("Both services run at once with pool.size "
                         f"{steps.refill_size}; only sandbox.network differs.")  # fmt: skip
    for service in services.values():
        service.wait_warm(600)
    rates: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(steps.refill_rounds):
        for network, service in services.items():
            rates[network].append(_refill_rate(service, steps.refill_size))
    sink, none = Summary.of(rates["sinkhole"]), Summary.of(rates["none"])
    create = Figure(
        key="network-create",
        title="Sandbox creation rate with sandbox.network: sinkhole (SandTrap) vs none",
        unit="sandboxes/s",
        higher_is_better=True,
        rows=[Row("p50", sink.p50, {NONE: none.p50})],
        notes=[
            f"{steps.refill_rounds} round(s) each, alternating: {steps.refill_size} allocations "
            "from distinct addresses released at once, until the pool is warm again (create, "
            "start, prepare; in sinkhole mode also the network endpoint and the sinkhole's "
            "owner map)."
        ],
    )
    for service in services.values():
        service.stop()
    return [connect, create]
