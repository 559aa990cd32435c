"""Event volume per sandbox: a token bucket per source address, floods counted and summarised.

Pure (the clock is passed in), standard library only. A source over its budget loses no count:
what it was refused is reported as one `flood` record per source and kind per interval.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    dropped: dict[str, int] = field(default_factory=dict)
    since: float = 0.0


class Budget:
    """`allow(src, kind, now)` says whether one more record of `src` may be written."""

    def __init__(self, rate: float, burst: int, interval: float, max_sources: int = 4096) -> None:
        self.rate, self.burst, self.interval = rate, burst, interval
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.overflow = 0  # records of sources beyond max_sources (dropped, summarised as "*")

    def allow(self, src: str, kind: str, now: float) -> bool:
        bucket = self._buckets.get(src)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                idle = next(iter(self._buckets))
                if self._buckets[idle].dropped:
                    self.overflow += 1
                    return False
                del self._buckets[idle]
            bucket = self._buckets[src] = _Bucket(float(self.burst), now)
        self._buckets.move_to_end(src)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        if not bucket.dropped:
            bucket.since = now
        bucket.dropped[kind] = bucket.dropped.get(kind, 0) + 1
        return False

    def due(self, now: float, flush: bool = False) -> list[tuple[str, str, int, float]]:
        """(src, kind, count, seconds) of floods whose interval ended; their counts reset."""
        out: list[tuple[str, str, int, float]] = []
        for src, bucket in self._buckets.items():
            if bucket.dropped and (flush or now - bucket.since >= self.interval):
                span = max(0.0, now - bucket.since)
                out.extend((src, kind, count, span) for kind, count in bucket.dropped.items())
                bucket.dropped = {}
        if self.overflow and (flush or out):
            out.append(("*", "any", self.overflow, self.interval))
            self.overflow = 0
        return out
