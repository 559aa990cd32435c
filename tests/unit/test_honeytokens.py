"""Honeytokens: unique per sandbox, the key pair consistent, and the watch's triggers."""

from __future__ import annotations

import dataclasses
import random
from typing import ClassVar

from cryptography.hazmat.primitives import serialization

from sandtrap import events as ev
from sandtrap.analysis.honeytokens import HoneytokenWatch
from sandtrap.events import Peer
from sandtrap.pubkeys import parse_key_line
from sandtrap.sandbox.honeytokens import make_tokens


def test_tokens_unique_and_the_private_key_matches_the_registered_one() -> None:
    one, two = make_tokens("web-prod-03"), make_tokens("web-prod-03")
    values = {t.value for t in one.tokens}
    assert len(values) == len(one.tokens) == 6
    assert not values & {t.value for t in two.tokens}
    (key,) = [t for t in one.tokens if t.kind == "ssh_key"]
    private = serialization.load_ssh_private_key(one.files[key.path][0], password=None)
    line = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    parsed = parse_key_line(line)
    assert parsed is not None and parsed.fingerprint == key.fingerprint
    (history,) = [t for t in one.tokens if t.kind == "history_password"]
    content, _, append = one.files[history.path]
    assert append and history.value.encode() in content
    aws = one.files["/root/.aws/credentials"][0].decode()
    assert "aws_access_key_id = AKIA" in aws
    assert (
        make_tokens("x", random.Random(1)).tokens[0] == make_tokens("x", random.Random(1)).tokens[0]
    )


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)


def test_watch_links_use_to_the_planting_session() -> None:
    sink = Sink()
    accepted: list[str] = []
    watch = HoneytokenWatch(sink, accepted.append)
    planted = make_tokens("db-prod-01")
    tokens = [dataclasses.asdict(t) for t in planted.tokens]
    watch.offer(ev.HoneytokensPlanted(container_id="c1", hostname="db-prod-01", tokens=tokens))
    (key,) = [t for t in planted.tokens if t.kind == "ssh_key"]
    assert accepted == [key.fingerprint]
    first = Peer("aaaaaaaaaaaa", "198.51.100.1", 1, 22)
    watch.offer(
        ev.SandboxAllocated(
            peer=first, container_id="c1", hostname="db-prod-01", image="i", wait_ms=1
        )
    )
    later = Peer("bbbbbbbbbbbb", "203.0.113.7", 2, 22)
    (password,) = [t.value for t in planted.tokens if t.kind == "history_password"]
    watch.offer(ev.AuthFailed(peer=later, username="deploy", method="password", password=password))
    watch.offer(
        ev.AuthSuccess(
            peer=later,
            username="root",
            method="publickey",
            key_type="ssh-ed25519",
            key_fingerprint=key.fingerprint,
        )
    )
    watch.offer(ev.AuthFailed(peer=later, username="root", method="password", password="123456"))
    triggered = [e for e in sink.events if isinstance(e, ev.HoneytokenTriggered)]
    assert [(t.kind, t.via, t.planted_session, t.peer.session_id) for t in triggered] == [
        ("history_password", "password", "aaaaaaaaaaaa", "bbbbbbbbbbbb"),
        ("ssh_key", "publickey", "aaaaaaaaaaaa", "bbbbbbbbbbbb"),
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakeDnsQuery(ev.SessionEvent):
    """Stands in for the sinkhole's events (issue 16): any `network.*` event with text fields."""

    eventid: ClassVar[str] = "network.dns"
    query: str


def test_a_token_inside_a_network_event_triggers() -> None:
    sink = Sink()
    watch = HoneytokenWatch(sink, lambda _fp: None)
    planted = make_tokens("web-prod-03")
    tokens = [dataclasses.asdict(t) for t in planted.tokens]
    watch.offer(ev.HoneytokensPlanted(container_id="c9", hostname="web-prod-03", tokens=tokens))
    (key_id,) = [t.value for t in planted.tokens if t.kind == "aws_access_key_id"]
    peer = Peer("cccccccccccc", "203.0.113.8", 3, 22)
    watch.offer(FakeDnsQuery(peer=peer, query="akia.x.example"))
    assert not sink.events
    # DNS lowercases names: found all the same.
    watch.offer(FakeDnsQuery(peer=peer, query=f"{key_id.lower()}.exfil.example"))
    (triggered,) = sink.events
    assert isinstance(triggered, ev.HoneytokenTriggered)
    assert (triggered.kind, triggered.via, triggered.planted_session) == (
        "aws_access_key_id",
        "network.dns",
        None,
    )
