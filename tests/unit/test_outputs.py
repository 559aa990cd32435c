"""Pure parts of the outputs: the Cowrie mapping, syslog messages, filters, backoff, spool caps,
chat escaping, alert windows; and the runner's accounting over an in-memory sink."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sandtrap.config import parse_config
from sandtrap.events import AuthFailed, Peer, SessionCommand, SessionRefused, to_record
from sandtrap.outputconfig import AlertRule
from sandtrap.outputs.alerts import AlertRules
from sandtrap.outputs.base import Alert, Backoff, EventFilter, Item, OutputError, Record
from sandtrap.outputs.cowrie import CowrieMapper
from sandtrap.outputs.presets import body, discord_escape, slack_escape
from sandtrap.outputs.runner import OutputRunner
from sandtrap.outputs.spool import Spool
from sandtrap.outputs.syslog import format_message, frame

PEER = Peer("3f2a9c1b7d4e", "203.0.113.45", 51234, 22)


def _map(mapper: CowrieMapper, event: Any) -> list[Record]:
    return mapper.map(to_record(event, "honeypot-01"))


def test_cowrie_publickey_attempt_is_fingerprint_then_login_failed() -> None:
    records = _map(
        CowrieMapper("u"),
        AuthFailed(
            peer=PEER,
            username="root",
            method="publickey",
            key_type="ssh-ed25519",
            key_fingerprint="SHA256:abc",
        ),
    )
    assert [r["eventid"] for r in records] == ["cowrie.client.fingerprint", "cowrie.login.failed"]
    assert records[0]["fingerprint"] == "SHA256:abc" and records[0]["type"] == "ssh-ed25519"
    assert records[1]["message"] == "public key login attempt for [root] failed"
    assert all(r["uuid"] == "u" and r["dst_ip"] is None for r in records)


def test_cowrie_uuid_callable_is_asked_once() -> None:
    calls: list[int] = []

    def uuid() -> str:
        calls.append(1)
        return "once"

    mapper = CowrieMapper(uuid)
    for _ in range(3):
        assert _map(mapper, SessionCommand(peer=PEER, channel=0, input="id"))[0]["uuid"] == "once"
    assert len(calls) == 1


def test_cowrie_keeps_our_name_for_events_it_lacks_and_sessionless_ones() -> None:
    refused = SessionRefused(
        src_ip="198.51.100.9",
        src_port=1,
        dst_port=22,
        reason="max_startups",
        count=7,
        first_timestamp="t0",
        last_timestamp="t1",
        limit=100,
    )
    (record,) = _map(CowrieMapper("u"), refused)
    assert record["eventid"] == "sandtrap.session.refused"
    assert record["session"] is None and record["count"] == 7 and record["src_ip"] == "198.51.100.9"


def test_cowrie_state_is_bounded() -> None:
    mapper = CowrieMapper("u", max_sessions=10)
    for n in range(100):
        mapper.map({"eventid": "session.connect", "session": f"{n:012x}", "dst_ip": "192.0.2.1"})
    assert len(mapper._sessions) == 10


def test_syslog_message_fits_and_stays_json() -> None:
    record = {"timestamp": "2026-11-29T14:30:10.123456Z", "eventid": "session.exec",
              "input": "A" * 20000, "event": {"nested": "B" * 5000}}  # fmt: skip
    message = format_message(
        record,
        facility="local0",
        severity="info",
        hostname="honey pot\x01",
        app_name="sandtrap",
        procid=42,
        max_bytes=2048,
    )
    assert len(message) <= 2048
    header, _, msg = message.decode().partition(" - ")
    assert header == "<134>1 2026-11-29T14:30:10.123456Z honey_pot_ sandtrap 42 session.exec"
    parsed = json.loads(msg)
    assert parsed["input"].endswith("[...truncated]") and parsed["eventid"] == "session.exec"
    assert frame(b"abc", "octet-counting") == b"3 abc"
    assert frame(b"a\nb", "lf") == b"a b\n"


def test_filter_and_backoff() -> None:
    keep = EventFilter(("session.*", "auth.success"), ("session.resize",))
    assert keep.matches("session.command") and keep.matches("auth.success")
    assert not keep.matches("session.resize") and not keep.matches("auth.failed")
    assert not EventFilter(()).matches("session.command")
    assert EventFilter(()).accepts(Alert(rule="r", text="t"))
    backoff = Backoff(1.0, 5.0)
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failed() == 1.0


async def test_spool_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", max_bytes=100)
    assert spool.append([{"n": n} for n in range(20)]) > 0
    assert spool.size <= 100 and spool.dropped > 0
    kept, sizes = await spool.take(2)
    assert kept == [{"n": 0}, {"n": 1}] and sizes == [len('{"n":0}\n')] * 2
    spool.consumed(sizes[0])
    assert (await spool.take(10))[0][0] == {"n": 1}
    spool.consumed(spool.size)
    assert not spool.has_data() and not spool.path.exists()
    (tmp_path / "torn.jsonl").write_bytes(b'{"n":1}\nnot json\n{"n":2}\n{"n":3')
    torn = Spool(tmp_path / "torn.jsonl", max_bytes=1000)
    assert (await torn.take(10))[0] == [{"n": 1}, {"n": 2}]


def test_chat_escaping() -> None:
    assert slack_escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert discord_escape("@everyone [a](b)") == "\\@everyone \\[a\\]\\(b\\)"
    records = [{"eventid": "alert", "message": f"line {n}"} for n in range(1000)]
    assert len(body("discord", records, sensor="s", chat_id=None)["content"]) <= 2000
    assert "more" in body("slack", records, sensor="s", chat_id=None)["text"].splitlines()[-1]


def test_alert_windows_and_digest() -> None:
    now = [0.0]
    rules = AlertRules(
        [
            AlertRule(
                name="c",
                when="command",
                pattern="wget",
                output="o",
                max_per_interval=2,
                interval_seconds=60,
            )
        ],
        lambda: now[0],
    )
    hits = [
        rules.evaluate({"eventid": "session.command", "input": "wget x", "src_ip": f"10.0.0.{n}"})
        for n in range(10)
    ]
    assert [len(h) for h in hits] == [1, 1] + [0] * 8
    assert rules.evaluate({"eventid": "session.command", "input": "ls"}) == []
    assert rules.flush() == []
    now[0] = 61.0
    ((output, digest),) = rules.flush()
    assert output == "o" and digest.digest and digest.count == 8 and "8 sources" in digest.text
    assert len(rules.evaluate({"eventid": "session.exec", "input": "wget y"})) == 1


def test_config_refuses_alerts_to_missing_or_cowrie_outputs() -> None:
    with pytest.raises(Exception, match="names no output"):
        parse_config({"alerts": [{"name": "a", "when": "login_success", "output": "x"}]})
    with pytest.raises(Exception, match="syslog or webhook"):
        parse_config(
            {
                "outputs": [{"type": "cowrie"}],
                "alerts": [{"name": "a", "when": "login_success", "output": "cowrie"}],
            }
        )
    with pytest.raises(Exception, match="needs a pattern"):
        parse_config({"alerts": [{"name": "a", "when": "command", "output": "x"}]})


class _Sink:
    batch_max_events = 10
    batch_max_seconds = 0.0
    timeout_seconds = 0.2

    def __init__(self) -> None:
        self.sent: list[Record] = []
        self.gate = asyncio.Event()
        self.fail = 0

    def format(self, item: Item) -> list[Record]:
        return [to_record(item, "s")] if not isinstance(item, Alert) else []

    async def send(self, records: list[Record]) -> None:
        if self.fail:
            self.fail -= 1
            raise OutputError("down")
        await self.gate.wait()
        self.sent.extend(records)

    async def close(self) -> None:
        return None


async def test_runner_full_queue_drops_and_counts_never_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _Sink()
    clock = [0.0]
    runner = OutputRunner(
        "t",
        "test",
        sink,
        accepts=EventFilter(),
        queue_size=50,
        backoff=Backoff(0.01, 0.01),
        report_interval_seconds=10,
        clock=lambda: clock[0],
    )
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0)
    for n in range(200):  # the sink hangs (gate closed): the queue fills, the rest is dropped
        runner.offer(SessionCommand(peer=PEER, channel=0, input=str(n)))
    clock[0] = 11.0
    runner.offer(SessionCommand(peer=PEER, channel=0, input="late"))
    stats = runner.statistics()
    assert stats.dropped >= 140 and stats.queued == 50
    assert sum("dropped" in r.message for r in caplog.records) == 1
    sink.gate.set()
    runner.stop()
    async with asyncio.timeout(5):
        await task
    # The held batch timed out and was retried: nothing queued was lost.
    assert len(sink.sent) + runner.statistics().dropped == 201


async def test_cowrie_file_is_reopened_after_logrotate_moves_it(tmp_path: Path) -> None:
    from sandtrap.outputs.jsonfile import CowrieFileSink, sensor_uuid

    uuid_file = tmp_path / "cowrie.uuid"
    assert sensor_uuid(uuid_file) == sensor_uuid(uuid_file)  # made once, then kept
    path = tmp_path / "log" / "cowrie.json"
    sink = CowrieFileSink(path, "s", CowrieMapper("u"))
    await sink.send(sink.format(SessionCommand(peer=PEER, channel=0, input="one")))
    path.rename(path.with_name("cowrie.json.1"))  # logrotate's default: rename, then create
    await sink.send(sink.format(SessionCommand(peer=PEER, channel=0, input="two")))
    await sink.close()
    assert json.loads(path.with_name("cowrie.json.1").read_text())["input"] == "one"
    assert json.loads(path.read_text())["input"] == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask


async def test_a_sink_bug_is_counted_never_fatal(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(_Sink):
        def format(self, item: Item) -> list[Record]:
            raise RuntimeError("bug")

    runner = OutputRunner(
        "b", "test", Broken(), accepts=EventFilter(), queue_size=10, backoff=Backoff(1, 1)
    )
    task = asyncio.create_task(runner.run())
    for n in range(3):
        runner.offer(SessionCommand(peer=PEER, channel=0, input=str(n)))
    runner.stop()
    async with asyncio.timeout(5):
        await task
    assert runner.statistics().dropped == 3
    assert sum("cannot format" in r.message for r in caplog.records) == 1


def test_outputs_refuse_to_start_without_their_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from sandtrap.errors import ConfigError
    from sandtrap.outputs import Outputs

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    config = parse_config({"outputs": [{"type": "postgresql", "url": "postgresql://x/y"}]})
    with pytest.raises(ConfigError, match=r"sandtrap\[postgresql\]"):
        Outputs(config)


def test_alert_rules_parse_from_yaml_text() -> None:
    import yaml

    text = """
outputs:
  - {type: webhook, name: chat, url: "https://example.invalid/hook", eventids: []}
alerts:
  - name: miner
    when: command
    pattern: "xmrig|/dev/tcp/"
    output: chat
"""
    config = parse_config(yaml.safe_load(text))
    assert config.alerts[0].when == "command" and config.outputs[0].eventids == []
