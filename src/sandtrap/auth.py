"""Authentication policy: which password and public-key attempts succeed. Pure, sync, no I/O.

Owns the rules (deny entries, static credentials, accept-after-N, remembered passwords) and the
bounded per-IP memory they need. Recording attempts as events and delaying failures is left to the
SSH front (`ssh/server.py`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sandtrap.config import AuthConfig, Credential

Clock = Callable[[], float]

# Reasons carried into `auth.success` / `auth.failed` events (docs/events.md).
REASON_CREDENTIALS = "credentials"
REASON_WILDCARD = "wildcard"
REASON_REMEMBERED = "remembered"
REASON_ACCEPT_AFTER = "accept_after_failures"
REASON_DENIED = "denied"
REASON_INVALID = "invalid credentials"
REASON_KEY_REFUSED = "public key refused"
REASON_KEY_ACCEPTED = "public keys accepted"
REASON_KEY_LISTED = "listed key"
REASON_KEY_AFTER_OFFERS = "accept_keys_after_offers"
REASON_KEY_UNSIGNED = "public key accepted, no valid signature"
REASON_KEY_HONEYTOKEN = "honeytoken key"
MAX_EXTRA_KEYS = 100_000

# Distinct keys remembered per connection (a client offering more is refused by MaxAuthTries
# long before; the cap only bounds memory).
MAX_KEYS_PER_CONNECTION = 64

WILDCARD = "*"


@dataclass(frozen=True)
class AuthDecision:
    """The outcome of one attempt; `reason` names the rule that decided it."""

    accepted: bool
    reason: str


@dataclass
class _IPMemory:
    failures: int = 0
    accepted: set[tuple[str, str]] = field(default_factory=set)
    key_offers: int = 0
    accepted_keys: set[tuple[str, str]] = field(default_factory=set)
    last_seen: float = 0.0


@dataclass
class ConnectionAuth:
    """Auth state of one connection; created by `AuthPolicy.connection()`."""

    src_ip: str
    failures: int = 0
    key_offers: int = 0
    offered_keys: set[str] = field(default_factory=set)
    key_decisions: dict[tuple[str, str], AuthDecision] = field(default_factory=dict)


def _matches(entries: list[Credential], username: str, password: str) -> str | None:
    """The matching entry's password (`*` or the exact one), or None."""
    for entry in entries:
        if entry.username != username:
            continue
        if entry.password == WILDCARD:
            return WILDCARD
        if entry.password == password:
            return password
    return None


class AuthPolicy:
    """Decides auth attempts from an `AuthConfig` and remembers what it needs per source IP.

    The per-IP memory (failure counts, accepted passwords) forgets an IP `memory_ttl_seconds` after
    it was last seen and holds at most `memory_max_ips` IPs, forgetting the least recently seen.
    Accept-after-N resets the IP's (or connection's) failure count when it accepts, so only the
    accepted password keeps working (with `remember_accepted`) and another needs N new failures.
    """

    def __init__(self, config: AuthConfig, clock: Clock = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._memory: OrderedDict[str, _IPMemory] = OrderedDict()
        self._honeytoken_keys: set[str] = set()

    def accept_honeytoken_key(self, fingerprint: str) -> None:
        """Accept this key from now on (a honeytoken planted in a sandbox; bounded)."""
        if len(self._honeytoken_keys) < MAX_EXTRA_KEYS:
            self._honeytoken_keys.add(fingerprint)

    def connection(self, src_ip: str) -> ConnectionAuth:
        """State for a new connection from `src_ip`."""
        return ConnectionAuth(src_ip=src_ip)

    def remembered_ips(self) -> int:
        """How many source IPs the memory holds now (after expiry)."""
        self._expire(self._clock())
        return len(self._memory)

    def check_password(self, conn: ConnectionAuth, username: str, password: str) -> AuthDecision:
        """Decide a password attempt and update the counters."""
        config = self._config
        memory = self._touch(conn.src_ip)
        if _matches(config.deny, username, password) is not None:
            return self._fail(conn, memory, REASON_DENIED)
        match = _matches(config.credentials, username, password)
        if match is not None:
            return self._accept(
                memory,
                username,
                password,
                REASON_WILDCARD if match == WILDCARD else REASON_CREDENTIALS,
            )
        if config.remember_accepted and (username, password) in memory.accepted:
            return AuthDecision(True, REASON_REMEMBERED)
        threshold = config.accept_after_failures
        failures = memory.failures if config.failure_scope == "ip" else conn.failures
        if threshold and failures >= threshold:
            if config.failure_scope == "ip":
                memory.failures = 0
            else:
                conn.failures = 0
            return self._accept(memory, username, password, REASON_ACCEPT_AFTER)
        return self._fail(conn, memory, REASON_INVALID)

    def check_public_key(
        self, conn: ConnectionAuth, username: str, fingerprint: str
    ) -> AuthDecision:
        """Decide a public-key attempt (`fingerprint` as `SHA256:...`).

        asyncssh asks twice for a key that is accepted (the query, then the signed request): a
        key asked about again in the same connection gets the same answer and counts once. Key
        offers never count toward the password rule accept-after-N, nor the other way round.
        """
        config = self._config
        memory = self._touch(conn.src_ip)
        known = conn.key_decisions.get((username, fingerprint))
        if known is not None:
            return known
        if fingerprint in config.accepted_key_fingerprints:
            decision = AuthDecision(True, REASON_KEY_LISTED)
        elif fingerprint in self._honeytoken_keys:
            decision = AuthDecision(True, REASON_KEY_HONEYTOKEN)
        elif config.accept_public_keys:
            decision = AuthDecision(True, REASON_KEY_ACCEPTED)
        elif config.remember_accepted and (username, fingerprint) in memory.accepted_keys:
            decision = AuthDecision(True, REASON_REMEMBERED)
        else:
            decision = self._count_key_offer(conn, memory, fingerprint)
        if decision.accepted and config.remember_accepted:
            memory.accepted_keys.add((username, fingerprint))
        if len(conn.key_decisions) < MAX_KEYS_PER_CONNECTION:
            conn.key_decisions[(username, fingerprint)] = decision
        return decision

    def _count_key_offer(
        self, conn: ConnectionAuth, memory: _IPMemory, fingerprint: str
    ) -> AuthDecision:
        if fingerprint not in conn.offered_keys:
            if len(conn.offered_keys) < MAX_KEYS_PER_CONNECTION:
                conn.offered_keys.add(fingerprint)
            conn.key_offers += 1
            memory.key_offers += 1
        threshold = self._config.accept_keys_after_offers
        per_ip = self._config.failure_scope == "ip"
        offers = memory.key_offers if per_ip else conn.key_offers
        if threshold and offers >= threshold:
            if per_ip:
                memory.key_offers = 0
            else:
                conn.key_offers = 0
            return AuthDecision(True, REASON_KEY_AFTER_OFFERS)
        return AuthDecision(False, REASON_KEY_REFUSED)

    # --- internals ------------------------------------------------------------------------------

    def _accept(self, memory: _IPMemory, username: str, password: str, reason: str) -> AuthDecision:
        if self._config.remember_accepted:
            memory.accepted.add((username, password))
        return AuthDecision(True, reason)

    def _fail(self, conn: ConnectionAuth, memory: _IPMemory, reason: str) -> AuthDecision:
        memory.failures += 1
        conn.failures += 1
        return AuthDecision(False, reason)

    def _touch(self, src_ip: str) -> _IPMemory:
        now = self._clock()
        self._expire(now)
        memory = self._memory.pop(src_ip, None) or _IPMemory()
        memory.last_seen = now
        self._memory[src_ip] = memory
        while len(self._memory) > self._config.memory_max_ips:
            self._memory.popitem(last=False)
        return memory

    def _expire(self, now: float) -> None:
        # Entries are ordered by last_seen (moved to the end on each touch), so expiry stops at the
        # first live one.
        ttl = self._config.memory_ttl_seconds
        while self._memory:
            oldest = next(iter(self._memory.values()))
            if now - oldest.last_seen < ttl:
                break
            self._memory.popitem(last=False)


__all__ = ["AuthDecision", "AuthPolicy", "ConnectionAuth"]
