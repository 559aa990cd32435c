"""The pool's decisions as a plain state object: no I/O, no asyncio, clock and randomness injected.

Owns what the pool knows (idle, busy and creating members, logins waiting and recently arrived,
sticky entries, engine outages) and decides from it (the warm target, how many to create of which
image, which idle member to hand out or trim, whether one must be re-checked first, which busy
sandbox a source already has, what a release leaves). `sandbox/pool.py` does the I/O around it.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sandtrap.config import WeightedImage
from sandtrap.events import Peer


class Member(Protocol):
    """What the state needs of a sandbox: its container id and image."""

    @property
    def id(self) -> str: ...

    @property
    def image(self) -> str: ...


S = TypeVar("S", bound=Member)


def plan_refill(
    images: Sequence[WeightedImage],
    idle: dict[str, int],
    creating: dict[str, int],
    pool_size: int,
    room: int,
) -> list[str]:
    """Which images to create now so each image's warm share approaches its weight.

    Args:
        idle, creating: counts per image.
        pool_size: target number of warm sandboxes in all.
        room: how many more containers the max_sandboxes cap allows.
    """
    total_weight = sum(item.weight for item in images)
    have = {item.image: idle.get(item.image, 0) + creating.get(item.image, 0) for item in images}
    wanted = max(0, min(pool_size - sum(have.values()), room))
    plan: list[str] = []
    for _ in range(wanted):
        # The image furthest below its share gets the next slot (largest remainder).
        image = max(
            images,
            key=lambda item: pool_size * item.weight / total_weight - have[item.image],
        ).image
        have[image] += 1
        plan.append(image)
    return plan


@dataclass(frozen=True)
class PoolStatistics:
    idle: int
    busy: int
    creating: int
    created_total: int
    errors_total: int
    engine_ok: bool
    waiting: int = 0
    target: int = 0


@dataclass
class InUse(Generic[S]):
    """A sandbox in use; in sticky mode several connections of one source IP share it."""

    sandbox: S
    sessions: dict[str, Peer]
    allocated_at: float

    @property
    def peer(self) -> Peer:
        return next(iter(self.sessions.values()))


@dataclass
class StickyEntry(Generic[S]):
    """A source IP's own sandbox in sticky mode: in use, being released, or stopped and kept."""

    sandbox: S
    released_at: float | None = None
    releasing: bool = False


class StickyAction(enum.Enum):
    """What to do with a source IP's own sandbox when it connects again."""

    SHARE = "share"  # in use by another of its connections: one machine, shared
    RESTART = "restart"  # stopped and kept: start it again (if it is not running)
    FRESH = "fresh"  # expired, or no room under max_sandboxes: take a fresh one


@dataclass(frozen=True)
class Release(Generic[S]):
    """What a session's release leaves to do: nothing while another session shares the sandbox,
    else stop and record it (and mark `sticky` released once that is done)."""

    last: bool
    sticky: StickyEntry[S] | None


class PoolState(Generic[S]):
    """Everything the pool decides from; every method is synchronous and does no I/O."""

    def __init__(
        self,
        images: Sequence[WeightedImage],
        *,
        size: int,
        max_sandboxes: int,
        sticky_ttl_seconds: float,
        clock: Callable[[], float],
        rng: random.Random,
        max_warm: int | None = None,
        grow_window_seconds: float = 120.0,
    ) -> None:
        """`size` is the warm floor; with `max_warm` above it the warm target follows the logins
        of the last `grow_window_seconds` (None: a fixed pool of `size`)."""
        self.images = list(images)
        self.size = size
        self.max_warm = max(size, max_warm if max_warm is not None else size)
        self.grow_window_seconds = grow_window_seconds
        self.max_sandboxes = max_sandboxes
        self._arrivals: deque[float] = deque()
        self._waiting = 0
        self.sticky_ttl_seconds = sticky_ttl_seconds
        self._clock = clock
        self._rng = rng
        self._idle: dict[str, deque[S]] = {item.image: deque() for item in self.images}
        self._creating: dict[str, int] = {}
        self._busy: dict[str, InUse[S]] = {}
        self._sticky: dict[str, StickyEntry[S]] = {}
        # Members not re-checked since the last engine outage may be gone (outage generations).
        self._generation = 0
        self._born: dict[str, int] = {}
        self.created_total = 0
        self.errors_total = 0
        self.engine_ok = False
        self.last_error = ""

    # --- counts ----------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            idle=sum(len(queue) for queue in self._idle.values()),
            busy=len(self._busy),
            creating=sum(self._creating.values()),
            created_total=self.created_total,
            errors_total=self.errors_total,
            engine_ok=self.engine_ok,
            waiting=self._waiting,
            target=self.target(),
        )

    def room(self) -> int:
        """How many more containers max_sandboxes allows (idle, busy and creating all count)."""
        stats = self.statistics()
        return self.max_sandboxes - stats.idle - stats.busy - stats.creating

    # --- demand ----------------------------------------------------------------------------

    def record_arrival(self) -> None:
        """A login asked for a sandbox: it counts towards the warm target for the window."""
        self._arrivals.append(self._clock())
        self._expire_arrivals()

    def _expire_arrivals(self) -> None:
        cutoff = self._clock() - self.grow_window_seconds
        while self._arrivals and self._arrivals[0] < cutoff:
            self._arrivals.popleft()
        # The window never needs more entries than the ceiling it can raise the target to.
        while len(self._arrivals) > self.max_warm:
            self._arrivals.popleft()

    def target(self) -> int:
        """Warm sandboxes wanted now: the recent logins, between size and max_warm."""
        self._expire_arrivals()
        return max(self.size, min(self.max_warm, len(self._arrivals)))

    def begin_wait(self) -> None:
        """A login waits for an idle member: one more to create beyond the warm target."""
        self._waiting += 1

    def end_wait(self) -> None:
        self._waiting -= 1

    # --- refill ----------------------------------------------------------------------------

    def plan_refill(self) -> list[str]:
        """What to create now: the warm target plus one per waiting login, within max_sandboxes."""
        idle = {image: len(queue) for image, queue in self._idle.items()}
        wanted = self.target() + self._waiting
        return plan_refill(self.images, idle, self._creating, wanted, self.room())

    def surplus_idle(self) -> list[S]:
        """Idle members beyond the warm target while nobody waits: the oldest, to remove."""
        if self._waiting:
            return []
        extra = sum(len(queue) for queue in self._idle.values()) - self.target()
        if extra <= 0:
            return []
        # Trim the image furthest above its share first; within an image, the oldest first.
        target = self.target()
        total_weight = sum(item.weight for item in self.images)
        left = {image: len(queue) for image, queue in self._idle.items()}
        surplus: list[S] = []
        for _ in range(extra):
            image = max(
                (item for item in self.images if left[item.image]),
                key=lambda item: left[item.image] - target * item.weight / total_weight,
            ).image
            queue = self._idle[image]
            surplus.append(queue[len(queue) - left[image]])
            left[image] -= 1
        return surplus

    def begin_create(self, image: str) -> None:
        self._creating[image] = self._creating.get(image, 0) + 1

    def end_create(self, image: str) -> None:
        self._creating[image] -= 1

    def add_idle(self, sandbox: S) -> None:
        """A new member is ready: idle, and known to be alive in this generation."""
        self._born[sandbox.id] = self._generation
        self.created_total += 1
        self._idle[sandbox.image].append(sandbox)

    def idle_members(self) -> list[S]:
        return [sandbox for queue in self._idle.values() for sandbox in queue]

    def drop_idle(self, sandbox: S) -> bool:
        """Forget an idle member found dead; False when it was handed out meanwhile."""
        queue = self._idle.get(sandbox.image)
        if queue is None or sandbox not in queue:
            return False
        queue.remove(sandbox)
        self._born.pop(sandbox.id, None)
        return True

    def take_all_idle(self) -> list[S]:
        """Empty the idle queues (shutdown removes what they held)."""
        members = self.idle_members()
        for queue in self._idle.values():
            queue.clear()
        return members

    # --- allocation --------------------------------------------------------------------------

    def take_idle(self) -> S | None:
        """An idle member, its image drawn by weight among images that have one."""
        ready = [item for item in self.images if self._idle[item.image]]
        if not ready:
            return None
        choice = self._rng.choices(ready, weights=[item.weight for item in ready])[0]
        return self._idle[choice.image].popleft()

    def needs_check(self, sandbox: S) -> bool:
        """True when the member predates an engine outage: it must be inspected before use."""
        return self._born.get(sandbox.id, self._generation) != self._generation

    def confirm_alive(self, sandbox: S) -> None:
        """The member was seen running since the last outage."""
        self._born[sandbox.id] = self._generation

    def forget(self, sandbox: S) -> None:
        self._born.pop(sandbox.id, None)

    def is_busy(self, sandbox_id: str) -> bool:
        return sandbox_id in self._busy

    def busy_for_source(self, src_ip: str) -> S | None:
        """The sandbox another live connection of `src_ip` holds, if any (per-source sharing)."""
        for busy in self._busy.values():
            if any(peer.src_ip == src_ip for peer in busy.sessions.values()):
                return busy.sandbox
        return None

    def take_busy(self, sandbox: S, peer: Peer) -> InUse[S]:
        busy = InUse(sandbox, {peer.session_id: peer}, self._clock())
        self._busy[sandbox.id] = busy
        return busy

    def share(self, sandbox_id: str, peer: Peer) -> None:
        """Another connection of the same source IP joins a sandbox in use."""
        self._busy[sandbox_id].sessions[peer.session_id] = peer

    def drop_busy(self, sandbox_id: str) -> None:
        self._busy.pop(sandbox_id, None)

    def busy_entries(self) -> list[InUse[S]]:
        return list(self._busy.values())

    # --- release -----------------------------------------------------------------------------

    def begin_release(self, sandbox_id: str, peer: Peer) -> Release[S]:
        """A session let go of its sandbox; `last` is False while others still share it."""
        busy = self._busy.get(sandbox_id)
        if busy is not None:
            busy.sessions.pop(peer.session_id, None)
            if busy.sessions:
                return Release(last=False, sticky=None)
            del self._busy[sandbox_id]
            self._born.pop(sandbox_id, None)
        entry = self._sticky.get(peer.src_ip)
        if entry is not None and entry.sandbox.id != sandbox_id:
            entry = None
        if entry is not None:
            entry.releasing = True
        return Release(last=True, sticky=entry)

    def end_release(self, release: Release[S]) -> None:
        """The sandbox is stopped and recorded: a sticky entry's TTL starts now."""
        if release.sticky is not None and release.sticky.releasing:
            release.sticky.released_at = self._clock()
            release.sticky.releasing = False

    # --- sticky --------------------------------------------------------------------------------

    def sticky_entry(self, src_ip: str) -> StickyEntry[S] | None:
        return self._sticky.get(src_ip)

    def sticky_action(self, src_ip: str, entry: StickyEntry[S]) -> StickyAction:
        """What to do with `entry` (no longer being released) for a new connection from src_ip."""
        if entry.sandbox.id in self._busy:
            return StickyAction.SHARE
        if (
            entry.released_at is not None
            and self._clock() - entry.released_at > self.sticky_ttl_seconds
        ):
            del self._sticky[src_ip]
            return StickyAction.FRESH
        if self.room() <= 0:
            return StickyAction.FRESH
        return StickyAction.RESTART

    def remember_sticky(self, src_ip: str, sandbox: S) -> None:
        self._sticky[src_ip] = StickyEntry(sandbox)

    def forget_sticky(self, src_ip: str) -> None:
        self._sticky.pop(src_ip, None)

    def forget_expired_sticky(self) -> None:
        cutoff = self._clock() - self.sticky_ttl_seconds
        expired = [
            ip
            for ip, entry in self._sticky.items()
            if entry.released_at is not None and entry.released_at < cutoff
        ]
        for ip in expired:
            del self._sticky[ip]

    # --- engine health -------------------------------------------------------------------------

    def engine_failed(self, message: str, unavailable: bool) -> bool:
        """Count a failure; returns True when its message is new (report it once, not per retry).

        An unreachable engine starts a new generation: containers may not survive an outage.
        """
        self.errors_total += 1
        if unavailable:
            self.engine_ok = False
            self._generation += 1
        new = message != self.last_error
        self.last_error = message
        return new

    def engine_answered(self, clear_error: bool = False) -> None:
        self.engine_ok = True
        if clear_error:
            self.last_error = ""
