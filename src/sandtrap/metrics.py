"""Prometheus metrics: one registry per service, bounded labels only, on their own listener.

Owns the metric families, `Metrics.observe` (an EventLog listener: counts and latencies from the
events, never blocking), the scrape-time collector of pool and output statistics, the event
loop lag probe and the HTTP listener (`metrics.listen`, path /metrics). No attacker-controlled
value ever becomes a label: labels are our own vocabularies (catalogue eventids, auth results,
refusal reasons, output names), anything else is counted as `other`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sandtrap.config import Config, parse_listen
from sandtrap.events import CATALOGUE, Event, Peer
from sandtrap.outputs.base import OutputStatistics
from sandtrap.paths import DataLayout
from sandtrap.sandbox.poolstate import PoolStatistics

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"password", "publickey", "keyboard-interactive", "none"})
REFUSAL_REASONS = frozenset({"max_startups", "max_connections", "max_connections_per_ip",
                             "rate_limited"})  # fmt: skip
MAX_TRACKED_SESSIONS = 100_000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_GATE_RULES = 32  # the gate's rules are its own words; a bound all the same
GATE_READ_BYTES = 1024 * 1024  # of the gate's log per scrape
_RULE_RE = re.compile(r"[a-z_-]{1,32}")
LOGIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


# (statistics field, type, metric name, help) of each output family; labelled by output name.
OUTPUT_FAMILIES = (
    ("queued", "gauge", "sandtrap_output_queue_depth", "Items waiting in an output's queue"),
    ("delivered", "counter", "sandtrap_output_delivered", "Records an output delivered"),
    (
        "dropped",
        "counter",
        "sandtrap_output_dropped",
        "Records dropped (queue or spool full)",
    ),
    ("failures", "counter", "sandtrap_output_failures", "Failed deliveries (retried)"),
    ("spool_bytes", "gauge", "sandtrap_output_spool_bytes", "Bytes waiting in an output's spool"),
    ("connected", "gauge", "sandtrap_output_up", "1 when the output's last delivery succeeded"),
)


def _bounded(value: Any, allowed: frozenset[str] | dict[str, Any]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


class _StatsCollector(Collector):
    """Pool and output statistics, read when Prometheus scrapes."""

    def __init__(
        self,
        pool: Callable[[], PoolStatistics] | None,
        outputs: Callable[[], list[OutputStatistics]] | None,
    ) -> None:
        self.pool = pool
        self.outputs = outputs

    def collect(self) -> Iterator[Any]:
        if self.pool is not None:
            stats = self.pool()
            sandboxes = GaugeMetricFamily(
                "sandtrap_sandboxes", "Sandboxes of this sensor by state", labels=["state"]
            )
            sandboxes.add_metric(["warm"], stats.idle)
            sandboxes.add_metric(["in_use"], stats.busy)
            sandboxes.add_metric(["creating"], stats.creating)
            yield sandboxes
            yield GaugeMetricFamily(
                "sandtrap_engine_up",
                "1 when the engine answers the pool",
                value=int(stats.engine_ok),
            )
            yield CounterMetricFamily(
                "sandtrap_sandboxes_created", "Sandboxes created", value=stats.created_total
            )
            yield CounterMetricFamily(
                "sandtrap_pool_errors", "Engine errors met by the pool", value=stats.errors_total
            )
        if self.outputs is not None:
            rows = self.outputs()
            for key, kind, name, text in OUTPUT_FAMILIES:
                family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                    name, text, labels=["output"]
                )
                for row in rows:
                    family.add_metric([row.name], float(getattr(row, key)))
                yield family


class Metrics:
    """The service's metrics; `observe` is an EventLog listener, `serve` the listener task."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("sandtrap_events", "Events written", ["eventid"], registry=r)
        self.connections = Counter(
            "sandtrap_connections", "TCP connections admitted to the SSH front", registry=r
        )
        self.refused = Counter(
            "sandtrap_connections_refused",
            "Connections refused before SSH, by limit",
            ["reason"],
            registry=r,
        )
        self.auth = Counter(
            "sandtrap_auth_attempts", "Authentication attempts", ["result", "method"], registry=r
        )
        self.sessions = Counter("sandtrap_sessions", "SSH connections that ended", registry=r)
        self.active = Gauge("sandtrap_sessions_active", "SSH connections open", registry=r)
        self.logged_in = Counter("sandtrap_logins", "Connections that logged in", registry=r)
        self.kept = Counter(
            "sandtrap_sandboxes_kept", "Session sandboxes stopped and kept", registry=r
        )
        self.pruned = Counter("sandtrap_sandboxes_pruned", "Kept sandboxes removed", registry=r)
        self.allocation = Histogram(
            "sandtrap_sandbox_allocation_seconds",
            "Time a session waited for its sandbox",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.login = Histogram(
            "sandtrap_login_seconds",
            "From the TCP connection to the accepted login",
            buckets=LOGIN_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "sandtrap_event_loop_lag_seconds", "How late the event loop ran a timer", registry=r
        )
        self.loop_lag_max = Gauge(
            "sandtrap_event_loop_lag_max_seconds", "Largest lag since the last scrape", registry=r
        )
        self.gate_refusals = Counter(
            "sandtrap_gate_refusals", "Engine API requests the gate refused", ["rule"], registry=r
        )
        self._connected: OrderedDict[str, float] = OrderedDict()
        self._lag_max = 0.0
        self._gate_rules: set[str] = set()
        self._gate_offset: int | None = None
        self.addresses: list[tuple[str, int]] = []

    def track(
        self,
        pool: Callable[[], PoolStatistics] | None,
        outputs: Callable[[], list[OutputStatistics]] | None,
    ) -> None:
        """Read these statistics at every scrape."""
        self.registry.register(_StatsCollector(pool, outputs))

    def observe(self, event: Event) -> None:
        """Count one event (EventLog listener: a few dict operations, no I/O)."""
        eventid = event.eventid
        self.events.labels(_bounded(eventid, CATALOGUE)).inc()
        peer = getattr(event, "peer", None)
        session = peer.session_id if isinstance(peer, Peer) else None
        if eventid == "session.connect" and session:
            self.connections.inc()
            self._connected[session] = time.monotonic()
            while len(self._connected) > MAX_TRACKED_SESSIONS:
                self._connected.popitem(last=False)
            self.active.inc()
        elif eventid in ("session.refused", "proxy.refused"):
            count = int(getattr(event, "count", 1))
            self.refused.labels(_bounded(getattr(event, "reason", None), REFUSAL_REASONS)).inc(
                count
            )
        elif eventid in ("auth.success", "auth.failed"):
            result = "success" if eventid == "auth.success" else "failed"
            self.auth.labels(result, _bounded(getattr(event, "method", None), METHODS)).inc()
            started = self._connected.get(session or "")
            if result == "success" and started is not None:
                self.logged_in.inc()
                self.login.observe(time.monotonic() - started)
                self._connected[session or ""] = -1.0  # a later success is no new login
        elif eventid == "sandbox.allocated":
            self.allocation.observe(float(getattr(event, "wait_ms", 0.0)) / 1000)
        elif eventid == "sandbox.released" and getattr(event, "stopped", False):
            self.kept.inc()
        elif eventid == "sandbox.pruned":
            self.pruned.inc()
        elif eventid == "gate.refused":
            self.count_gate_refusal({"rule": getattr(event, "rule", None), "count": 1})
        elif eventid == "session.closed":
            self.sessions.inc()
            if self._connected.pop(session or "", None) is not None:
                self.active.dec()

    def count_gate_refusal(self, record: dict[str, Any]) -> None:
        """One `gate.refused` record (the gate writes its own log, var/log/gate.jsonl)."""
        rule = record.get("rule")
        label = rule if isinstance(rule, str) and _RULE_RE.fullmatch(rule) else "other"
        if label not in self._gate_rules and len(self._gate_rules) >= MAX_GATE_RULES:
            label = "other"
        self._gate_rules.add(label)
        count = record.get("count")
        self.gate_refusals.labels(label).inc(count if isinstance(count, int) and count > 0 else 1)

    def read_gate_log(self, path: Path) -> None:
        """Count the refusals the gate appended since the last call (blocking: run in a thread)."""
        try:
            size = path.stat().st_size
        except OSError:
            return
        if self._gate_offset is None or size < self._gate_offset:
            # First look: count from now on. Smaller: rotated, start again at the top.
            self._gate_offset = size if self._gate_offset is None else 0
        if size == self._gate_offset:
            return
        with path.open("rb") as handle:
            handle.seek(self._gate_offset)
            data = handle.read(GATE_READ_BYTES)
        end = data.rfind(b"\n") + 1
        self._gate_offset += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("eventid") == "gate.refused":
                    self.count_gate_refusal(record)

    def exposition(self) -> bytes:
        """The text format of every metric; the lag maximum starts again."""
        self.loop_lag_max.set(self._lag_max)
        self._lag_max = 0.0
        return generate_latest(self.registry)

    async def watch_loop(self, interval_seconds: float) -> None:
        """Sample the event loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval_seconds)
            lag = max(0.0, loop.time() - start - interval_seconds)
            self.loop_lag.set(lag)
            self._lag_max = max(self._lag_max, lag)

    async def serve(self, config: Config, ready: asyncio.Event | None = None) -> None:
        """Serve /metrics on `metrics.listen` until cancelled; `ready` is set once bound."""
        if config.metrics.listen is None:
            return
        host, port = parse_listen(config.metrics.listen)
        gate_log = DataLayout(config.storage.data_dir).gate_log

        async def handle(_request: web.Request) -> web.Response:
            await asyncio.to_thread(self.read_gate_log, gate_log)
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            self.addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
            log.info("metrics on http://%s:%d/metrics", *self.addresses[0])
            if ready is not None:
                ready.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.watch_loop(config.metrics.loop_lag_interval_seconds))
                await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await runner.cleanup()


__all__ = ["CONTENT_TYPE", "Metrics"]
