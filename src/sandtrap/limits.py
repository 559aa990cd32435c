"""Limit decisions: pure, synchronous, no I/O, every clock and random source injected.

Owns admission of new connections (sshd-style MaxStartups random early drop per source address,
concurrent connections globally and logged-in ones per source, an optional per-IP token bucket),
the aggregation of refusals into one report per source and interval, session deadlines (idle,
absolute), byte budgets, and the caps on attacker strings we store. Enforcement (closing
sockets, writing the auto-logout line, events) is left to ssh/ and session.py.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# --- caps on attacker strings (docs/events.md "Hostile input") ----------------------------------
# UTF-8 bytes kept of each attacker string in events. OpenSSH itself never accepts more than
# a 256 KiB packet; these are far below that and far above anything a real client sends:
# Linux user names are <= 32 chars, real passwords rarely exceed a few hundred bytes, and
# ARG_MAX-sized one-liners (droppers with inline base64) are the only long commands worth keeping.
MAX_USERNAME_BYTES = 1024
MAX_PASSWORD_BYTES = 4096
# An OpenSSH public-key line: a 16384-bit RSA key is about 2.8 KB of base64.
MAX_KEY_BYTES = 16 * 1024
MAX_COMMAND_BYTES = 64 * 1024
MAX_NAME_BYTES = 256  # subsystem names, terminal types, env names, request details
MAX_ENV_VALUE_BYTES = 1024
MAX_ENV_EVENTS = 64  # session.env events per channel (a client may send any number of env requests)
TRUNCATION_MARK = "[...truncated, {total} bytes]"

# TERM as sshd passes it to the shell: terminfo names are short and use only these characters.
_TERM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def cap_text(value: str, limit: int) -> str:
    """`value` cut to at most `limit` UTF-8 bytes (whole characters) plus a truncation mark."""
    encoded = value.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return value
    head = encoded[:limit].decode("utf-8", "ignore")
    return head + TRUNCATION_MARK.format(total=len(encoded))


def is_safe_term(term: str) -> bool:
    """A terminal type we pass on to the sandbox (terminfo-name charset, at most 64 chars)."""
    return _TERM_RE.fullmatch(term) is not None


def _is_safe_env_value(value: str) -> bool:
    return (
        len(value.encode("utf-8", "surrogateescape")) <= MAX_ENV_VALUE_BYTES
        and value.isprintable()
        and value.isascii()
    )


def accepted_env(env: Mapping[str, str], accept: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split client env requests into those passed to the shell and the names dropped.

    `accept` holds sshd_config AcceptEnv patterns (a name, or a prefix ending in `*`); only
    matching names pass, and only with a sane name and a printable ASCII value of at most
    MAX_ENV_VALUE_BYTES; anything else never reaches the engine.
    """
    names = {pattern for pattern in accept if not pattern.endswith("*")}
    prefixes = tuple(pattern[:-1] for pattern in accept if pattern.endswith("*"))
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in env.items():
        wanted = key in names or key.startswith(prefixes)
        if wanted and _ENV_NAME_RE.fullmatch(key) and _is_safe_env_value(value):
            kept[key] = value
        else:
            dropped.append(key)
    return kept, dropped


# --- admission of new connections --------------------------------------------------------------


@dataclass(frozen=True)
class MaxStartups:
    """sshd's `MaxStartups start:rate:full` for unauthenticated connections."""

    start: int
    rate: int
    full: int

    @classmethod
    def parse(cls, text: str) -> MaxStartups:
        """`10:30:100` or a single number (drop everything at that many).

        Raises:
            ValueError: not in sshd's syntax, or start > full, or rate > 100.
        """
        parts = text.split(":")
        if len(parts) == 1 and parts[0].isdigit():
            n = int(parts[0])
            return cls(n, 100, n)
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"max_startups must look like 10:30:100, got {text!r}")
        start, rate, full = (int(p) for p in parts)
        if not (1 <= start <= full) or not 1 <= rate <= 100:
            raise ValueError(f"max_startups needs 1 <= start <= full and rate 1-100: {text!r}")
        return cls(start, rate, full)

    def should_drop(self, unauthenticated: int, draw: float) -> bool:
        """sshd.c drop_connection(): none below `start`, all at `full`, linear in between.

        `draw` is uniform in [0, 100).
        """
        if unauthenticated >= self.full:
            return True
        if unauthenticated < self.start:
            return False
        span = self.full - self.start
        p = (100 - self.rate) * (unauthenticated - self.start) / span + self.rate
        return draw < p


class TokenBucket:
    """Per-key token buckets: `capacity` tokens, refilled at `capacity` per `period` seconds.

    Remembers at most `max_keys` keys (least recently used forgotten first; a forgotten key starts
    full again, which only ever errs towards admitting).
    """

    def __init__(self, capacity: int, period: float, max_keys: int) -> None:
        self._capacity = float(capacity)
        self._rate = capacity / period
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        """Take one token for `key` at time `now`; False when the bucket is empty."""
        tokens, then = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + max(0.0, now - then) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


RefusalReason = Literal["rate_limited", "max_connections", "max_connections_per_ip", "max_startups"]


@dataclass(frozen=True)
class AdmissionSettings:
    """`max_startups` applies per source address; `max_connections` to all connections together;
    `max_connections_per_ip` to a source's logged-in connections; the rate limit (None: off) to
    every new connection of a source."""

    max_connections: int
    max_connections_per_ip: int
    connections_per_ip_per_minute: int | None
    max_startups: MaxStartups
    memory_max_ips: int = 100_000


@dataclass(frozen=True)
class AdmissionStatistics:
    connections: int
    unauthenticated: int
    source_ips: int


class Admission:
    """Who may connect now. `admit` on accept; `authenticated` and `closed` as the connection goes.

    MaxStartups is decided per source address (issue 13): a source's own unauthenticated
    connections decide its random early drop, so one flooding address sees sshd's behaviour while
    other addresses are admitted; `max_connections` bounds everything together. The caller pairs
    every admitted connection with exactly one `closed` call.
    """

    def __init__(
        self, settings: AdmissionSettings, clock: Callable[[], float], draw: Callable[[], float]
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._draw = draw
        rate = settings.connections_per_ip_per_minute
        self._bucket = None if rate is None else TokenBucket(rate, 60.0, settings.memory_max_ips)
        # Both hold only sources with a live connection, so at most `max_connections` keys.
        self._unauthenticated: dict[str, int] = {}
        self._authenticated: dict[str, int] = {}
        self._total = 0

    def admit(self, ip: str) -> RefusalReason | None:
        """None (and the connection is counted) or why it is refused (and nothing is counted)."""
        s = self._settings
        if self._bucket is not None and not self._bucket.take(ip, self._clock()):
            return "rate_limited"
        if self._total >= s.max_connections:
            return "max_connections"
        if self._authenticated.get(ip, 0) >= s.max_connections_per_ip:
            return "max_connections_per_ip"
        if s.max_startups.should_drop(self._unauthenticated.get(ip, 0), self._draw()):
            return "max_startups"
        self._total += 1
        _add(self._unauthenticated, ip, 1)
        return None

    def authenticated(self, ip: str) -> None:
        """An admitted connection of `ip` logged in: it leaves MaxStartups and counts towards
        `max_connections_per_ip`."""
        _add(self._unauthenticated, ip, -1)
        _add(self._authenticated, ip, 1)

    def closed(self, ip: str, authenticated: bool) -> None:
        self._total = max(0, self._total - 1)
        _add(self._authenticated if authenticated else self._unauthenticated, ip, -1)

    def statistics(self) -> AdmissionStatistics:
        sources = self._unauthenticated.keys() | self._authenticated.keys()
        return AdmissionStatistics(self._total, sum(self._unauthenticated.values()), len(sources))


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


# --- aggregated refusals ------------------------------------------------------------------------


@dataclass(frozen=True)
class RefusalCount:
    """Refusals of one (kind, source, listener port, reason) within one report interval.

    `src_ip` None counts refusals of sources beyond the ledger's bound; `src_port` is the first
    refused connection's (None for the overflow); `amount` sums what the caller passed with each
    refusal (bytes received, for instance).
    """

    kind: str
    src_ip: str | None
    src_port: int | None
    dst_port: int
    reason: str
    count: int
    first: float
    last: float
    amount: int


_LedgerKey = tuple[str, str | None, int, str]


class RefusalLedger:
    """Counts refused connections so they are reported one line per source and interval.

    A refused socket costs its sender nothing, so one event per socket would let anyone flood or
    rotate the event log (issue 13: one ssh-audit run gave 3,070 events). `record` counts; `drain`
    returns what was counted since the last drain and starts a new interval; the caller drains at
    each interval's end and at shutdown. At most `max_sources` keys are held per interval;
    refusals of further keys are counted per (kind, port, reason) in an overflow entry with
    `src_ip` None, never dropped. Times are the caller's clock readings.
    """

    def __init__(self, max_sources: int) -> None:
        self._max_sources = max_sources
        self._counts: dict[_LedgerKey, list[Any]] = {}
        self._tracked = 0

    def record(
        self,
        kind: str,
        src_ip: str,
        src_port: int,
        dst_port: int,
        reason: str,
        now: float,
        amount: int = 0,
    ) -> bool:
        """Count one refusal; True when it is the first of this interval (schedule a drain)."""
        first_of_interval = not self._counts
        key: _LedgerKey = (kind, src_ip, dst_port, reason)
        tally = self._counts.get(key)
        if tally is None and self._tracked >= self._max_sources:
            key = (kind, None, dst_port, reason)
            tally = self._counts.get(key)
        if tally is None:
            self._tracked += key[1] is not None
            # [src_port, count, first, last, amount]: mutable, a flood updates it in place.
            self._counts[key] = [src_port if key[1] is not None else None, 1, now, now, amount]
        else:
            tally[1] += 1
            tally[3] = now
            tally[4] += amount
        return first_of_interval

    def drain(self) -> list[RefusalCount]:
        """Everything counted since the last drain (tracked sources first), and reset."""
        counts = [
            RefusalCount(kind, ip, port, dst_port, reason, count, first, last, amount)
            for (kind, ip, dst_port, reason), (port, count, first, last, amount) in sorted(
                self._counts.items(), key=lambda item: item[0][1] is None
            )
        ]
        self._counts = {}
        self._tracked = 0
        return counts

    def __len__(self) -> int:
        return len(self._counts)


# --- deadlines and byte budgets ------------------------------------------------------------------

TimeoutKind = Literal["idle", "absolute"]


def expired(
    now: float, started: float, last_activity: float, idle_seconds: float, max_seconds: float
) -> tuple[TimeoutKind | None, float]:
    """Which deadline has passed (absolute first), and else when the next one falls due."""
    absolute_at = started + max_seconds
    idle_at = last_activity + idle_seconds
    if now >= absolute_at:
        return "absolute", absolute_at
    if now >= idle_at:
        return "idle", idle_at
    return None, min(absolute_at, idle_at)


Direction = Literal["in", "out"]


@dataclass
class ByteBudget:
    """Bytes per session in each direction; `add` says when a budget is first exceeded."""

    max_in: int
    max_out: int
    bytes_in: int = 0
    bytes_out: int = 0
    exceeded: Direction | None = None

    def add(self, direction: Direction, count: int) -> bool:
        """Count `count` bytes; True exactly once, on the call that first crosses a budget."""
        if direction == "in":
            self.bytes_in += count
            over = self.bytes_in > self.max_in
        else:
            self.bytes_out += count
            over = self.bytes_out > self.max_out
        if over and self.exceeded is None:
            self.exceeded = direction
            return True
        return False


__all__ = [
    "MAX_COMMAND_BYTES",
    "MAX_ENV_EVENTS",
    "MAX_ENV_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "MAX_PASSWORD_BYTES",
    "MAX_USERNAME_BYTES",
    "Admission",
    "AdmissionSettings",
    "AdmissionStatistics",
    "ByteBudget",
    "MaxStartups",
    "RefusalCount",
    "RefusalLedger",
    "TokenBucket",
    "accepted_env",
    "cap_text",
    "expired",
    "is_safe_term",
]
