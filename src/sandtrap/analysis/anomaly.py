"""Anomaly scoring of closed sessions against this sensor's history; pure apart from the model.

Owns the session features (`FeatureCounter` built from a session's event records, the same
numbers `history_from_index` reads back from the SQLite index), the command vocabulary behind
the novelty feature, and the isolation forest (scikit-learn) with its percentile threshold. The
async shell that feeds it is analysis/scorer.py.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sandtrap.analysis.cluster import normalise, segments

MAX_VOCABULARY = 200_000
FEATURE_NAMES = (
    "commands",
    "unique_ratio",
    "novelty",
    "bytes_in",
    "bytes_out",
    "duration",
    "artifacts",
    "auth_attempts",
    "techniques",
    "network_events",
    "channels",
)


@dataclass(frozen=True)
class SessionFeatures:
    """One closed session as the model sees it (counts raw; `vector` log-scales the sizes)."""

    commands: int = 0
    unique_ratio: float = 0.0
    novelty: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    artifacts: int = 0
    auth_attempts: int = 0
    techniques: int = 0
    network_events: int = 0
    channels: int = 0

    def vector(self) -> list[float]:
        values = asdict(self)
        return [
            math.log1p(max(float(values[name]), 0.0))
            if name not in ("unique_ratio", "novelty")
            else float(values[name])
            for name in FEATURE_NAMES
        ]


class Vocabulary:
    """Normalised command segments seen on this sensor (bounded: new ones stop being added)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def novelty_and_learn(self, commands: Iterable[str]) -> tuple[int, float, float]:
        """(segments, unique ratio, share never seen before), then remember them."""
        lines = [normalise(c) for c in segments(list(commands))]
        if not lines:
            return 0, 0.0, 0.0
        unique = set(lines)
        novel = sum(1 for line in unique if line not in self._seen)
        if len(self._seen) < MAX_VOCABULARY:
            self._seen |= unique
        return len(lines), len(unique) / len(lines), novel / len(unique)


@dataclass
class FeatureCounter:
    """Counts of one open session, fed its event records (live, analysis/scorer.py)."""

    commands: list[str] = field(default_factory=list)
    artifacts: int = 0
    auth_attempts: int = 0
    techniques: int = 0
    network_events: int = 0
    channels: int = 0

    def add(self, record: dict[str, Any]) -> None:
        eventid = str(record.get("eventid", ""))
        if eventid in ("session.command", "session.exec") and len(self.commands) < 10_000:
            self.commands.append(str(record.get("input") or ""))
        if eventid in ("session.shell", "session.exec", "session.subsystem"):
            self.channels += 1
        elif eventid in ("auth.failed", "auth.success"):
            self.auth_attempts += 1
        elif eventid == "sandbox.artifact":
            self.artifacts += 1
        elif eventid == "session.attack":
            self.techniques += 1
        elif eventid.startswith("network."):
            self.network_events += 1

    def finish(self, closed: dict[str, Any], vocabulary: Vocabulary) -> SessionFeatures:
        _, unique_ratio, novelty = vocabulary.novelty_and_learn(self.commands)
        return SessionFeatures(
            commands=len(self.commands),
            unique_ratio=unique_ratio,
            novelty=novelty,
            bytes_in=int(closed.get("bytes_in") or 0),
            bytes_out=int(closed.get("bytes_out") or 0),
            duration=float(closed.get("duration") or 0.0),
            artifacts=self.artifacts,
            auth_attempts=self.auth_attempts,
            techniques=self.techniques,
            network_events=self.network_events,
            channels=self.channels,
        )


def history_from_index(
    db: sqlite3.Connection, vocabulary: Vocabulary, limit: int
) -> list[SessionFeatures]:
    """The features of the newest `limit` closed sessions in the index, oldest first.

    Techniques found after the close (from triage) are left out, as the live counter never sees
    them before scoring.
    """
    rows = db.execute(
        "SELECT session, bytes_in, bytes_out, duration FROM sessions WHERE ended IS NOT NULL"
        " ORDER BY ended DESC LIMIT ?",
        (limit,),
    ).fetchall()
    history = []
    for session, bytes_in, bytes_out, duration in reversed(rows):
        counter = FeatureCounter(
            commands=[
                str(r[0] or "")
                for r in db.execute(
                    "SELECT input FROM commands WHERE session = ? ORDER BY id", (session,)
                )
            ]
        )
        counter.channels = _count(db, "SELECT COUNT(*) FROM channels WHERE session = ?", session)
        counter.auth_attempts = _count(
            db, "SELECT COUNT(*) FROM auth_attempts WHERE session = ?", session
        )
        counter.artifacts = _count(db, "SELECT COUNT(*) FROM artifacts WHERE session = ?", session)
        counter.techniques = _count(
            db,
            "SELECT COUNT(*) FROM attack WHERE session = ? AND source != 'artifact.analysed'",
            session,
        )
        counter.network_events = _count(
            db, "SELECT COALESCE(SUM(events), 0) FROM network_counts WHERE session = ?", session
        )
        closed = {"bytes_in": bytes_in, "bytes_out": bytes_out, "duration": duration}
        history.append(counter.finish(closed, vocabulary))
    return history


def _count(db: sqlite3.Connection, sql: str, session: str) -> int:
    return int(db.execute(sql, (session,)).fetchone()[0] or 0)


class AnomalyModel:
    """An isolation forest over the history; `score` is higher for stranger sessions.

    `threshold` is the `percentile` of the history's own scores: a session scoring above it is in
    the top (100 - percentile) % of this sensor's sessions.
    """

    def __init__(self, history: list[SessionFeatures], percentile: float, seed: int = 0) -> None:
        import numpy as np
        from sklearn.ensemble import IsolationForest

        matrix = np.array([f.vector() for f in history], dtype=float)
        self._forest = IsolationForest(n_estimators=100, random_state=seed).fit(matrix)
        scores = -self._forest.score_samples(matrix)
        self.threshold = float(np.percentile(scores, percentile))
        self.size = len(history)

    def score(self, features: SessionFeatures) -> float:
        return self.scores([features])[0]

    def scores(self, sessions: list[SessionFeatures]) -> list[float]:
        import numpy as np

        matrix = np.array([f.vector() for f in sessions], dtype=float)
        return [float(value) for value in -self._forest.score_samples(matrix)]


__all__ = [
    "FEATURE_NAMES",
    "AnomalyModel",
    "FeatureCounter",
    "SessionFeatures",
    "Vocabulary",
    "history_from_index",
]
