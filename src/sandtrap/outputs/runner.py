"""One output's delivery: a bounded queue that `offer` fills without waiting, drained by one task.

Owns the queue, batching, the bounded send, retries with backoff, the spool of a remote sink and
the drop count (logged once per interval, never silently). A slow or dead sink only fills its own
queue and spool; `offer` (called from the event log on the event loop) never waits and never
raises. Formatting runs in the runner's task, off the session's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from sandtrap.outputs.base import (
    Backoff,
    EventFilter,
    Item,
    OutputError,
    OutputRejected,
    OutputStatistics,
    Record,
    Sink,
)
from sandtrap.outputs.spool import Spool

log = logging.getLogger(__name__)

REPORT_INTERVAL_SECONDS = 60.0


class OutputRunner:
    """Feeds one sink. `run` is a service-long task of the app's TaskGroup; `stop` ends it.

    Cancellation: whatever is queued or in flight is written to the spool (remote sinks) or
    counted and logged as dropped, then the sink is closed.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        sink: Sink,
        *,
        accepts: EventFilter,
        queue_size: int,
        backoff: Backoff,
        spool: Spool | None = None,
        report_interval_seconds: float = REPORT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.kind = kind
        self.sink = sink
        self._accepts = accepts
        self._queue_size = queue_size
        self._backoff = backoff
        self._spool = spool
        self._interval = report_interval_seconds
        self._clock = clock
        self._queue: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._inflight: list[Record] = []
        self._retry_at: float | None = None
        self._delivered = 0
        self._dropped = 0
        self._window_drops = 0
        self._failures = 0
        self._window_failures = 0
        self._last_error = ""
        self._spooled = 0
        self._unexpected = 0
        self._last_report = clock()

    # --- the hot path ------------------------------------------------------------------------

    def offer(self, item: Item) -> None:
        """Queue `item` if the output takes it; when the queue is full, count it as dropped."""
        if not self._accepts.accepts(item):
            return
        if len(self._queue) >= self._queue_size:
            self._drop(1)
            return
        self._queue.append(item)
        self._wake.set()

    # --- the task ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Deliver what is queued, then end `run` (the hub bounds how long that may take)."""
        self._stopped.set()
        self._wake.set()

    def statistics(self) -> OutputStatistics:
        return OutputStatistics(
            name=self.name,
            type=self.kind,
            queued=len(self._queue),
            delivered=self._delivered,
            dropped=self._dropped + (self._spool.dropped if self._spool else 0),
            failures=self._failures,
            spooled=self._spooled,
            spool_bytes=self._spool.size if self._spool else 0,
            connected=self._retry_at is None,
        )

    async def run(self) -> None:
        try:
            while not (self._stopped.is_set() and not self._queue):
                self._report()
                if not self._queue:
                    await self._idle()
                    continue
                try:
                    records = await self._take_batch()
                    await self._deliver(records)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:
                    # A bug in a sink must never end the service's TaskGroup; logged in full
                    # the first time, then counted with the drops.
                    self._unexpected += 1
                    if self._unexpected == 1:
                        log.exception("output %s: a batch failed unexpectedly", self.name)
                    self._drop(len(self._inflight))
                    self._inflight = []
            if self._spool is not None and self._spool.has_data() and self._retry_at is None:
                await self._replay()
        finally:
            self._save_rest()
            self._report(final=True)
            with contextlib.suppress(Exception):
                await self.sink.close()

    async def _idle(self) -> None:
        """Wait for items; meanwhile replay the spool when its retry time has come."""
        if self._spool is not None and self._spool.has_data():
            due = self._retry_at
            if due is None or self._clock() >= due:
                await self._replay()
                return
            self._wake.clear()
            await self._wait(self._wake, max(0.0, due - self._clock()))
            return
        self._wake.clear()
        await self._wait(self._wake, self._interval)

    async def _take_batch(self) -> list[Record]:
        sink = self.sink
        if (
            sink.batch_max_seconds > 0
            and len(self._queue) < sink.batch_max_events
            and not self._stopped.is_set()
        ):
            deadline = self._clock() + sink.batch_max_seconds
            while len(self._queue) < sink.batch_max_events and not self._stopped.is_set():
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._wake.clear()
                await self._wait(self._wake, left)
        records: list[Record] = []
        while self._queue and len(records) < sink.batch_max_events:
            item = self._queue.popleft()
            try:
                records.extend(sink.format(item))
            except Exception:
                self._unexpected += 1
                if self._unexpected == 1:
                    log.exception("output %s: cannot format %r", self.name, type(item).__name__)
                self._drop(1)
        self._inflight = records
        return records

    async def _deliver(self, records: list[Record]) -> None:
        if not records:
            return
        if self._spool is not None:
            if self._spool.has_data() and self._retry_at is None:
                await self._replay()
            if self._retry_at is not None or self._spool.has_data():
                # The sink is down (or behind): keep the order, behind what is spooled.
                self._to_spool(records)
                return
        if await self._send(records):
            return
        if self._spool is not None:
            self._to_spool(records)
            self._retry_at = self._clock() + self._backoff.failed()
            return
        # No spool (a local file): hold the batch and retry; the queue takes the rest meanwhile.
        while not await self._send(records):
            self._retry_at = self._clock() + self._backoff.failed()
            if await self._wait(self._stopped, self._retry_at - self._clock()):
                self._drop(len(records))
                self._inflight = []
                return

    async def _send(self, records: list[Record]) -> bool:
        self._inflight = records
        try:
            async with asyncio.timeout(self.sink.timeout_seconds):
                await self.sink.send(records)
        except OutputRejected as exc:
            log.error("output %s: %d records refused: %s", self.name, len(records), exc)
            self._inflight = []
            self._drop(len(records))
            return True
        except (OutputError, OSError, TimeoutError) as exc:
            self._failures += 1
            self._window_failures += 1
            self._last_error = str(exc) or type(exc).__name__
            if self._failures == 1 or self._retry_at is None:
                log.warning("output %s: delivery failed: %s", self.name, self._last_error)
            return False
        if self._retry_at is not None:
            log.info("output %s: delivering again", self.name)
        self._retry_at = None
        self._backoff.succeeded()
        self._delivered += len(records)
        self._inflight = []
        return True

    async def _replay(self) -> None:
        """Send the spool's front in batches until it is empty or the sink fails again."""
        spool = self._spool
        if spool is None:
            return
        step = max(1, self.sink.batch_max_events)
        replayed = 0
        while spool.has_data():
            records, sizes = await spool.take(step * 20)
            if not records:
                break
            for start in range(0, len(records), step):
                if not await self._send(records[start : start + step]):
                    self._inflight = []
                    self._retry_at = self._clock() + self._backoff.failed()
                    return
                spool.consumed(sum(sizes[start : start + step]))
                replayed += len(records[start : start + step])
        if replayed:
            log.info("output %s: replayed %d spooled records", self.name, replayed)

    def _to_spool(self, records: list[Record]) -> None:
        if self._spool is None:
            self._drop(len(records))
            return
        dropped = self._spool.append(records)
        self._spooled += len(records) - dropped
        self._inflight = []
        if dropped:
            self._window_drops += dropped
            self._report()

    def _save_rest(self) -> None:
        """At the end: the queue and the batch in flight to the spool, or counted as dropped."""
        rest = list(self._inflight)
        self._inflight = []
        while self._queue:
            try:
                rest.extend(self.sink.format(self._queue.popleft()))
            except Exception:
                log.exception("output %s: cannot format a queued item", self.name)
                self._drop(1)
        if not rest:
            return
        if self._spool is not None:
            self._to_spool(rest)
        else:
            self._drop(len(rest))

    # --- accounting ---------------------------------------------------------------------------

    def _drop(self, count: int) -> None:
        if count:
            self._dropped += count
            self._window_drops += count
            self._report()

    def _report(self, *, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._last_report < self._interval:
            return
        elapsed = now - self._last_report
        self._last_report = now
        if self._window_drops:
            log.warning(
                "output %s: dropped %d records in the last %.0f s (%d in all)",
                self.name,
                self._window_drops,
                elapsed,
                self.statistics().dropped,
            )
        if self._window_failures > 1:
            log.warning(
                "output %s: %d failed deliveries in the last %.0f s, last: %s",
                self.name,
                self._window_failures,
                elapsed,
                self._last_error,
            )
        self._window_drops = 0
        self._window_failures = 0

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        """Wait for `event` at most `seconds`; True when it is set."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        return event.is_set()


__all__ = ["REPORT_INTERVAL_SECONDS", "OutputRunner"]
