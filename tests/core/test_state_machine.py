"""CLOSED -> OPEN -> HALF_OPEN -> CLOSED/OPEN, a table of legal moves, one probe after the window."""

from __future__ import annotations

import itertools

import pytest

from loopguard_core import TRANSITIONS, Breaker, BreakerState, IllegalTransition, LoopGuardTripped
from loopguard_core.state import check_transition
from loopguard_core.testing import FakeClock


def test_transition_table_rejects_every_move_not_listed() -> None:
    for source, target in itertools.product(BreakerState, BreakerState):
        if (source, target) in TRANSITIONS:
            check_transition(source, target)
        else:
            with pytest.raises(IllegalTransition):
                check_transition(source, target)
    assert (BreakerState.CLOSED, BreakerState.HALF_OPEN) not in TRANSITIONS


def loop_trip(breaker: Breaker) -> None:
    for _ in range(3):
        breaker.before_tool("search", {"q": "x"})
        breaker.after_tool("search", {"q": "x"}, result="same")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "x"})


def test_open_refuses_everything_until_the_recovery_window(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, recovery_seconds=30)
    loop_trip(breaker)
    assert breaker.state is BreakerState.OPEN
    clock.advance(29.9)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("other", {})
    assert info.value.reason == "open"
    assert info.value.facts["tripped_by"] == "loop"
    assert not info.value.terminal
    with pytest.raises(LoopGuardTripped):
        breaker.before_model()


def test_a_new_signature_that_succeeds_closes_the_breaker(clock: FakeClock) -> None:
    moves: list[tuple[BreakerState, BreakerState]] = []
    breaker = Breaker(clock=clock, recovery_seconds=30, on_state_change=lambda a, b, why: moves.append((a, b)))
    loop_trip(breaker)
    clock.advance(30)
    breaker.before_tool("search", {"q": "something new"})  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.after_tool("search", {"q": "something new"}, result="fresh")
    assert breaker.state is BreakerState.CLOSED
    assert moves == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_repeating_the_loop_as_the_probe_reopens(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, recovery_seconds=30)
    loop_trip(breaker)
    clock.advance(31)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("search", {"q": "x"})
    assert info.value.reason == "loop"
    assert breaker.state is BreakerState.OPEN


def test_only_one_probe_at_a_time_and_a_lost_probe_expires(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, recovery_seconds=10)
    loop_trip(breaker)
    clock.advance(10)
    breaker.before_tool("a", {})  # probe admitted, never reports back
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("b", {})
    assert info.value.facts.get("probe_in_flight")
    clock.advance(10)  # the reservation expired: a new probe may go
    breaker.before_tool("b", {})
    breaker.after_tool("b", {}, result="ok")
    assert breaker.state is BreakerState.CLOSED


def test_failing_probe_reopens_and_failure_trips_recover_through_the_same_tool(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, recovery_seconds=5, max_consecutive_failures=2)
    for n in range(2):
        breaker.before_tool("fetch", {"id": n})
        breaker.after_tool("fetch", {"id": n}, error="503")
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("fetch", {"id": 9})
    assert info.value.reason == "failures"
    clock.advance(5)
    breaker.before_tool("fetch", {"id": 10})  # the probe may retry the failing tool
    breaker.after_tool("fetch", {"id": 10}, error="503")
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    breaker.before_tool("fetch", {"id": 11})
    breaker.after_tool("fetch", {"id": 11}, result="invoice")
    assert breaker.state is BreakerState.CLOSED
    breaker.before_tool("fetch", {"id": 12})  # the streak was reset by the success


def test_reset_closes_by_hand() -> None:
    breaker = Breaker(max_turns=1)
    breaker.before_model()
    with pytest.raises(LoopGuardTripped):
        breaker.before_model()
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED


def test_a_call_refused_before_reset_may_be_retried_with_the_same_id_after_it() -> None:
    breaker = Breaker()
    for n in range(3):
        breaker.before_tool("search", {"q": "x"}, call_id=f"c{n}")
        breaker.after_tool("search", {"q": "x"}, result="same", call_id=f"c{n}")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "x"}, call_id="c3")
    breaker.reset()  # e.g. a person approved the call
    breaker.before_tool("search", {"q": "x"}, call_id="c3")
    assert breaker.state is BreakerState.CLOSED
