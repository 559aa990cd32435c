"""The triage worker: every captured artifact is triaged once, off the event loop.

Owns a bounded queue fed by the event log (any session event naming an `artifact` file and its
`sha256`: `sandbox.artifact` for diff copies and scp/sftp uploads, and the sinkhole's downloads
when they use the same two fields), one worker process that holds the compiled YARA rules, a
per-artifact timeout, and the `artifact.analysed` events. What a file contains is
analysis/triage.py's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import multiprocessing
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandtrap.analysis.triage import STARTER_RULES, Triage, compile_rules, triage_file
from sandtrap.config import AnalysisConfig
from sandtrap.events import ArtifactAnalysed, Event, EventSink, Peer, SessionEvent
from sandtrap.events.network import NetworkDownload

log = logging.getLogger(__name__)

CACHE_SIZE = 4096

# The worker process's compiled rules (set by _init_worker, read by _triage).
_rules: Any = None
_problems: list[str] = []


def _init_worker(directories: list[str]) -> None:
    global _rules, _problems  # the worker process's own state, set once
    _rules, _problems = compile_rules([Path(d) for d in directories])


def _rule_problems() -> list[str]:
    return list(_problems)


def _triage(path: str) -> Triage:
    return triage_file(Path(path), _rules)


def rule_directories(config: AnalysisConfig) -> list[Path]:
    """The starter set (unless disabled) and the operator's directory, in that order."""
    directories = [STARTER_RULES] if config.starter_rules else []
    if config.yara_rules is not None:
        directories.append(config.yara_rules)
    return directories


@dataclass(frozen=True)
class _Job:
    peer: Peer
    sha256: str
    artifact: Path
    path: str | None


@dataclass(frozen=True)
class TriageStatistics:
    queued: int
    analysed: int
    dropped: int
    failed: int


def analysed_event(peer: Peer, result: Triage, path: str | None) -> ArtifactAnalysed:
    fields = dataclasses.asdict(result)
    fields.pop("missing")
    return ArtifactAnalysed(peer=peer, path=path, **fields)


class ArtifactTriager:
    """`offer` is the event-log listener (never blocks); `run` is the service-long task.

    One artifact at a time is triaged in one worker process ("spawn": no fork of a threaded,
    running service). The same sha256 is triaged once; later sessions that leave it get the
    cached result. Cancelling `run` shuts the worker down without waiting for it.
    """

    def __init__(self, config: AnalysisConfig, events: EventSink) -> None:
        self._config = config
        self._events = events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=config.triage_queue_size)
        self._cache: OrderedDict[str, Triage] = OrderedDict()
        self._analysed = 0
        self._dropped = 0
        self._failed = 0

    def statistics(self) -> TriageStatistics:
        return TriageStatistics(self._queue.qsize(), self._analysed, self._dropped, self._failed)

    def offer(self, event: Event) -> None:
        if isinstance(event, NetworkDownload) and event.session is not None:
            # A download of a session's sandbox (fetch-on-behalf): its URL stands for the path.
            peer = Peer(event.session, event.src_ip or "", 0, 0)
            self._offer(peer, event.sha256, event.artifact, event.url)
            return
        if isinstance(event, ArtifactAnalysed) or not isinstance(event, SessionEvent):
            return
        sha256 = getattr(event, "sha256", None)
        artifact = getattr(event, "artifact", None)
        if not isinstance(sha256, str) or not isinstance(artifact, str):
            return
        path = getattr(event, "path", None)
        self._offer(event.peer, sha256, artifact, path if isinstance(path, str) else None)

    def _offer(self, peer: Peer, sha256: str, artifact: str, path: str | None) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._dropped += 1
                log.warning("artifact %s offered outside the event loop: not analysed", sha256)
                return
        job = _Job(peer, sha256, Path(artifact), path)
        self._loop.call_soon_threadsafe(self._enqueue, job)

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning("triage queue full: %d artifacts not analysed so far", self._dropped)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        directories = [str(d) for d in rule_directories(self._config)]
        pool = self._new_pool(directories)
        try:
            for problem in await self._loop.run_in_executor(pool, _rule_problems):
                log.warning("YARA rules: %s", problem)
            if ready is not None:
                ready.set()
            while True:
                job = await self._queue.get()
                try:
                    pool = await self._handle(pool, job, directories)
                finally:
                    self._queue.task_done()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if self._queue.qsize():
                log.warning("%d artifacts left untriaged at shutdown", self._queue.qsize())

    async def drain(self, timeout_seconds: float) -> bool:
        """Wait until every queued artifact is triaged, at most `timeout_seconds`; True if so."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    def _new_pool(self, directories: list[str]) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(directories,),
        )

    async def _handle(
        self, pool: concurrent.futures.ProcessPoolExecutor, job: _Job, directories: list[str]
    ) -> concurrent.futures.ProcessPoolExecutor:
        loop = asyncio.get_running_loop()
        result = self._cache.get(job.sha256)
        if result is None:
            try:
                async with asyncio.timeout(self._config.triage_timeout_seconds):
                    result = await loop.run_in_executor(pool, _triage, str(job.artifact))
            except (TimeoutError, concurrent.futures.process.BrokenProcessPool) as exc:
                self._failed += 1
                log.warning("triage of %s failed (%s); replacing the worker", job.sha256, exc)
                _terminate(pool)
                pool = self._new_pool(directories)
                result = _failure(
                    job, "timeout" if isinstance(exc, TimeoutError) else "worker died"
                )
            except OSError as exc:
                self._failed += 1
                result = _failure(job, f"unreadable: {exc.strerror}")
            else:
                self._cache[job.sha256] = result
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        self._analysed += 1
        self._events.emit(analysed_event(job.peer, result, job.path))
        return pool


def _failure(job: _Job, error: str) -> Triage:
    size = job.artifact.stat().st_size if job.artifact.exists() else 0
    return Triage(sha256=job.sha256, md5=None, sha1=None, size=size, error=error)


def _terminate(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop a worker stuck on one artifact: the executor cannot cancel a running call."""
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["ArtifactTriager", "TriageStatistics", "analysed_event", "rule_directories"]
