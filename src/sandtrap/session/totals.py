"""What one connection's channels moved: byte totals, last activity, the byte budget.

Owns the counters every channel's pump taps into. Deciding when a budget is spent is limits.py's;
acting on it is the connection's (session/connection.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sandtrap.limits import ByteBudget


@dataclass
class SessionTotals:
    """What all channels of one connection moved; updated live, so a cancelled channel counts.

    `last_activity` (on `clock`, monotonic seconds) is when a byte last passed either way (the
    idle timeout's clock); `budget` (optional) caps bytes per direction and `on_exceeded` is
    called once when it is spent.
    """

    clock: Callable[[], float] = time.monotonic
    bytes_in: int = 0
    bytes_out: int = 0
    exit_status: int | None = None
    last_activity: float = field(default=-1.0)
    budget: ByteBudget | None = None
    on_exceeded: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.last_activity < 0:
            self.last_activity = self.clock()

    def count_in(self, count: int) -> None:
        self.bytes_in += count
        self._count("in", count)

    def count_out(self, count: int) -> None:
        self.bytes_out += count
        self._count("out", count)

    def _count(self, direction: Literal["in", "out"], count: int) -> None:
        self.last_activity = self.clock()
        if (
            self.budget is not None
            and self.budget.add(direction, count)
            and self.on_exceeded is not None
        ):
            self.on_exceeded()


__all__ = ["SessionTotals"]
