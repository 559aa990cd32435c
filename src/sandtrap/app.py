"""The composition root: builds every part of the service from a Config and runs it.

Owns the service-long TaskGroup (the pool's refill and health tasks), start-up checks, and the
phased shutdown: stop accepting -> let sessions finish (grace) -> close the rest -> stop session
sandboxes and remove pool members -> close the event log and the engine connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import tarfile
from dataclasses import dataclass

from sandtrap.analysis.enrich import Enricher
from sandtrap.analysis.honeytokens import HoneytokenWatch
from sandtrap.analysis.scorer import AnomalyScorer
from sandtrap.analysis.triager import ArtifactTriager
from sandtrap.auth import AuthPolicy
from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable, ImageMissing, SandboxError
from sandtrap.events import utcnow
from sandtrap.gate.child import GateChild
from sandtrap.health import write_status
from sandtrap.metrics import Metrics
from sandtrap.network.broker import FetchBroker
from sandtrap.network.deploy import ensure_sinkhole, supervise
from sandtrap.network.feed import SinkholeFeed
from sandtrap.outputs import Outputs, drain
from sandtrap.paths import DataLayout
from sandtrap.persona import banner_from_package, package_version, persona_for
from sandtrap.sandbox.docker import Engine
from sandtrap.sandbox.hardening import container_body, pool_name
from sandtrap.sandbox.pool import Pool
from sandtrap.ssh import SSHFront, start_ssh_server
from sandtrap.ssh.hostkeys import sandbox_host_keys
from sandtrap.store.index import EventIndex
from sandtrap.store.jsonl import EventLog, open_event_log

log = logging.getLogger(__name__)

# Outputs get at least this long at shutdown to deliver what they hold (then they spool it).
OUTPUT_DRAIN_SECONDS = 5.0
# How long shutdown waits for queued artifacts to be triaged (their events reach the log).
TRIAGE_DRAIN_SECONDS = 30.0


async def image_openssh_version(engine: Engine, config: Config, image: str) -> str | None:
    """The target image's openssh-client version, read from a created (never started) container.

    The container is a hardened, labelled sandbox like any other (the gate allows nothing else),
    named as a pool member so that start-up reconciliation removes it if we die before we do.
    """
    body = container_body(
        config.sandbox, image=image, hostname="probe", sensor=config.sensor, created=utcnow()
    )
    container_id = await engine.create(body, name=pool_name())
    try:
        data = await engine.archive(container_id, "/var/lib/dpkg/status", limit=32 * 1024 * 1024)
    finally:
        await engine.remove(container_id)
    if not data:
        return None
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member else None
        text = handle.read().decode("utf-8", "replace") if handle else ""
    return package_version(text, "openssh-client")


async def _with_persona_banner(config: Config, engine: Engine) -> Config:
    """Take the banner's Debian revision from the image, so `ssh -V` inside and the banner agree."""
    if config.ssh.banner_version is not None:
        return config
    try:
        image = config.sandbox.weighted_images()[0].image
        version = await image_openssh_version(engine, config, image)
    except SandboxError as exc:
        log.warning("cannot read openssh-client version from the image: %s", exc)
        return config
    banner = banner_from_package(version) if version else None
    persona_banner = persona_for(config.ssh).software_version
    if banner is None or banner.split(" ")[0] != persona_banner.split(" ")[0]:
        log.warning(
            "image openssh-client %r does not match persona %s; keeping the persona's banner",
            version,
            persona_banner,
        )
        return config
    return config.model_copy(
        update={"ssh": config.ssh.model_copy(update={"banner_version": banner})}
    )


@dataclass
class Service:
    """A running SandTrap; `stop` ends it (phased shutdown)."""

    config: Config
    front: SSHFront
    pool: Pool
    events: EventLog
    stop: asyncio.Event
    index: EventIndex | None = None
    outputs: Outputs | None = None
    metrics: Metrics | None = None


async def _preflight(config: Config, engine: Engine) -> None:
    try:
        version = await engine.version()
    except EngineUnavailable as exc:
        raise EngineUnavailable(
            f"{exc} (start Docker, e.g. scripts/ensure-docker, or set sandbox.docker_url)"
        ) from None
    log.info("Docker engine %s (API %s)", version.get("Version"), version.get("ApiVersion"))
    for item in config.sandbox.weighted_images():
        if not await engine.image_exists(item.image):
            raise ImageMissing(f"target image {item.image} is missing: run `sandtrap image build`")


def _sinkhole_tasks(
    config: Config, engine: Engine, events: EventLog, tasks: asyncio.TaskGroup
) -> list[asyncio.Task[None]]:
    """`sandbox.network: sinkhole`: its records become events; without a gate, we keep it up."""
    if config.sandbox.network != "sinkhole":
        return []
    feed = SinkholeFeed(config, engine, events)
    events.subscribe(feed.offer)
    out = [tasks.create_task(feed.run(), name="sinkhole-feed")]
    if config.sandbox.sinkhole.fetch.enabled:
        broker = FetchBroker(config, events, feed.owner)
        out.append(tasks.create_task(broker.run(), name="fetch-on-behalf"))
    if config.sandbox.gate == "off":
        out.append(tasks.create_task(supervise(engine, config), name="sinkhole"))
    return out


async def serve(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    on_ready: list[Service] | None = None,
) -> None:
    """Run the honeypot until `stop` is set (or SIGTERM/SIGINT when `stop` is not given).

    `ready` is set once the listeners are open; `on_ready` (if given) receives the Service.
    """
    stop = stop or asyncio.Event()
    # sandbox.gate: auto runs the Engine API gate as a child process; the service then reaches the
    # engine only through the gate's socket (gate/child.py, docs/deployment.md).
    gate = GateChild(config)
    engine = Engine(gate.docker_url)
    events = open_event_log(config.storage, config.sensor)
    index = EventIndex(DataLayout(config.storage.data_dir).index_db, config.sensor)
    outputs = Outputs(config)
    metrics = Metrics() if config.metrics.listen is not None else None
    try:
        await gate.start()
        await _preflight(config, engine)
        config = await _with_persona_banner(config, engine)
        # The front's host keys, generated here on first start, so sandboxes show them too.
        host_keys = await asyncio.to_thread(
            sandbox_host_keys, DataLayout(config.storage.data_dir).keys, config.sandbox.host_keys
        )
        if config.sandbox.network == "sinkhole" and config.sandbox.gate == "off":
            await ensure_sinkhole(engine, config)  # otherwise the gate has made it
        pool = Pool(config, engine, events, host_keys=host_keys)
        pool_ready = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            network_tasks = _sinkhole_tasks(config, engine, events, tasks)
            # The index's one writer: fed by the log, never blocking it (store/index.py).
            index_task = tasks.create_task(index.run(), name="index")
            events.subscribe(index.offer)
            # Outputs (issue 17): each drains its own bounded queue; offer never waits.
            outputs_task = tasks.create_task(outputs.run(), name="outputs")
            events.subscribe(outputs.offer)
            if metrics is not None:
                events.subscribe(metrics.observe)
            # Threat analysis (issue 19): artifacts triaged in a worker process, off this loop.
            triager = ArtifactTriager(config.analysis, events) if config.analysis.triage else None
            if triager is not None:
                triage_task = tasks.create_task(triager.run(), name="triage")
                events.subscribe(triager.offer)
            enricher = Enricher(config.analysis, events)
            events.subscribe(enricher.offer)
            if config.analysis.anomaly:
                scorer = AnomalyScorer(
                    config.analysis, events, DataLayout(config.storage.data_dir).index_db
                )
                anomaly_task = tasks.create_task(scorer.run(), name="anomaly")
                events.subscribe(scorer.offer)
            # Honeytokens: the watch hears the pool's first plantings, and accepts planted keys.
            policy = AuthPolicy(config.auth)
            if config.analysis.honeytokens:
                watch = HoneytokenWatch(events, policy.accept_honeytoken_key)
                await asyncio.to_thread(watch.load, DataLayout(config.storage.data_dir).index_db)
                events.subscribe(watch.offer)
            pool_task = tasks.create_task(pool.run(pool_ready), name="pool")
            await pool_ready.wait()
            front = await start_ssh_server(config, pool, events, policy=policy)
            metrics_task = None
            if metrics is not None:
                metrics.track(pool.statistics, outputs.statistics)
                metrics_ready = asyncio.Event()
                metrics_task = tasks.create_task(
                    metrics.serve(config, metrics_ready), name="metrics"
                )
                await metrics_ready.wait()
            service = Service(config, front, pool, events, stop, index, outputs, metrics)
            status_task = tasks.create_task(
                write_status(config, front.addresses, pool.statistics), name="status"
            )
            if on_ready is not None:
                on_ready.append(service)
            for host, port in front.addresses:
                log.info("SandTrap listening on %s port %d (sensor %s)", host, port, config.sensor)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info(
                "shutting down: no new connections; sessions get %.0fs to finish",
                config.ssh.shutdown_grace_seconds,
            )
            front.close()
            await front.wait_closed(grace_seconds=config.ssh.shutdown_grace_seconds)
            pool_task.cancel()
            status_task.cancel()
            for task in network_tasks:
                task.cancel()
            if metrics_task is not None:
                metrics_task.cancel()
            if triager is not None:
                if not await triager.drain(TRIAGE_DRAIN_SECONDS):
                    log.warning("artifact triage did not finish in %.0fs", TRIAGE_DRAIN_SECONDS)
                triage_task.cancel()
            if config.analysis.anomaly:
                anomaly_task.cancel()
            # Every session has been recorded by now; the writer drains its queue and ends.
            index.stop()
            await index_task
            await drain(
                outputs, outputs_task, max(OUTPUT_DRAIN_SECONDS, config.ssh.shutdown_grace_seconds)
            )
        await pool.shutdown()
    finally:
        events.close()
        await engine.close()
        await gate.stop()


def run_service(config: Config) -> int:
    """Run the service in this process until SIGTERM/SIGINT; returns the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve(config, stop=stop)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)

    asyncio.run(main())
    return 0
