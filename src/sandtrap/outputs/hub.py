"""The outputs of one service: built from the configuration, fed by the event log, drained at exit.

Owns the runners (one per configured output), the alert rules' task and their shared lifetime:
`run` is one task of the app's TaskGroup holding a TaskGroup of its own; `stop` asks every
runner to deliver what it holds and end. `offer` is an EventLog listener: it only appends to
bounded queues, so no output ever slows a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
from collections import deque
from collections.abc import Callable

from sandtrap.config import (
    Config,
    CowrieOutput,
    HpfeedsOutput,
    PostgresqlOutput,
    SyslogOutput,
)
from sandtrap.errors import ConfigError
from sandtrap.events import Event
from sandtrap.events.base import to_record
from sandtrap.outputconfig import AnyOutput, output_name, resolve_path
from sandtrap.outputs.alerts import AlertRules
from sandtrap.outputs.base import Backoff, EventFilter, OutputStatistics, Sink
from sandtrap.outputs.cowrie import CowrieMapper
from sandtrap.outputs.hpfeeds import HpfeedsSink
from sandtrap.outputs.jsonfile import CowrieFileSink, sensor_uuid
from sandtrap.outputs.postgresql import PostgresqlSink
from sandtrap.outputs.runner import REPORT_INTERVAL_SECONDS, OutputRunner
from sandtrap.outputs.spool import Spool
from sandtrap.outputs.syslog import SyslogSink
from sandtrap.outputs.webhook import WebhookSink
from sandtrap.paths import DataLayout

log = logging.getLogger(__name__)

ALERT_QUEUE_SIZE = 10_000
ALERT_FLUSH_SECONDS = 1.0


# Output types whose client library is an optional extra: (module, extra to install).
OPTIONAL_LIBRARIES = {"postgresql": ("psycopg", "postgresql"), "hpfeeds": ("hpfeeds", "hpfeeds")}


def check_libraries(outputs: list[AnyOutput]) -> None:
    """Refuse to start with an output whose library is missing (rather than fail every batch).

    Raises:
        ConfigError: naming the output and the extra to install.
    """
    problems = []
    for output in outputs:
        module, extra = OPTIONAL_LIBRARIES.get(output.type, ("", ""))
        if module and importlib.util.find_spec(module) is None:
            problems.append(
                f"outputs: {output_name(output)!r} needs {module}: pip install 'sandtrap[{extra}]'"
            )
    if problems:
        raise ConfigError(problems)


def build_sink(output: AnyOutput, config: Config) -> Sink:
    """The sink of one configured output (no I/O: the cowrie uuid file is read at first use)."""
    layout = DataLayout(config.storage.data_dir)
    if isinstance(output, CowrieOutput):
        mapper = CowrieMapper(output.uuid or _uuid_of(layout), output.protocol)
        return CowrieFileSink(
            resolve_path(config.storage.data_dir, output.path), config.sensor, mapper
        )
    if isinstance(output, SyslogOutput):
        return SyslogSink(output, config.sensor, _cowrie_mapper(output.format, layout))
    if isinstance(output, PostgresqlOutput):
        return PostgresqlSink(output, config.sensor)
    if isinstance(output, HpfeedsOutput):
        return HpfeedsSink(output, config.sensor, CowrieMapper(_uuid_of(layout)))
    return WebhookSink(output, config.sensor, _cowrie_mapper(output.format, layout))


def _uuid_of(layout: DataLayout) -> Callable[[], str]:
    return lambda: sensor_uuid(layout.cowrie_uuid)


def _cowrie_mapper(fmt: str, layout: DataLayout) -> CowrieMapper | None:
    return CowrieMapper(_uuid_of(layout)) if fmt == "cowrie" else None


def build_runner(
    output: AnyOutput,
    config: Config,
    *,
    sink: Sink | None = None,
    clock: Callable[[], float] = time.monotonic,
    report_interval_seconds: float = REPORT_INTERVAL_SECONDS,
) -> OutputRunner:
    name = output_name(output)
    spool = None
    if not isinstance(output, CowrieOutput):
        backoff = Backoff(output.retry_initial_seconds, output.retry_max_seconds)
        if output.spool_max_bytes:
            path = DataLayout(config.storage.data_dir).spool_file(name)
            spool = Spool(path, output.spool_max_bytes)
    else:
        backoff = Backoff(1.0, 30.0)
    return OutputRunner(
        name,
        output.type,
        sink or build_sink(output, config),
        accepts=EventFilter(tuple(output.eventids), tuple(output.exclude)),
        queue_size=output.queue_size,
        backoff=backoff,
        spool=spool,
        report_interval_seconds=report_interval_seconds,
        clock=clock,
    )


class Outputs:
    """Every configured output and the alert rules; `offer` never waits, `run` owns the tasks."""

    def __init__(self, config: Config, runners: list[OutputRunner] | None = None) -> None:
        self.sensor = config.sensor
        if runners is None:
            check_libraries(config.outputs)
        self.runners = (
            runners
            if runners is not None
            else [build_runner(output, config) for output in config.outputs]
        )
        self._by_name = {runner.name: runner for runner in self.runners}
        self._rules = AlertRules(config.alerts, time.monotonic) if config.alerts else None
        self._alert_queue: deque[Event] = deque()
        self._alert_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.alert_drops = 0

    def offer(self, event: Event) -> None:
        """EventLog listener: hand the event to every output and to the alert rules."""
        for runner in self.runners:
            runner.offer(event)
        if self._rules is not None:
            if len(self._alert_queue) >= ALERT_QUEUE_SIZE:
                self.alert_drops += 1
                if self.alert_drops == 1 or self.alert_drops % 10_000 == 0:
                    log.warning("alert rules are behind: %d events skipped", self.alert_drops)
                return
            self._alert_queue.append(event)
            self._alert_wake.set()

    def statistics(self) -> list[OutputStatistics]:
        return [runner.statistics() for runner in self.runners]

    def stop(self) -> None:
        """Deliver what is queued and end `run`; the caller bounds how long it may take."""
        self._stopping.set()
        self._alert_wake.set()

    async def run(self) -> None:
        """Run every output until `stop`; cancellation spools or counts what is left."""
        if not self.runners:
            await self._stopping.wait()
            return
        async with asyncio.TaskGroup() as tasks:
            for runner in self.runners:
                tasks.create_task(runner.run(), name=f"output-{runner.name}")
            if self._rules is not None:
                await self._run_alerts()
            else:
                await self._stopping.wait()
            for runner in self.runners:
                runner.stop()

    async def _run_alerts(self) -> None:
        rules = self._rules
        if rules is None:
            return
        while True:
            while self._alert_queue:
                record = to_record(self._alert_queue.popleft(), self.sensor)
                try:
                    raised = rules.evaluate(record)
                except Exception:
                    log.exception("alert rules failed on %s", record.get("eventid"))
                    continue
                for name, alert in raised:
                    self._by_name[name].offer(alert)
                # Let the loop breathe in a burst: rules run in this task, never the front's.
                await asyncio.sleep(0)
            final = self._stopping.is_set()
            for name, alert in rules.flush(final=final):
                self._by_name[name].offer(alert)
            if final:
                return
            self._alert_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ALERT_FLUSH_SECONDS):
                    await self._alert_wake.wait()


async def drain(outputs: Outputs, task: asyncio.Task[None], grace_seconds: float) -> None:
    """Stop the outputs and give them `grace_seconds` to deliver; then cancel (they spool)."""
    outputs.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_seconds):
            await asyncio.shield(task)
    if not task.done():
        log.warning("outputs still busy after %.0f s at shutdown; spooling the rest", grace_seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["Outputs", "build_runner", "build_sink", "drain"]
