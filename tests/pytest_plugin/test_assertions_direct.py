"""assert_tripped / assert_not_tripped called directly, on breakers driven by ``loopguard_core.testing.drive``:
every form, every subject, and the message of every way they fail."""

from __future__ import annotations

import asyncio
import builtins

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter, DriveResult, ScriptedCall, ScriptExhausted, drive
from loopguard_pytest import NotTripped, TripExpected, TripLog, assert_not_tripped, assert_tripped, watch

SAME = ScriptedCall("search", {"q": "refund policy"}, result="nothing new")
PAGES = [ScriptedCall("fetch_page", {"page": n}, result=f"page {n}") for n in range(1, 6)]


def looping(breaker: Breaker, bodies: BodyCounter | None = None, times: int = 6) -> DriveResult:
    """Drive the same call ``times`` times; ``bodies`` counts the ones that ran."""
    result = drive(breaker, [SAME] * times)
    for call in result.executed_calls:
        if bodies is not None:
            bodies.hit(call.tool)
    return result


def raise_the_trip(breaker: Breaker, bodies: BodyCounter | None = None) -> None:
    result = looping(breaker, bodies)
    assert result.trip is not None
    raise result.trip


# -- assert_tripped as a context manager ---------------------------------------------------------------------


def test_the_context_manager_catches_a_matching_trip_and_keeps_it() -> None:
    bodies = BodyCounter()
    with assert_tripped(reason="loop", tool="search", max_body_runs=3, bodies=bodies) as caught:
        raise_the_trip(Breaker(), bodies)
    assert isinstance(caught, TripExpected)
    assert caught.trip.reason == "loop" and caught.trip.tool == "search"


def test_trip_is_only_there_once_the_block_has_ended() -> None:
    expectation = assert_tripped(reason="loop")
    with pytest.raises(AttributeError, match=r"no trip yet"):
        _ = expectation.trip


def test_a_block_that_ends_quietly_fails_saying_nothing_was_refused() -> None:
    bodies = BodyCounter()
    with pytest.raises(AssertionError) as failure, assert_tripped(reason="loop", tool="search", bodies=bodies):
        bodies.hit("search")
    assert str(failure.value) == (
        "expected loopguard to stop the run (reason='loop', tool='search'), but the block finished without raising: "
        "nothing was refused\nthe 'search' body ran once"
    )


def test_a_trip_caught_inside_the_block_is_reported_as_swallowed() -> None:
    breaker = Breaker()
    watch(breaker)
    with pytest.raises(AssertionError) as failure, assert_tripped(reason="loop"):
        looping(breaker)  # drive() catches the trip: it never leaves the block
    message = str(failure.value)
    assert "but the block finished without raising" in message
    assert "loopguard did refuse 1 call inside the block, but the trip never reached the caller" in message
    assert "  1. loopguard refused the call [loop/repeat]" in message


def test_a_mismatch_names_each_difference_then_the_trip() -> None:
    bodies = BodyCounter()
    with (
        pytest.raises(AssertionError) as failure,
        assert_tripped(reason="turn_ceiling", tool="lookup", max_body_runs=2, bodies=bodies),
    ):
        raise_the_trip(Breaker(), bodies)
    lines = str(failure.value).splitlines()
    assert lines[0] == "loopguard stopped the run, but not as expected:"
    assert lines[1] == "  reason: expected 'turn_ceiling', got 'loop'"
    assert lines[2] == "  tool: expected 'lookup', got 'search'"
    assert lines[3].startswith("  the trip: loopguard refused the call [loop/repeat]")
    assert failure.value.__suppress_context__  # the trip's own traceback is not repeated under the message


def test_body_runs_count_every_tool_when_no_tool_is_named() -> None:
    bodies = BodyCounter()
    bodies.hit("other")
    expectation = assert_tripped(max_body_runs=3, bodies=bodies)
    with pytest.raises(AssertionError, match=r"tool bodies ran 4 times, more than max_body_runs=3"), expectation:
        raise_the_trip(Breaker(), bodies)


def test_another_exception_fails_naming_it_and_keeps_it_as_the_cause() -> None:
    error = ValueError("bad input")
    with pytest.raises(AssertionError) as failure, assert_tripped(reason="loop"):
        raise error
    assert str(failure.value) == (
        "expected loopguard to stop the run (reason='loop'), but the block raised ValueError: bad input"
    )
    assert failure.value.__cause__ is error


def test_a_trip_inside_an_exception_group_is_not_a_trip_that_reached_the_caller() -> None:
    group = getattr(builtins, "ExceptionGroup", None)
    if group is None:
        pytest.skip("ExceptionGroup is Python 3.11+")
    trip = looping(Breaker()).trip
    assert trip is not None
    with pytest.raises(AssertionError) as failure, assert_tripped(reason="loop"):
        raise group("task group", [trip])
    assert "It carries a LoopGuardTripped that was converted on its way to the caller" in str(failure.value)


def test_a_used_up_script_says_nothing_stopped_the_agent() -> None:
    with pytest.raises(AssertionError) as failure, assert_tripped():
        raise ScriptExhausted("ScriptedThing has no answer for model call 31", owner="ScriptedThing", call=31)
    assert "(any reason), but the block raised ScriptExhausted: ScriptedThing has no answer" in str(failure.value)
    assert "The scripted model ran out of answers, so nothing stopped the agent" in str(failure.value)


def test_keyboard_interrupt_and_pytest_outcomes_pass_through_untouched() -> None:
    with pytest.raises(KeyboardInterrupt), assert_tripped():
        raise KeyboardInterrupt
    with pytest.raises(pytest.skip.Exception), assert_tripped():
        pytest.skip("not today")


def test_async_with_works_too() -> None:
    async def run() -> LoopGuardTripped:
        async with assert_tripped(reason="loop") as caught:
            raise_the_trip(Breaker())
        return caught.trip

    assert asyncio.run(run()).reason == "loop"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_body_runs": 3}, r"max_body_runs needs bodies=<the BodyCounter your tool bodies hit>"),
        ({"max_body_runs": -1, "bodies": BodyCounter()}, r"max_body_runs must be a non-negative int"),
        ({"max_body_runs": True, "bodies": BodyCounter()}, r"max_body_runs must be a non-negative int"),
        ({"bodies": [1, 2]}, r"bodies must be a loopguard_core.testing.BodyCounter"),
        ({"reason": ""}, r"reason must be a non-empty str"),
        ({"tool": 3}, r"tool must be a non-empty str"),
    ],
)
def test_wrong_arguments_are_refused_at_once(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        assert_tripped(**kwargs)  # type: ignore[call-overload]


# -- assert_tripped on a result ------------------------------------------------------------------------------


def test_on_a_drive_result_body_runs_are_the_calls_that_ran() -> None:
    result = looping(Breaker())
    trip = assert_tripped(result, reason="loop", tool="search", max_body_runs=3)
    assert trip is result.trip
    with pytest.raises(AssertionError, match=r"the 'search' body ran 3 times, more than max_body_runs=2"):
        assert_tripped(result, tool="search", max_body_runs=2)


def test_on_a_drive_result_that_never_tripped_it_says_all_ran() -> None:
    with pytest.raises(
        AssertionError, match=r"^expected loopguard to refuse one of the driven calls \(reason='loop'\), but all 5 ran$"
    ):
        assert_tripped(drive(Breaker(), PAGES), reason="loop")


def test_on_a_trip_or_an_exception_info() -> None:
    breaker = Breaker()
    with pytest.raises(LoopGuardTripped) as info:
        raise_the_trip(breaker)
    assert assert_tripped(info, reason="loop") is info.value
    assert assert_tripped(info.value, tool="search") is info.value
    with pytest.raises(AssertionError, match=r"reason: expected 'stall', got 'loop'"):
        assert_tripped(info.value, reason="stall")
    with pytest.raises(ValueError, match="x") as other:
        raise ValueError("x")
    with pytest.raises(AssertionError, match=r"expected a LoopGuardTripped \(reason='loop'\), got ValueError: x"):
        assert_tripped(other, reason="loop")


def test_on_a_watched_breaker_one_of_its_trips_must_match() -> None:
    breaker = Breaker(max_calls_per_tool={"fetch_page": 2})
    log = watch(breaker)
    with pytest.raises(AssertionError, match=r"expected the breaker to have tripped \(reason='loop'\), but it never"):
        assert_tripped(breaker, reason="loop")
    drive(breaker, PAGES, stop_on_trip=False)
    assert [trip.reason for trip in log.trips] == ["tool_ceiling", "open", "open"]  # the run stays stopped
    assert assert_tripped(breaker, reason="tool_ceiling", tool="fetch_page").reason == "tool_ceiling"
    with pytest.raises(AssertionError) as failure:
        assert_tripped(breaker, reason="loop")
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected the breaker to have tripped (reason='loop'), but none of its 3 trips matches:"
    assert lines[1].startswith("  1. loopguard refused the call [tool_ceiling]: tool 'fetch_page' call 3")
    assert lines[2].startswith("  2. loopguard refused the call [open]")


def test_on_a_watched_breaker_with_one_trip_the_mismatch_is_spelled_out() -> None:
    breaker = Breaker()
    watch(breaker)
    looping(breaker)
    with pytest.raises(AssertionError, match=r"reason: expected 'stall', got 'loop'"):
        assert_tripped(breaker, reason="stall")


def test_on_an_unwatched_breaker_it_says_how_to_watch_it() -> None:
    with pytest.raises(TypeError, match=r"use the `breaker` fixture, or call loopguard_pytest.watch\(breaker\)"):
        assert_tripped(Breaker(), reason="loop")


def test_on_anything_else_it_says_what_it_takes() -> None:
    with pytest.raises(TypeError, match=r"checks a LoopGuardTripped, an ExceptionInfo, a drive\(\) result"):
        assert_tripped("loop")  # type: ignore[call-overload]


# -- assert_not_tripped --------------------------------------------------------------------------------------


def test_a_run_that_refuses_nothing_passes_both_ways() -> None:
    breaker = Breaker()
    watch(breaker)
    with assert_not_tripped(breaker) as expectation:
        drive(breaker, PAGES)
    assert isinstance(expectation, NotTripped)
    assert_not_tripped(breaker)
    assert_not_tripped(drive(Breaker(), PAGES))


def test_a_refusal_that_never_reached_the_caller_fails_listing_it() -> None:
    breaker = Breaker()
    watch(breaker)
    looping(breaker)
    with pytest.raises(AssertionError) as failure:
        assert_not_tripped(breaker)
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected the run to go untouched by loopguard, but it refused 1 call:"
    assert lines[1].startswith("  1. loopguard refused the call [loop/repeat]")


def test_a_trip_leaving_the_block_fails_with_its_message_not_its_traceback() -> None:
    breaker = Breaker()
    with pytest.raises(AssertionError) as failure, assert_not_tripped(breaker):  # watched from the block's start
        raise_the_trip(breaker)
    assert str(failure.value).startswith(
        "expected the run to go untouched by loopguard, but this trip reached the caller: loopguard refused the call"
    )
    assert failure.value.__suppress_context__


def test_refusals_next_to_another_error_keep_that_error_as_the_cause() -> None:
    breaker = Breaker()
    error = RuntimeError("the framework wrapped it")

    def run() -> None:
        looping(breaker)
        raise error

    with pytest.raises(AssertionError, match=r"but it refused 1 call") as failure, assert_not_tripped(breaker):
        run()
    assert failure.value.__cause__ is error


def test_other_errors_pass_through_when_nothing_was_refused() -> None:
    with pytest.raises(ZeroDivisionError), assert_not_tripped(Breaker()):
        _ = 1 / 0


def test_an_unwatched_breaker_that_already_tripped_fails_from_its_counters() -> None:
    breaker = Breaker()
    looping(breaker)
    with pytest.raises(AssertionError, match=r"its current run tripped once \(last reason 'loop'\)"):
        assert_not_tripped(breaker)


def test_without_a_breaker_the_block_alone_is_checked() -> None:
    looping(watch_new())  # before the block: not its business
    with assert_not_tripped():
        drive(watch_new(), PAGES)
    watched = watch_new()
    with pytest.raises(AssertionError, match=r"but it refused 1 call"), assert_not_tripped():
        looping(watched)
    with pytest.raises(AssertionError, match=r"but this trip reached the caller"), assert_not_tripped():
        raise_the_trip(Breaker())


def watch_new() -> Breaker:
    breaker = Breaker()
    watch(breaker)
    return breaker


def test_observed_would_be_refusals_fail_only_with_observed_true() -> None:
    breaker = Breaker(mode="observe")
    log = watch(breaker)
    with assert_not_tripped(breaker):
        assert looping(breaker).executed == 6
    assert len(log.observed) == 3 and not log.trips
    with pytest.raises(AssertionError) as failure:
        assert_not_tripped(breaker, observed=True)
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected the run to go untouched by loopguard, observe mode included"
    assert lines[1] == "observe mode would have refused 3 calls:"
    assert "mode is 'observe', so it was made" in lines[2]


def test_assert_not_tripped_refuses_what_it_cannot_check() -> None:
    with pytest.raises(TypeError, match=r"takes a Breaker, a drive\(\) result or nothing, not str"):
        assert_not_tripped("breaker")  # type: ignore[arg-type]


# -- watch -----------------------------------------------------------------------------------------------------


def test_watching_twice_gives_the_same_log_and_listens_once() -> None:
    breaker = Breaker()
    log = watch(breaker)
    assert watch(breaker) is log and isinstance(log, TripLog)
    looping(breaker)
    assert [trip.reason for trip in log.trips] == ["loop"]
    assert repr(log) == "TripLog(trips=['loop'], observed=[])"
    with pytest.raises(TypeError, match=r"watch\(\) takes a loopguard_core.Breaker, got str"):
        watch("breaker")  # type: ignore[arg-type]
