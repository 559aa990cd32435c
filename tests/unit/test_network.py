"""The sinkhole's pure parts: DNS, stream sniffing, budgets, the front's record checks, bodies."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandtrap.config import parse_config
from sandtrap.events import to_record
from sandtrap.gate.bodies import create_body
from sandtrap.gate.policy import GatePolicy, Refused, is_ours, is_sinkhole, route
from sandtrap.network import dns, sniff
from sandtrap.network.budget import Budget
from sandtrap.network.deploy import network_mismatch, spec_hash
from sandtrap.network.feed import BadRecord, Owner, owners, parse_record, to_event
from sandtrap.network.service import garp_frame, ruleset
from sandtrap.sandbox.hardening import container_body
from sandtrap.sandbox.sinknet import (
    addresses,
    container_name,
    network_body,
    network_name,
    sinkhole_body,
)

CONFIG = parse_config(
    {"sensor": "s1", "sandbox": {"network": "sinkhole", "sinkhole": {"subnet": "10.118.0.0/16"}}}
)

# --- DNS -----------------------------------------------------------------------------------------

NONE_S1 = {"sensor": "s1", "sandbox": {"network": "none"}}


def test_every_name_exists_and_points_at_the_sinkhole() -> None:
    query = dns.parse_query(dns.query_bytes("C2.Example", 1, ident=0xBEEF))
    assert query is not None and query.name == "c2.example" and query.type_name == "A"
    reply = dns.answer(query, "10.118.0.1")
    ident, flags, qd, an = struct.unpack_from("!HHHH", reply)
    assert (ident, qd, an) == (0xBEEF, 1, 1) and flags & 0x8000 and flags & 0xF == 0
    assert reply.endswith(bytes([10, 118, 0, 1]))


def test_other_types_get_plausible_answers_or_none() -> None:
    for qtype, count in ((15, 1), (16, 1), (2, 2), (12, 1), (28, 0), (33, 0)):
        query = dns.parse_query(dns.query_bytes("x.example", qtype))
        assert query is not None
        assert struct.unpack_from("!H", dns.answer(query, "10.0.0.1"), 6)[0] == count, qtype


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        dns.query_bytes("a.example")[:-2],  # cut
        b"\x12\x34\x81\x80" + dns.query_bytes("a.example")[4:],  # a response
        dns.query_bytes("a.example")[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        dns.query_bytes("a.example")[:12] + b"\x3f" + b"a" * 63 + b"\x3f" * 200,  # runs off
    ],
)
def test_malformed_queries_are_not_answered(data: bytes) -> None:
    assert dns.parse_query(data) is None


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_dns_parser_never_raises(data: bytes) -> None:
    query = dns.parse_query(data)
    if query is not None:
        dns.answer(query, "10.0.0.1")
        assert len(query.name) <= 4 * 255


def test_odd_label_bytes_are_escaped() -> None:
    query = dns.parse_query(dns.query_bytes("a").replace(b"\x01a", b"\x03a\x0a."))
    assert query is not None and query.name == "a\\010\\046"


# --- HTTP and TLS -------------------------------------------------------------------------------


def test_http_head_is_parsed_and_answered() -> None:
    data = (
        b"POST /x.sh?a=1 HTTP/1.1\r\nHost: 203.0.113.7:8080\r\nUser-Agent: curl/7.88\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )
    request = sniff.parse_http_head(data)
    assert request is not None and request.method == "POST" and request.content_length == 4
    assert request.host == "203.0.113.7:8080" and request.user_agent == "curl/7.88"
    assert data[request.head_bytes :] == b"body"
    assert sniff.full_url(request, "203.0.113.7", 8080) == "http://203.0.113.7:8080/x.sh?a=1"
    answer = sniff.http_response(request, "Sun, 29 Nov 2026 14:30:10 GMT")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"#!/bin/sh\nexit 0\n")


def test_http_without_host_and_absolute_form() -> None:
    request = sniff.parse_http_head(b"GET / HTTP/1.0\n\n")
    assert request is not None and sniff.full_url(request, "198.51.100.9", 80) == (
        "http://198.51.100.9/"
    )
    proxy = sniff.parse_http_head(b"GET http://a.example/z HTTP/1.1\r\n\r\n")
    assert proxy is not None and sniff.full_url(proxy, "10.0.0.1", 3128) == "http://a.example/z"


def test_not_http() -> None:
    assert sniff.parse_http_head(b"SSH-2.0-x\r\n\r\n") is None
    assert sniff.parse_http_head(b"GET / HTTP/1.1\r\n") is None  # head not complete
    assert not sniff.looks_like_http(b"\x16\x03\x01")


def _client_hello(server_name: str) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_client_hello_gives_sni_alpn_and_ja3() -> None:
    data = _client_hello("example.com")
    assert sniff.tls_record_size(data) == len(data)
    hello = sniff.parse_client_hello(data)
    assert hello is not None and hello.sni == "example.com"
    version, ciphers, extensions, _groups, _formats = hello.ja3.split(",")
    assert version == "771" and "0" in extensions.split("-") and ciphers
    assert len(hello.ja3_hash) == 32


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_client_hello_parser_never_raises(tail: bytes) -> None:
    sniff.parse_client_hello(b"\x16\x03\x01" + struct.pack("!H", len(tail)) + tail)
    data = _HELLO
    sniff.parse_client_hello(data[: len(tail) % len(data)])


_HELLO = _client_hello("fuzz.example")


# --- budget -------------------------------------------------------------------------------------


def test_budget_summarises_a_flood_per_source_and_kind() -> None:
    budget = Budget(rate=1.0, burst=3, interval=10.0)
    allowed = [budget.allow("10.0.0.2", "connect", 0.0) for _ in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert budget.allow("10.0.0.3", "dns", 0.0)  # another source has its own bucket
    assert budget.due(5.0) == []
    assert budget.due(10.0) == [("10.0.0.2", "connect", 7, 10.0)]
    assert budget.allow("10.0.0.2", "connect", 11.0)  # refilled
    assert budget.due(30.0, flush=True) == []


def test_budget_bounds_its_table_and_counts_the_rest() -> None:
    budget = Budget(rate=0.0, burst=1, interval=1.0, max_sources=2)
    budget.allow("a", "x", 0.0)
    budget.allow("a", "x", 0.0)  # a is flooding: kept
    budget.allow("b", "x", 0.0)
    budget.allow("b", "x", 0.0)
    assert not budget.allow("c", "x", 0.0)
    assert ("*", "any", 1, 1.0) in budget.due(1.0)


# --- the front's checks -------------------------------------------------------------------------


def _line(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


GOOD = {
    "dns": {"k": "dns", "src": "10.118.0.2", "dst": "8.8.8.8", "dport": 53, "query": "a.example",
            "qtype": "A"},
    "http": {"k": "http", "src": "10.118.0.2", "dst": "203.0.113.7", "dport": 80, "method": "GET",
             "host": "h", "url": "http://h/", "user_agent": "u", "headers": [["Host", "h"]],
             "body_bytes": 0, "body": ""},
    "tls": {"k": "tls", "src": "10.118.0.2", "dst": "10.118.0.1", "dport": 443, "sni": "e",
            "ja3": "0" * 32, "alpn": ["h2"]},
    "connect": {"k": "connect", "src": "10.118.0.2", "dst": "198.51.100.9", "dport": 4444,
                "proto": "tcp"},
    "data": {"k": "data", "src": "10.118.0.2", "dst": "198.51.100.9", "dport": 4444,
             "first": "aGVsbG8K", "bytes": 6},
    "udp": {"k": "udp", "src": "10.118.0.2", "dst": "198.51.100.9", "dport": 5555, "first": "",
            "bytes": 0},
    "flood": {"k": "flood", "src": "*", "kind": "any", "count": 5, "seconds": 60.0},
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_records_become_events_of_the_session(kind: str) -> None:
    record = parse_record(_line(**GOOD[kind]))
    owner = Owner(container_id="c" * 64, session="3f2a9c1b7d4e", src_ip="203.0.113.45")
    event = to_event(record, owner)
    out = to_record(event, "s1")
    assert out["eventid"] == f"network.{kind}" and out["session"] == "3f2a9c1b7d4e"
    assert out["src_ip"] == "203.0.113.45" and out["sandbox_ip"] == GOOD[kind]["src"]
    assert to_record(to_event(record, None), "s1")["session"] is None


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("dns", {"src": "not-an-ip"}),
        ("dns", {"dport": 70000}),
        ("dns", {"dport": True}),
        ("dns", {"query": 5}),
        ("connect", {"proto": "sctp"}),
        ("http", {"headers": [["a", "b", "c"]]}),
        ("http", {"headers": [[1, 2]]}),
        ("http", {"body": "!!!notbase64"}),
        ("http", {"body": "A" * 2000}),
        ("tls", {"alpn": "h2"}),
        ("flood", {"src": "10.0.0.2", "seconds": float("inf")}),
        ("dns", {"k": "ready-ish"}),
    ],
)
def test_hostile_records_are_refused(kind: str, change: dict[str, Any]) -> None:
    with pytest.raises(BadRecord):
        parse_record(_line(**{**GOOD[kind], **change}))


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_record_parser_raises_only_bad_record(data: bytes) -> None:
    with contextlib.suppress(BadRecord):
        parse_record(data)


def test_long_fields_are_cut_and_long_lines_refused() -> None:
    record = parse_record(_line(**{**GOOD["dns"], "query": "a" * 5000}))
    assert len(record["query"]) == 1024
    with pytest.raises(BadRecord):
        parse_record(b" " * 20000)
    with pytest.raises(BadRecord):
        parse_record(b"[" * 5000)


def test_owners_come_from_allocated_sandbox_names() -> None:
    net = network_name("s1")
    listing = [
        {"Id": "a" * 64, "Names": ["/sandtrap-s-3f2a9c1b7d4e-203.0.113.45"],
         "NetworkSettings": {"Networks": {net: {"IPAddress": "10.118.0.2"}}}},
        {"Id": "b" * 64, "Names": ["/sandtrap-pool-0123456789ab"],
         "NetworkSettings": {"Networks": {net: {"IPAddress": "10.118.0.3"}}}},
        {"Id": "c" * 64, "Names": ["/other"], "NetworkSettings": {"Networks": {}}},
    ]  # fmt: skip
    found = owners(listing, net)
    assert found["10.118.0.2"] == Owner("a" * 64, "3f2a9c1b7d4e", "203.0.113.45")
    assert found["10.118.0.3"].session is None and len(found) == 2


# --- bodies, the gate, the sinkhole's own rules --------------------------------------------------


def test_sandbox_body_joins_the_sinkhole_network_and_the_gate_rebuilds_it() -> None:
    body = container_body(
        CONFIG.sandbox, image="sandtrap/target-debian:12", hostname="web-prod-01", sensor="s1",
        created=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    host = body["HostConfig"]
    assert host["NetworkMode"] == network_name("s1") and body["NetworkDisabled"] is False
    assert host["Dns"] == ["10.118.0.1"] and host["CapAdd"] == list(CONFIG.sandbox.cap_add)
    assert host["Sysctls"]["net.ipv4.neigh.eth0.mcast_solicit"] == "0"
    assert host["Sysctls"]["net.ipv6.conf.all.disable_ipv6"] == "1"
    policy = GatePolicy.from_config(CONFIG, "v1.41")
    assert create_body(policy, json.loads(json.dumps(body))) == body
    for tamper in ({"NetworkMode": "bridge"}, {"NetworkMode": "host"}, {"Dns": ["8.8.8.8"]},
                   {"Sysctls": {}}):  # fmt: skip
        hostile = json.loads(json.dumps(body))
        hostile["HostConfig"].update(tamper)
        with pytest.raises(Refused):
            create_body(policy, hostile)
    none_body = container_body(
        parse_config(NONE_S1).sandbox, image="sandtrap/target-debian:12",
        hostname="web-prod-01", sensor="s1", created=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert none_body["HostConfig"]["NetworkMode"] == "none" and none_body["NetworkDisabled"]
    with pytest.raises(Refused):  # a sinkhole sandbox is not a sandbox of a `none` sensor
        create_body(
            GatePolicy.from_config(parse_config(NONE_S1), "v1.41"),
            body,
        )


def test_the_gate_serves_only_the_sinkholes_stdout() -> None:
    policy = GatePolicy.from_config(CONFIG, "v1.41")
    name = container_name("s1")
    ok = route(policy, "GET", f"/v1.41/containers/{name}/logs?follow=1&stdout=1&stderr=0&since=5")
    assert ok.kind == "sinkhole_logs"
    for target in (
        f"/v1.41/containers/{name}/logs?stderr=1",
        f"/v1.41/containers/{name}/logs?tail=all",
        f"/v1.41/containers/{name}/logs?since=abc",
        "/v1.41/containers/sandtrap-pool-0123456789ab/logs",
    ):
        with pytest.raises(Refused):
            route(policy, "GET", target)
    none_policy = GatePolicy.from_config(parse_config(NONE_S1), "v1.41")
    with pytest.raises(Refused):
        route(none_policy, "GET", f"/v1.41/containers/{name}/logs?stdout=1")
    labels = {"sandtrap.role": "sinkhole", "sandtrap.sensor": "s1"}
    assert is_sinkhole(policy, {"Config": {"Labels": labels}})
    # Nothing else of the sinkhole (exec, archive, stop, remove): it is not one of the sandboxes
    # that the other routes' ownership check accepts.
    assert not is_ours(policy, {"Config": {"Labels": labels}})
    assert not is_sinkhole(policy, {"Config": {"Labels": {**labels, "sandtrap.sensor": "s2"}}})


def test_network_and_sinkhole_bodies() -> None:
    addr = addresses(CONFIG.sandbox)
    assert (addr.gateway, addr.sinkhole, addr.ip_range) == (
        "10.118.0.1", "10.118.255.254", "10.118.0.0/17",
    )  # fmt: skip
    net = network_body(CONFIG.sandbox, "s1")
    assert net["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    assert net["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert network_mismatch(net, net) is None
    assert network_mismatch(net, {**net, "Options": {}}) is not None
    assert network_mismatch(net, {**net, "EnableIPv6": True}) is not None
    sink = sinkhole_body(CONFIG.sandbox, "s1", datetime(2026, 1, 1, tzinfo=UTC))
    assert sink["HostConfig"]["CapDrop"] == ["ALL"] and not sink["HostConfig"]["Privileged"]
    assert "SYS_ADMIN" not in sink["HostConfig"]["CapAdd"] and sink["HostConfig"]["ReadonlyRootfs"]
    later = sinkhole_body(CONFIG.sandbox, "s1", datetime(2026, 2, 1, tzinfo=UTC))
    assert spec_hash(sink, "sha256:x") == spec_hash(later, "sha256:x")
    assert spec_hash(sink, "sha256:x") != spec_hash(sink, "sha256:y")


def test_sinkhole_ruleset_and_announcement() -> None:
    rules = ruleset("eth0", "10.118.0.0/16", tproxy=True)
    assert "redirect to :65001" in rules and "tproxy ip to :65002" in rules
    assert "chain output { type filter hook output priority filter; policy drop;" in rules
    assert "policy drop" in rules.split("table ip6")[1]
    frame = garp_frame(bytes.fromhex("02420a760001"), "10.118.0.1")
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06" and len(frame) == 42
    assert frame[28:32] == frame[38:42] == bytes([10, 118, 0, 1])  # sender IP == target IP


def test_subnet_must_be_private_and_sized() -> None:
    from sandtrap.errors import ConfigError

    for subnet in ("8.8.0.0/16", "10.0.0.0/28", "10.0.0.0/4", "nonsense"):
        with pytest.raises(ConfigError):
            parse_config({"sandbox": {"sinkhole": {"subnet": subnet}}})


def test_base64_helper_in_records_is_bounded() -> None:
    assert len(base64.b64encode(b"x" * 512)) <= 700
