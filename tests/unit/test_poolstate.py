"""The pool's pure state: room, refill plans, weighted choice, outages, sticky, release."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sandtrap.config import WeightedImage
from sandtrap.events import Peer
from sandtrap.sandbox.poolstate import PoolState, StickyAction


@dataclass(frozen=True)
class Member:
    id: str
    image: str = "a"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_state(
    images: tuple[tuple[str, int], ...] = (("a", 1),),
    size: int = 2,
    max_sandboxes: int = 4,
    clock: Clock | None = None,
) -> PoolState[Member]:
    return PoolState(
        [WeightedImage(image=name, weight=weight) for name, weight in images],
        size=size,
        max_sandboxes=max_sandboxes,
        sticky_ttl_seconds=60,
        clock=clock or Clock(),
        rng=random.Random(7),
    )


def peer(n: int, ip: str = "203.0.113.9") -> Peer:
    return Peer(session_id=f"{n:012x}", src_ip=ip, src_port=40000 + n, dst_port=22)


def test_counts_room_and_refill_plan() -> None:
    state = make_state(size=2, max_sandboxes=3)
    assert state.plan_refill() == ["a", "a"]
    state.begin_create("a")
    assert state.plan_refill() == ["a"]
    assert state.statistics().creating == 1
    state.end_create("a")
    state.add_idle(Member("m1"))
    state.add_idle(Member("m2"))
    assert state.plan_refill() == []
    assert state.statistics().idle == 2
    assert state.statistics().created_total == 2
    taken = state.take_idle()
    assert taken is not None
    state.take_busy(taken, peer(1))
    # One busy, one idle: the refill wants one more and the cap (3) leaves room for exactly it.
    assert state.room() == 1
    assert state.plan_refill() == ["a"]
    state.begin_create("a")
    assert state.room() == 0
    assert state.plan_refill() == []


def test_take_idle_draws_images_by_weight_among_ready_ones() -> None:
    state = make_state(images=(("a", 3), ("b", 1)), size=4, max_sandboxes=8)
    assert sorted(state.plan_refill()) == ["a", "a", "a", "b"]
    for n in range(3):
        state.add_idle(Member(f"a{n}", "a"))
    state.add_idle(Member("b0", "b"))
    drawn = [state.take_idle() for _ in range(4)]
    assert {m.image for m in drawn if m is not None} == {"a", "b"}
    assert state.take_idle() is None


def test_an_outage_makes_older_members_need_a_check() -> None:
    state = make_state()
    old = Member("old")
    state.add_idle(old)
    assert not state.needs_check(old)
    assert state.engine_failed("engine gone", unavailable=True)
    assert not state.statistics().engine_ok
    assert state.needs_check(old)
    state.confirm_alive(old)
    assert not state.needs_check(old)
    fresh = Member("fresh")
    state.engine_failed("engine gone again", unavailable=True)
    state.add_idle(fresh)
    assert state.needs_check(old) and not state.needs_check(fresh)
    # An engine that answers with an error is not an outage.
    state.engine_failed("bad request", unavailable=False)
    assert not state.needs_check(fresh)


def test_failures_are_reported_once_per_message() -> None:
    state = make_state()
    assert state.engine_failed("down", unavailable=True)
    assert not state.engine_failed("down", unavailable=True)
    assert state.statistics().errors_total == 2
    state.engine_answered(clear_error=True)
    assert state.statistics().engine_ok
    assert state.engine_failed("down", unavailable=True)


def test_health_drops_only_members_still_idle() -> None:
    state = make_state()
    member = Member("m")
    state.add_idle(member)
    assert state.idle_members() == [member]
    assert state.drop_idle(member)
    assert not state.drop_idle(member)
    assert state.take_all_idle() == []


def test_release_of_a_shared_sandbox_waits_for_its_last_session() -> None:
    clock = Clock()
    state = make_state(clock=clock)
    box = Member("box")
    state.take_busy(box, peer(1))
    state.remember_sticky("203.0.113.9", box)
    entry = state.sticky_entry("203.0.113.9")
    assert entry is not None
    assert state.sticky_action("203.0.113.9", entry) is StickyAction.SHARE
    state.share("box", peer(2))
    first = state.begin_release("box", peer(1))
    assert not first.last
    assert state.is_busy("box")
    last = state.begin_release("box", peer(2))
    assert last.last and last.sticky is not None and last.sticky.releasing
    assert not state.is_busy("box")
    clock.now += 5
    state.end_release(last)
    assert last.sticky.released_at == clock.now and not last.sticky.releasing


def test_sticky_entries_restart_then_expire_after_their_ttl() -> None:
    clock = Clock()
    state = make_state(clock=clock, max_sandboxes=1)
    box = Member("box")
    ip = "198.51.100.4"
    state.take_busy(box, peer(1, ip))
    state.remember_sticky(ip, box)
    release = state.begin_release("box", peer(1, ip))
    state.end_release(release)
    entry = state.sticky_entry(ip)
    assert entry is not None
    assert state.sticky_action(ip, entry) is StickyAction.RESTART
    # No room under max_sandboxes: a fresh one (which then waits), the entry is kept.
    state.add_idle(Member("other"))
    assert state.sticky_action(ip, entry) is StickyAction.FRESH
    assert state.sticky_entry(ip) is entry
    state.take_all_idle()
    clock.now += 61
    assert state.sticky_action(ip, entry) is StickyAction.FRESH
    assert state.sticky_entry(ip) is None


def test_expired_sticky_entries_are_forgotten() -> None:
    clock = Clock()
    state = make_state(clock=clock)
    for n, ip in enumerate(("192.0.2.1", "192.0.2.2")):
        box = Member(f"box{n}")
        state.take_busy(box, peer(n, ip))
        state.remember_sticky(ip, box)
    state.end_release(state.begin_release("box0", peer(0, "192.0.2.1")))
    clock.now += 61
    state.forget_expired_sticky()
    assert state.sticky_entry("192.0.2.1") is None
    assert state.sticky_entry("192.0.2.2") is not None  # in use: never expires


def test_release_of_another_ips_sandbox_leaves_sticky_alone() -> None:
    state = make_state()
    state.take_busy(Member("x"), peer(1, "192.0.2.1"))
    state.remember_sticky("192.0.2.1", Member("y"))
    release = state.begin_release("x", peer(1, "192.0.2.1"))
    assert release.last and release.sticky is None


def make_growing(
    size: int = 2, max_warm: int = 5, max_sandboxes: int = 10
) -> tuple[PoolState[Member], Clock]:
    clock = Clock()
    state = PoolState(
        [WeightedImage(image="a", weight=1)],
        size=size,
        max_warm=max_warm,
        grow_window_seconds=60,
        max_sandboxes=max_sandboxes,
        sticky_ttl_seconds=60,
        clock=clock,
        rng=random.Random(7),
    )
    return state, clock


def test_warm_target_follows_recent_arrivals_between_size_and_max_warm() -> None:
    state, clock = make_growing(size=2, max_warm=5)
    assert state.target() == 2
    for _ in range(3):
        state.record_arrival()
    assert state.target() == 3
    for _ in range(10):
        state.record_arrival()
    assert state.target() == 5  # capped at max_warm
    clock.now += 61
    assert state.target() == 2  # a quiet window: back to the floor
    assert state.statistics().target == 2


def test_waiting_logins_are_demand_beyond_the_target_within_the_cap() -> None:
    state, _ = make_growing(size=2, max_warm=5, max_sandboxes=6)
    for _ in range(4):
        state.begin_wait()
    # Target 2 plus 4 waiting, and the cap leaves room for all six.
    assert len(state.plan_refill()) == 6
    assert state.statistics().waiting == 4
    for n in range(3):
        state.take_busy(Member(f"b{n}"), peer(n, ip=f"198.51.100.{n}"))
    assert len(state.plan_refill()) == 3  # the cap (6) minus three busy
    for _ in range(4):
        state.end_wait()
    assert len(state.plan_refill()) == 2


def test_surplus_idle_is_trimmed_only_when_nobody_waits() -> None:
    state, clock = make_growing(size=1, max_warm=4)
    for _ in range(4):
        state.record_arrival()
    for n in range(4):
        state.add_idle(Member(f"m{n}"))
    assert state.surplus_idle() == []
    clock.now += 61
    assert [m.id for m in state.surplus_idle()] == ["m0", "m1", "m2"]  # the oldest first
    state.begin_wait()
    assert state.surplus_idle() == []


def test_a_source_address_finds_the_sandbox_its_other_connection_holds() -> None:
    state, _ = make_growing()
    box = Member("box")
    state.take_busy(box, peer(1, ip="198.51.100.7"))
    assert state.busy_for_source("198.51.100.7") is box
    assert state.busy_for_source("198.51.100.8") is None
    state.share("box", peer(2, ip="198.51.100.7"))
    assert not state.begin_release("box", peer(1, ip="198.51.100.7")).last
    assert state.busy_for_source("198.51.100.7") is box
    assert state.begin_release("box", peer(2, ip="198.51.100.7")).last
    assert state.busy_for_source("198.51.100.7") is None
