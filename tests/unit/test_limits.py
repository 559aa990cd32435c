"""Limit decisions (limits.py) and PROXY protocol parsing (ssh/proxyproto.py): pure, fake clocks."""

from __future__ import annotations

import struct

import pytest

from sandtrap.limits import (
    MAX_COMMAND_BYTES,
    Admission,
    AdmissionSettings,
    AdmissionStatistics,
    ByteBudget,
    MaxStartups,
    RefusalCount,
    RefusalLedger,
    TokenBucket,
    accepted_env,
    cap_text,
    expired,
    is_safe_term,
)
from sandtrap.ssh.proxyproto import V2_SIGNATURE, ProxyHeaderError, parse_proxy_header


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills_with_time() -> None:
    bucket = TokenBucket(capacity=3, period=60.0, max_keys=10)
    assert [bucket.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take("b", 0.0)  # other keys are independent
    assert not bucket.take("a", 19.0)  # 0.95 tokens back
    assert bucket.take("a", 20.5)
    assert not bucket.take("a", 20.5)
    # A long pause refills to capacity, never beyond.
    assert [bucket.take("a", 10_000.0) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_forgets_least_recent_keys() -> None:
    bucket = TokenBucket(capacity=1, period=60.0, max_keys=2)
    assert bucket.take("a", 0.0)
    assert bucket.take("b", 0.0)
    assert bucket.take("c", 0.0)
    assert len(bucket) == 2
    assert bucket.take("a", 0.0)  # forgotten, so full again
    assert not bucket.take("c", 0.0)


def test_max_startups_parse_and_drop_curve() -> None:
    rule = MaxStartups.parse("10:30:100")
    assert rule == MaxStartups(10, 30, 100)
    assert not rule.should_drop(9, 0.0)
    assert rule.should_drop(10, 29.9) and not rule.should_drop(10, 30.0)
    assert rule.should_drop(55, 64.9) and not rule.should_drop(55, 65.1)
    assert rule.should_drop(100, 99.99)
    assert MaxStartups.parse("5") == MaxStartups(5, 100, 5)
    for bad in ("10:30", "a:b:c", "50:30:10", "10:0:100", "10:101:100"):
        with pytest.raises(ValueError, match="max_startups"):
            MaxStartups.parse(bad)


def _admission(
    clock: FakeClock,
    draw: float = 99.9,
    max_connections: int = 6,
    max_connections_per_ip: int = 2,
    connections_per_ip_per_minute: int | None = None,
) -> Admission:
    settings = AdmissionSettings(
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        connections_per_ip_per_minute=connections_per_ip_per_minute,
        max_startups=MaxStartups(3, 50, 4),
    )
    return Admission(settings, clock=clock, draw=lambda: draw)


def test_max_startups_is_decided_per_source() -> None:
    gate = _admission(FakeClock(), max_connections=100)
    for _ in range(3):
        assert gate.admit("1.1.1.1") is None
    assert gate.admit("1.1.1.1") is None  # 3 of its own: 50% drop, the draw says no
    assert gate.admit("1.1.1.1") == "max_startups"  # 4 of its own = full
    # Another source has none of its own: admitted whatever the draw.
    assert _admission(FakeClock(), draw=0.0).admit("2.2.2.2") is None
    for n in range(3):
        assert gate.admit("2.2.2.2") is None, n
    gate.closed("1.1.1.1", authenticated=False)
    assert gate.admit("1.1.1.1") is None
    assert gate.statistics() == AdmissionStatistics(7, 7, 2)


def test_per_ip_cap_counts_logged_in_connections_only() -> None:
    gate = _admission(FakeClock(), max_connections=100)
    for _ in range(3):
        assert gate.admit("1.1.1.1") is None  # 3 unauthenticated: no per-IP cap on them
    gate.authenticated("1.1.1.1")
    gate.authenticated("1.1.1.1")
    assert gate.statistics() == AdmissionStatistics(3, 1, 1)
    assert gate.admit("1.1.1.1") == "max_connections_per_ip"  # 2 logged in
    assert gate.admit("2.2.2.2") is None
    gate.closed("1.1.1.1", authenticated=True)
    assert gate.admit("1.1.1.1") is None
    gate.closed("1.1.1.1", authenticated=False)
    gate.closed("1.1.1.1", authenticated=False)
    gate.closed("1.1.1.1", authenticated=True)
    gate.closed("2.2.2.2", authenticated=False)
    assert gate.statistics() == AdmissionStatistics(0, 0, 0)


def test_global_cap_bounds_all_sources() -> None:
    gate = _admission(FakeClock())
    for n in range(6):
        assert gate.admit(f"10.0.0.{n}") is None
    assert gate.admit("10.0.0.9") == "max_connections"
    gate.closed("10.0.0.0", authenticated=False)
    assert gate.admit("10.0.0.9") is None


def test_rate_limit_is_off_unless_configured() -> None:
    clock = FakeClock()
    gate = _admission(clock, max_connections=10_000, max_connections_per_ip=100)
    for _ in range(1000):
        assert gate.admit("1.1.1.1") is None
        gate.closed("1.1.1.1", authenticated=False)
    gate = _admission(clock, connections_per_ip_per_minute=2, max_connections_per_ip=100)
    assert gate.admit("1.1.1.1") is None
    assert gate.admit("1.1.1.1") is None
    assert gate.admit("1.1.1.1") == "rate_limited"
    clock.now += 30.0
    assert gate.admit("1.1.1.1") is None
    assert gate.admit("1.1.1.1") == "rate_limited"


def test_refusal_ledger_counts_per_source_and_reason_then_resets() -> None:
    ledger = RefusalLedger(max_sources=10)
    assert ledger.record("session", "1.1.1.1", 5000, 22, "max_startups", 1.0)
    for n in range(999):
        assert not ledger.record("session", "1.1.1.1", 5001 + n, 22, "max_startups", 2.0 + n)
    ledger.record("session", "1.1.1.1", 7000, 22, "max_connections", 3.0)
    ledger.record("proxy", "1.1.1.1", 7001, 2223, "timeout", 4.0, amount=10)
    ledger.record("proxy", "1.1.1.1", 7002, 2223, "timeout", 5.0, amount=5)
    assert len(ledger) == 3
    assert ledger.drain() == [
        RefusalCount("session", "1.1.1.1", 5000, 22, "max_startups", 1000, 1.0, 1000.0, 0),
        RefusalCount("session", "1.1.1.1", 7000, 22, "max_connections", 1, 3.0, 3.0, 0),
        RefusalCount("proxy", "1.1.1.1", 7001, 2223, "timeout", 2, 4.0, 5.0, 15),
    ]
    assert ledger.drain() == []
    assert ledger.record("session", "1.1.1.1", 5000, 22, "max_startups", 9.0)  # a new interval


def test_refusal_ledger_counts_sources_beyond_its_bound_without_holding_them() -> None:
    ledger = RefusalLedger(max_sources=2)
    for n in range(10_000):  # a flood from rotating addresses
        ledger.record("session", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", n, 22, "x", n)
    ledger.record("session", "10.0.0.1", 1, 22, "x", 20_000.0)  # tracked: counted on its own
    assert len(ledger) == 3
    tracked_a, tracked_b, overflow = ledger.drain()
    assert (tracked_a.src_ip, tracked_a.count) == ("10.0.0.0", 1)
    assert (tracked_b.src_ip, tracked_b.count, tracked_b.last) == ("10.0.0.1", 2, 20_000.0)
    assert overflow == RefusalCount("session", None, None, 22, "x", 9998, 2.0, 9999.0, 0)


def test_expired_names_the_deadline() -> None:
    assert expired(100.0, 0.0, 50.0, 60.0, 1000.0) == (None, 110.0)
    assert expired(111.0, 0.0, 50.0, 60.0, 1000.0) == ("idle", 110.0)
    assert expired(1000.0, 0.0, 999.0, 60.0, 1000.0) == ("absolute", 1000.0)


def test_byte_budget_reports_once() -> None:
    budget = ByteBudget(max_in=10, max_out=100)
    assert not budget.add("in", 10)
    assert budget.add("in", 1)
    assert not budget.add("in", 1)
    assert not budget.add("out", 1000)
    assert budget.exceeded == "in"


def test_cap_text_keeps_whole_characters_and_says_so() -> None:
    assert cap_text("root", 1024) == "root"
    capped = cap_text("é" * 10, 5)
    assert capped == "éé[...truncated, 20 bytes]"
    huge = "x" * (MAX_COMMAND_BYTES * 4)
    assert len(cap_text(huge, MAX_COMMAND_BYTES)) < MAX_COMMAND_BYTES + 40
    assert cap_text("\udcff" * 3, 2).startswith("[...truncated")


@pytest.mark.parametrize(
    ("term", "ok"),
    [
        ("xterm-256color", True),
        ("screen.xterm-new", True),
        ("vt100+", True),
        ("", False),
        ("x" * 65, False),
        ("xterm\x1b]0;pwn\x07", False),
        ("xterm\nTERM2=x", False),
        ("xterm=1", False),
        ("-x", False),
    ],
)
def test_term_charset(term: str, ok: bool) -> None:
    assert is_safe_term(term) is ok


def test_env_only_accepted_names_with_sane_values() -> None:
    kept, dropped = accepted_env(
        {
            "LANG": "C.UTF-8",
            "LC_ALL": "en_US.UTF-8",
            "LD_PRELOAD": "/tmp/x.so",
            "LC_X": "a\nb",
            "LC_BIN": "\x00",
            "LC_BIG": "x" * 2000,
            "LC_=": "x",
            "LC_U": "é",
        },
        ("LANG", "LC_*"),
    )
    assert kept == {"LANG": "C.UTF-8", "LC_ALL": "en_US.UTF-8"}
    assert sorted(dropped) == ["LC_=", "LC_BIG", "LC_BIN", "LC_U", "LC_X", "LD_PRELOAD"]


# --- PROXY protocol -------------------------------------------------------------------------------


def test_proxy_v1_tcp4_and_tcp6() -> None:
    data = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22\r\nSSH-2.0-x\r\n"
    header = parse_proxy_header(data)
    assert header is not None
    assert header.version == 1
    assert header.source == ("203.0.113.7", 51234)
    assert header.destination == ("192.0.2.1", 22)
    assert data[header.length :] == b"SSH-2.0-x\r\n"
    six = parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert six is not None and six.source == ("2001:db8::1", 1)
    unknown = parse_proxy_header(b"PROXY UNKNOWN whatever\r\n")
    assert unknown is not None and unknown.source is None


def test_proxy_v1_incremental_and_strict() -> None:
    assert parse_proxy_header(b"") is None
    assert parse_proxy_header(b"PRO") is None
    assert parse_proxy_header(b"PROXY TCP4 1.2.3.4") is None
    for bad in (
        b"SSH-2.0-OpenSSH\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 " + b"1" * 200,
        b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
    ):
        with pytest.raises(ProxyHeaderError):
            parse_proxy_header(bad)


def _v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


def test_proxy_v2_ipv4_ipv6_local_and_tlvs() -> None:
    body = bytes([203, 0, 113, 7, 192, 0, 2, 1]) + struct.pack(">HH", 40000, 22)
    data = _v2(1, 0x11, body + b"\x04\x00\x01x") + b"SSH-2.0-x\r\n"
    header = parse_proxy_header(data)
    assert header is not None
    assert (header.version, header.source, header.destination) == (
        2,
        ("203.0.113.7", 40000),
        ("192.0.2.1", 22),
    )
    assert data[header.length :] == b"SSH-2.0-x\r\n"
    six = _v2(1, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 5, 6))
    parsed = parse_proxy_header(six)
    assert parsed is not None and parsed.source == ("::1", 5)
    local = parse_proxy_header(_v2(0, 0x00, b""))
    assert local is not None and local.source is None
    assert parse_proxy_header(data[:20]) is None


def test_proxy_v2_strict() -> None:
    for bad in (
        V2_SIGNATURE + bytes([0x10, 0x11]) + struct.pack(">H", 0),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack(">H", 0),  # command 2
        _v2(1, 0x11, bytes(4)),  # address block too short
        _v2(1, 0x12, bytes(12)),  # UDP
        _v2(1, 0x31, bytes(216)),  # AF_UNIX
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", 60000),  # too long
        b"\r\n\r\nXX",
    ):
        with pytest.raises(ProxyHeaderError):
            parse_proxy_header(bad)
