"""The anomaly scorer of the running service: every closed session is scored against this
sensor's history, and the strangest are `session.anomaly` events.

Owns the per-session counters fed by the event log (bounded), the history (the index's closed
sessions at start, then each session as it closes, at most `analysis.anomaly_history_max`), and
the worker task that fits and scores in a thread, off the event loop. Features and the model are
analysis/anomaly.py's.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sqlite3
from collections import OrderedDict, deque
from dataclasses import asdict
from pathlib import Path

from sandtrap.analysis.anomaly import AnomalyModel, FeatureCounter, SessionFeatures, Vocabulary
from sandtrap.config import AnalysisConfig
from sandtrap.events import (
    Event,
    EventSink,
    Peer,
    SessionAnomaly,
    SessionClosed,
    SessionEvent,
    to_record,
)

log = logging.getLogger(__name__)

MAX_OPEN_SESSIONS = 20_000
QUEUE_SIZE = 1000


class AnomalyScorer:
    """`offer` is the event-log listener (never blocks); `run` the service-long task.

    Cancelling `run` drops the sessions not scored yet (they are in the log; nothing else is
    lost). Without scikit-learn the scorer logs once and does nothing.
    """

    def __init__(self, config: AnalysisConfig, events: EventSink, index_db: Path | None) -> None:
        self._config = config
        self._events = events
        self._index_db = index_db
        self._open: OrderedDict[str, FeatureCounter] = OrderedDict()
        self._queue: asyncio.Queue[tuple[Peer, FeatureCounter, dict[str, object]]] = asyncio.Queue(
            maxsize=QUEUE_SIZE
        )
        self._history: deque[SessionFeatures] = deque(maxlen=config.anomaly_history_max)
        self._vocabulary = Vocabulary()
        self._model: AnomalyModel | None = None
        self._since_fit = 0
        self.scored = 0
        self.flagged = 0

    def offer(self, event: Event) -> None:
        if not isinstance(event, SessionEvent) or isinstance(event, SessionAnomaly):
            return
        session = event.peer.session_id
        record = to_record(event, "")
        if isinstance(event, SessionClosed):
            finished = self._open.pop(session, None) or FeatureCounter()
            try:
                self._queue.put_nowait((event.peer, finished, record))
            except asyncio.QueueFull:
                log.warning("anomaly queue full: session %s not scored", session)
            return
        counter = self._open.get(session)
        if counter is None:
            counter = self._open[session] = FeatureCounter()
            while len(self._open) > MAX_OPEN_SESSIONS:
                self._open.popitem(last=False)
        counter.add(record)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        try:
            # Only whether the analysis extra is installed; its import (scipy's included) takes
            # a second or more, so not on the event loop.
            await asyncio.to_thread(importlib.import_module, "sklearn")
        except ImportError:
            log.warning("scikit-learn is not installed: sessions are not scored for anomalies")
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        if self._index_db is not None and self._index_db.exists():
            history = await asyncio.to_thread(self._load, self._index_db)
            self._history.extend(history)
            log.info("anomaly history: %d sessions from the index", len(history))
        await self._refit()
        if ready is not None:
            ready.set()
        while True:
            peer, counter, closed = await self._queue.get()
            await self._score(peer, counter, closed)

    def _load(self, path: Path) -> list[SessionFeatures]:
        from sandtrap.analysis.anomaly import history_from_index

        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return history_from_index(db, self._vocabulary, self._config.anomaly_history_max)
        except sqlite3.Error as exc:
            log.warning("cannot read the anomaly history from %s: %s", path, exc)
            return []
        finally:
            db.close()

    async def _refit(self) -> None:
        if len(self._history) < self._config.anomaly_min_history:
            return
        history = list(self._history)
        percentile = self._config.anomaly_percentile
        self._model = await asyncio.to_thread(AnomalyModel, history, percentile)
        self._since_fit = 0

    async def _score(self, peer: Peer, counter: FeatureCounter, closed: dict[str, object]) -> None:
        features = counter.finish(closed, self._vocabulary)
        model = self._model
        if model is not None:
            score = await asyncio.to_thread(model.score, features)
            self.scored += 1
            if score > model.threshold:
                self.flagged += 1
                self._events.emit(
                    SessionAnomaly(
                        peer=peer,
                        score=round(score, 4),
                        threshold=round(model.threshold, 4),
                        percentile=self._config.anomaly_percentile,
                        history=model.size,
                        features=asdict(features),
                    )
                )
        self._history.append(features)
        self._since_fit += 1
        if self._model is None or self._since_fit >= self._config.anomaly_refit_every:
            await self._refit()


__all__ = ["AnomalyScorer"]
