"""Same-attacker clustering of sessions; pure.

Owns command normalisation, MinHash signatures with LSH banding over normalised command
shingles, the other ties (client fingerprint with credentials, shared artifacts, shared public
keys, an identical password list) and the union of all ties into clusters. Parameters are
documented in docs/analysis.md; loading sessions from the index is analysis/threatquery.py's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
from collections import defaultdict
from dataclasses import dataclass, field

# MinHash/LSH: 64 hash functions in 16 bands of 4 rows put pairs with Jaccard similarity 0.5 in a
# common bucket with probability 1 - (1 - 0.5**4)**16 = 0.64, 0.7 with 0.96 and 0.3 with 0.12;
# candidates are then kept only when the signatures agree on at least JACCARD_THRESHOLD.
NUM_PERM = 64
BANDS = 16
ROWS = NUM_PERM // BANDS
JACCARD_THRESHOLD = 0.5
MIN_COMMANDS = 2  # sessions with fewer command segments are not clustered by their commands
# A credential used in more sessions than this is bait every bot tries (root:123456), so it ties
# nothing, even with the same client.
RARE_CREDENTIAL_SESSIONS = 20
MAX_BUCKET = 500  # a bucket this full (one bot's identical sessions) links to its first member
_PRIME = (1 << 61) - 1

_URL = re.compile(r"\b(?:https?|ftp|tftp)://[^\s;|&'\"<>`)]+", re.IGNORECASE)
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
_HEXRUN = re.compile(r"\b[0-9a-f]{8,}\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")
_SPACE = re.compile(r"\s+")
_SEPARATOR = re.compile(r"\s*(?:;|&&|\|\||\n)\s*")


def normalise(command: str) -> str:
    """A command with what changes between runs of one script replaced by placeholders.

    URLs, addresses, long base64/hex runs and numbers become `<url>`, `<ip>`, `<blob>`, `<hex>`,
    `<n>`; whitespace is collapsed. `wget http://1.2.3.4/x86; chmod 777 x86` and the same line
    with another host and mode normalise alike.
    """
    text = _URL.sub("<url>", command.strip())
    text = _IPV4.sub("<ip>", text)
    text = _BLOB.sub("<blob>", text)
    text = _HEXRUN.sub("<hex>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text)[:512]


def segments(commands: list[str]) -> list[str]:
    """The commands split at `;`, `&&`, `||` and newlines: an exec one-liner is a script too."""
    return [part for c in commands for part in _SEPARATOR.split(c) if part.strip()]


def shingles(commands: list[str]) -> set[str]:
    """Normalised commands and pairs of consecutive ones (order matters for a script)."""
    lines = [normalise(c) for c in segments(commands)]
    return set(lines) | {f"{a}\n{b}" for a, b in itertools.pairwise(lines)}


def _coefficients() -> list[tuple[int, int]]:
    # Fixed, derived from a constant: signatures are comparable across runs and sensors.
    out = []
    for i in range(NUM_PERM):
        digest = hashlib.sha256(b"sandtrap-minhash-%d" % i).digest()
        a, b = struct.unpack(">QQ", digest[:16])
        out.append((a % (_PRIME - 1) + 1, b % _PRIME))
    return out


_COEFFICIENTS = _coefficients()


def minhash(items: set[str]) -> tuple[int, ...]:
    """The MinHash signature of a set (empty set: empty signature)."""
    if not items:
        return ()
    hashes = [
        int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")
        for item in items
    ]
    return tuple(min((a * h + b) % _PRIME for h in hashes) for a, b in _COEFFICIENTS)


def similarity(one: tuple[int, ...], other: tuple[int, ...]) -> float:
    """The Jaccard similarity the two signatures estimate."""
    if not one or not other:
        return 0.0
    return sum(x == y for x, y in zip(one, other, strict=True)) / NUM_PERM


@dataclass(frozen=True)
class SessionTraits:
    """What clustering looks at in one session."""

    session: str
    src_ip: str = ""
    started: str = ""
    commands: tuple[str, ...] = ()
    hassh: str | None = None
    client_version: str | None = None
    username: str | None = None
    password: str | None = None
    attempts: tuple[tuple[str, str], ...] = ()  # (username, password) in order
    artifacts: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()  # honeytokens planted in or used by the session


@dataclass
class Cluster:
    """Sessions tied together, and by what (`ties`: kind -> values that tie, with counts)."""

    id: str
    members: list[SessionTraits]
    ties: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        return sorted({m.src_ip for m in self.members})


class _Union:
    def __init__(self, items: list[str]) -> None:
        self.parent = {item: item for item in items}

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def join(self, one: str, other: str) -> None:
        a, b = self.find(one), self.find(other)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _ties(traits: list[SessionTraits]) -> list[tuple[str, str, str, str]]:
    """(kind, value, session, session) for every pair of sessions tied by one thing."""
    ties: list[tuple[str, str, str, str]] = []
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in traits:
        for sha in t.artifacts:
            groups[("artifact", sha)].append(t.session)
        for key in t.keys:
            groups[("public_key", key)].append(t.session)
        for token in t.tokens:
            groups[("honeytoken", token)].append(t.session)
        if t.hassh and t.username is not None and t.password is not None:
            value = f"{t.hassh} {t.client_version} {t.username}:{t.password}"
            groups[("client_and_credentials", value)].append(t.session)
        if len(t.attempts) >= 2:
            value = " ".join(f"{u}:{p}" for u, p in t.attempts)[:512]
            groups[("password_list", value)].append(t.session)
    credential_use: dict[tuple[str, str], int] = defaultdict(int)
    for t in traits:
        if t.username is not None and t.password is not None:
            credential_use[(t.username, t.password)] += 1
    for (kind, value), sessions in groups.items():
        if kind == "client_and_credentials":
            user, _, password = value.split(" ", 2)[-1].partition(":")
            if credential_use[(user, password)] > RARE_CREDENTIAL_SESSIONS:
                continue
        ties += [(kind, value, sessions[0], other) for other in sessions[1:]]
    # Commands: MinHash + LSH, candidates verified on the signatures.
    signatures = {
        t.session: minhash(shingles(list(t.commands)))
        for t in traits
        if len(segments(list(t.commands))) >= MIN_COMMANDS
    }
    buckets: dict[tuple[int, tuple[int, ...]], list[str]] = defaultdict(list)
    for session, signature in signatures.items():
        for band in range(BANDS):
            bucket = buckets[(band, signature[band * ROWS : (band + 1) * ROWS])]
            if len(bucket) < MAX_BUCKET:
                bucket.append(session)
    seen: set[tuple[str, str]] = set()
    for members in buckets.values():
        for other in members[1:]:
            pair = (members[0], other)
            if pair in seen:
                continue
            seen.add(pair)
            score = similarity(signatures[pair[0]], signatures[other])
            if score >= JACCARD_THRESHOLD:
                ties.append(("commands", f"{score:.2f}", *pair))
    return ties


def cluster_sessions(traits: list[SessionTraits], min_size: int = 2) -> list[Cluster]:
    """Clusters of at least `min_size` sessions, largest first; each with what tied it."""
    by_id = {t.session: t for t in traits}
    union = _Union(list(by_id))
    ties = _ties(traits)
    for _kind, _value, one, other in ties:
        union.join(one, other)
    members: dict[str, list[str]] = defaultdict(list)
    for session in by_id:
        members[union.find(session)].append(session)
    reasons: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for kind, value, one, _other in ties:
        counts = reasons[union.find(one)][kind]
        label = "similar command sequences" if kind == "commands" else value
        counts[label] = counts.get(label, 0) + 1
    clusters = []
    for root, sessions in members.items():
        if len(sessions) < min_size:
            continue
        ordered = sorted((by_id[s] for s in sessions), key=lambda t: (t.started, t.session))
        digest = hashlib.sha256("\n".join(sorted(sessions)).encode()).hexdigest()[:12]
        tied = {kind: dict(values) for kind, values in reasons[root].items()}
        clusters.append(Cluster(f"c-{digest}", ordered, tied))
    clusters.sort(key=lambda c: (-len(c.members), c.id))
    return clusters


__all__ = [
    "BANDS",
    "JACCARD_THRESHOLD",
    "NUM_PERM",
    "Cluster",
    "SessionTraits",
    "cluster_sessions",
    "minhash",
    "normalise",
    "shingles",
    "similarity",
]
