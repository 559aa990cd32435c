"""The triage worker on real files: a real worker process, events in, `artifact.analysed` out;
the same sha256 triaged once; a stuck worker replaced; a full queue counted, never blocking."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandtrap import events as ev
from sandtrap.analysis.triager import ArtifactTriager
from sandtrap.config import AnalysisConfig
from sandtrap.events import Peer
from sandtrap.sandbox.forensics import store_artifact
from tests.unit.test_triage import SAMPLES

PEER = Peer("a1b2c3d4e5f6", "203.0.113.9", 40000, 22)


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.changed = asyncio.Event()

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def analysed(self, count: int) -> list[Any]:
        async with asyncio.timeout(60):
            while (
                len(found := [e for e in self.events if isinstance(e, ev.ArtifactAnalysed)]) < count
            ):
                self.changed.clear()
                await self.changed.wait()
        return found


def artifact_event(directory: Path, content: bytes, path: str) -> ev.SandboxArtifact:
    digest, target = store_artifact(directory, content)
    return ev.SandboxArtifact(
        peer=PEER,
        container_id="c" * 64,
        path=path,
        size=len(content),
        sha256=digest,
        artifact=str(target),
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[ArtifactTriager, Sink]]:
    sink = Sink()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "op.yar").write_text('rule Operator_Marker { strings: $a = "OPMARK" condition: $a }')
    triager = ArtifactTriager(AnalysisConfig(yara_rules=rules), sink)
    ready = asyncio.Event()
    task = asyncio.create_task(triager.run(ready))
    await asyncio.wait_for(ready.wait(), 60)
    yield triager, sink
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_artifacts_triaged_once_with_starter_and_operator_rules(
    running: tuple[ArtifactTriager, Sink], tmp_path: Path
) -> None:
    triager, sink = running
    store = tmp_path / "artifacts"
    dropper = SAMPLES["SandTrap_Shell_Dropper"] + b"# OPMARK\n"
    first = artifact_event(store, dropper, "/tmp/bins.sh")
    triager.offer(first)
    triager.offer(artifact_event(store, SAMPLES["SandTrap_Mirai_Like"], "/tmp/.x/mips"))
    triager.offer(first)  # the same file again (another session): the cached result
    triager.offer(ev.SessionConnect(peer=PEER, dst_ip="127.0.0.1"))  # not an artifact
    results = await sink.analysed(3)
    assert triager.statistics().analysed == 3
    script, elf, again = results
    assert script.sha256 == hashlib.sha256(dropper).hexdigest() == again.sha256
    assert script.path == "/tmp/bins.sh"
    assert script.yara == ["Operator_Marker", "SandTrap_Shell_Dropper"]
    assert script.urls == ["http://198.51.100.7/bins/x86"]
    assert script.mime == "text/x-shellscript"
    assert (script.ssdeep, script.md5) == (again.ssdeep, again.md5)
    assert elf.elf_arch == "mips-32-be"
    assert elf.yara == ["SandTrap_Mirai_Like"]
    record = ev.to_record(elf, "s")
    assert record["eventid"] == "artifact.analysed"
    assert record["session"] == PEER.session_id


async def test_missing_file_recorded_as_an_error(running: tuple[ArtifactTriager, Sink]) -> None:
    triager, sink = running
    triager.offer(
        ev.SandboxArtifact(
            peer=PEER,
            container_id="c",
            path="/x",
            size=1,
            sha256="0" * 64,
            artifact="/nonexistent/artifact",
        )
    )
    (result,) = await sink.analysed(1)
    assert result.error is not None and "unreadable" in result.error


async def test_timeout_replaces_the_worker(tmp_path: Path) -> None:
    sink = Sink()
    triager = ArtifactTriager(AnalysisConfig(triage_timeout_seconds=0.001), sink)
    ready = asyncio.Event()
    task = asyncio.create_task(triager.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        triager.offer(artifact_event(tmp_path, Path("/bin/ls").read_bytes(), "/tmp/ls"))
        (result,) = await sink.analysed(1)
        assert result.error == "timeout"
        assert triager.statistics().failed == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    sink = Sink()
    triager = ArtifactTriager(AnalysisConfig(triage_queue_size=1), sink)
    # No worker runs: the queue fills and the rest are counted, offer never blocks.
    for n in range(3):
        triager.offer(artifact_event(tmp_path, b"file %d" % n, f"/tmp/{n}"))
    await asyncio.sleep(0)
    assert triager.statistics().queued == 1
    assert triager.statistics().dropped == 2
