"""Refusal events, aggregated: one `gate.refused` event per rule per interval, with a count.

Owns the aggregation state (pure, clock injected); the gate's proxy records each refusal here and
emits what it returns, and calls `due()` on a timer. A burst of hostile requests therefore makes
a bounded number of events (the first of each rule at once, then at most one per rule per
REFUSAL_INTERVAL_SECONDS), never one per request: the event log cannot be flooded or rotated away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sandtrap.events import GateRefused

# How long refusals of one rule are counted into one event after the first is reported.
REFUSAL_INTERVAL_SECONDS = 10.0


@dataclass
class _Window:
    opened: float
    count: int = 0
    example: GateRefused | None = None


class RefusalAggregator:
    """Per rule: the first refusal is reported at once; later ones within the interval are
    counted and reported as one event (the first of them as the example) when it ends. A window
    that ends with refusals opens the next one; one that ends quiet closes."""

    def __init__(
        self, clock: Callable[[], float], interval: float = REFUSAL_INTERVAL_SECONDS
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._windows: dict[str, _Window] = {}
        self.total = 0

    def record(self, event: GateRefused) -> GateRefused | None:
        """Count one refusal (`event.count` 1); return the event to emit now, if any."""
        self.total += 1
        window = self._windows.get(event.rule)
        if window is None:
            self._windows[event.rule] = _Window(self._clock())
            return event
        window.count += 1
        if window.example is None:
            window.example = event
        return None

    def due(self, *, flush: bool = False) -> list[GateRefused]:
        """The aggregated events of windows that ended (all of them with `flush`)."""
        now = self._clock()
        out: list[GateRefused] = []
        for rule, window in list(self._windows.items()):
            if not flush and now - window.opened < self._interval:
                continue
            if window.count and window.example is not None:
                out.append(replace(window.example, count=window.count))
                self._windows[rule] = _Window(now)
            else:
                del self._windows[rule]
        if flush:
            self._windows.clear()
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest window ends; None when none is open."""
        if not self._windows:
            return None
        earliest = min(window.opened for window in self._windows.values())
        return max(0.0, earliest + self._interval - self._clock())
