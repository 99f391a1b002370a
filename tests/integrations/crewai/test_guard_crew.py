"""guard_crew drives the real CrewAI runtime (Crew.kickoff / kickoff_async / akickoff, Agent.kickoff)
with a scripted fake LLM: a runaway is stopped before a fourth tool body runs and the trip reaches the
caller of kickoff as a LoopGuardTripped; a legitimate run is untouched; budgets are checked pre-flight."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.hooks import HookAborted, InterceptionPoint
from crewai.hooks.dispatch import get_hooks, get_scoped_hooks
from crewai.tools.tool_failure import ToolExecutionFailedError

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, LoopGuardWarning
from loopguard_core.testing import BodyCounter
from loopguard_crewai import CrewAILoopGuardTripped, guard_crew
from loopguard_crewai.testing import ScriptedLLM
from loopguard_pytest import assert_not_tripped, assert_tripped

from .helpers import counted_tool, one_agent_crew

RUNAWAY = ("lookup", {"q": "same"})


def runaway_crew(counter: BodyCounter, *, native: bool = True) -> tuple[object, ScriptedLLM]:
    llm = ScriptedLLM(loop=RUNAWAY, native=native)
    return one_agent_crew([counted_tool(counter)], llm), llm


STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def assert_loop_trip(error: BaseException, *, agent: str = "researcher") -> None:
    assert isinstance(error, CrewAILoopGuardTripped)
    assert isinstance(error, LoopGuardTripped)
    assert isinstance(error, HookAborted)  # the one exception CrewAI lets out of kickoff
    assert error.reason == "loop"
    assert error.tool == "lookup"
    assert error.agent == agent


@pytest.mark.parametrize("native", [True, False], ids=["native-tool-calls", "react-text"])
def test_runaway_kickoff_is_stopped_before_a_fourth_body_run(
    native: bool, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    crew, llm = runaway_crew(loopguard_bodies, native=native)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught, guard_crew(breaker):
        crew.kickoff()

    assert_loop_trip(caught.trip)
    # Native: the body ran three times, the 4th identical call was refused. ReAct: CrewAI short-circuits
    # the 2nd identical call itself ("I tried reusing the same input"), so the body ran once; calls 2-4
    # got that same answer three times and the 5th call was refused.
    assert loopguard_bodies.count() == (3 if native else 1)
    assert llm.calls == (4 if native else 5)  # the model call after the refusal was never made
    assert breaker.state is BreakerState.OPEN
    assert breaker.usage().trip_reason == "loop"


@pytest.mark.parametrize("entry", ["kickoff_async", "akickoff"])
async def test_runaway_async_kickoff_is_stopped(entry: str, breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    crew, llm = runaway_crew(loopguard_bodies)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        async with guard_crew(breaker):
            await getattr(crew, entry)()

    assert_loop_trip(caught.trip)
    assert (loopguard_bodies.count(), llm.calls) == (3, 4)


def solo_agent(counter: BodyCounter) -> object:
    from crewai import Agent

    llm = ScriptedLLM(loop=RUNAWAY)
    return Agent(role="solo", goal="answer", backstory="careful", llm=llm, tools=[counted_tool(counter)])


def test_runaway_agent_kickoff_without_a_crew_is_stopped(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = solo_agent(loopguard_bodies)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught, guard_crew(breaker):
        agent.kickoff("Find what is known about the topic.")

    assert_loop_trip(caught.trip, agent="solo")
    assert loopguard_bodies.count() == 3


async def test_runaway_agent_akickoff_without_a_crew_is_stopped(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent = solo_agent(loopguard_bodies)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        async with guard_crew(breaker):
            await agent.akickoff("Find what is known about the topic.")

    assert_loop_trip(caught.trip, agent="solo")
    assert loopguard_bodies.count() == 3


def test_legitimate_varied_run_completes_untouched_and_usage_is_recorded(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    script = [("lookup", {"q": "alpha"}), ("lookup", {"q": "beta"}), ("lookup", {"q": "gamma"}), "all three found"]
    llm = ScriptedLLM(script=script)
    crew = one_agent_crew([counted_tool(loopguard_bodies, answer=lambda q: f"{q} is fine")], llm)

    with assert_not_tripped(breaker), guard_crew(breaker):
        result = crew.kickoff()

    assert str(result) == "all three found"
    assert [args["q"] for _, args in loopguard_bodies.runs] == ["alpha", "beta", "gamma"]
    usage = breaker.usage()
    assert usage.state is BreakerState.CLOSED
    assert usage.trips == 0
    assert usage.turns == 4
    assert usage.tool_calls == 3
    # Usage comes from the LLM's token summary, including the last call (reconciled when the block ends).
    assert usage.tokens == llm.get_token_usage_summary().total_tokens == 4 * 120


def test_repeats_that_return_new_results_are_progress_not_a_loop() -> None:
    counter = BodyCounter()
    polls = iter(["queued", "running", "running 50%", "done"])
    llm = ScriptedLLM(script=[("lookup", {"q": "job-7"})] * 4 + ["job finished"])
    crew = one_agent_crew([counted_tool(counter, answer=lambda q: next(polls))], llm)

    with guard_crew(Breaker()):
        assert str(crew.kickoff()) == "job finished"
    assert counter.count() == 4


def test_turn_ceiling_refuses_the_model_call_before_it_is_made() -> None:
    counter = BodyCounter()
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), ("lookup", {"q": "c"}), "done"])
    crew = one_agent_crew([counted_tool(counter)], llm)
    breaker = Breaker(max_turns=2)

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(breaker):
        crew.kickoff()

    assert caught.value.reason == "turn_ceiling"
    assert llm.calls == 2  # the third model call was never sent
    assert counter.count() == 2
    assert breaker.usage().turns == 2


def test_token_ceiling_projects_the_requests_own_output_cap() -> None:
    # max_tokens=1000 on the LLM is the request's output cap; the breaker adds it to the projection.
    # Call 1: 0 spent + ~76 estimated + 1000 <= 1150. Call 2: 120 spent + ~87 + 1000 > 1150: refused.
    counter = BodyCounter()
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"], max_tokens=1000)
    crew = one_agent_crew([counted_tool(counter)], llm)
    breaker = Breaker(max_tokens=1150)

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(breaker):
        crew.kickoff()

    assert caught.value.reason == "token_ceiling"
    assert caught.value.facts["spent"] == 120  # the first call's real usage, from the token summary
    assert llm.calls == 1
    assert breaker.usage().tokens == 120


def test_hooks_are_scoped_to_the_block_and_never_global() -> None:
    before = {point: len(get_hooks(point)) for point in InterceptionPoint}
    with warnings.catch_warnings(), guard_crew(Breaker()):
        warnings.simplefilter("ignore", LoopGuardWarning)  # nothing runs inside; that warning has its own test
        assert get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL)
        assert get_scoped_hooks(InterceptionPoint.POST_TOOL_CALL)
        assert get_scoped_hooks(InterceptionPoint.PRE_MODEL_CALL)
        assert {point: len(get_hooks(point)) for point in InterceptionPoint} == before
    assert get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL) == []
    assert get_scoped_hooks(InterceptionPoint.PRE_MODEL_CALL) == []


def test_a_crew_kicked_off_after_the_block_is_not_guarded_by_it() -> None:
    counter = BodyCounter()
    breaker = Breaker()
    crew, _ = runaway_crew(counter)
    with pytest.raises(LoopGuardTripped), guard_crew(breaker):
        crew.kickoff()

    # A second, unrelated crew after the block: no loopguard hook fires, CrewAI's own 5-repeat stop ends it.
    # (Under the "raise" tool failure policy: since crewai 1.15.44 the default "warn" lets the agent answer
    # instead, and the scripted model, which only ever asks for the tool again, has no answer to give.)
    other_counter = BodyCounter()
    other = one_agent_crew([counted_tool(other_counter)], ScriptedLLM(loop=RUNAWAY), tool_failure_policy="raise")
    with pytest.raises(ToolExecutionFailedError, match="same arguments 5 times"):
        other.kickoff()
    assert other_counter.count() == 5
    assert breaker.usage().tool_calls == 3  # the first run's counts, untouched by the second crew


def test_the_outer_scoped_hooks_keep_running_inside_the_block() -> None:
    from crewai.hooks.dispatch import register_scoped, scoped_hooks

    seen: list[str] = []
    counter = BodyCounter()
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), "done"])
    crew = one_agent_crew([counted_tool(counter)], llm)
    with scoped_hooks():
        register_scoped(InterceptionPoint.PRE_TOOL_CALL, lambda ctx: seen.append(ctx.tool_name))
        with guard_crew(Breaker()):
            crew.kickoff()
    assert seen == ["lookup"]


# -- a failed model call, a second kickoff in one block, and a quiet trip ---------------------------------------


def test_a_failed_model_call_gives_its_reservation_back_before_crewai_retries() -> None:
    # The first call is admitted (it reserves ~76 estimated + its 1000-token cap) and then fails like a provider
    # outage; CrewAI retries the task. Were the failed call's reservation still held, the retry would project
    # 1076 in flight + ~1076 > 1500 and be refused (token_ceiling) although nothing was ever spent.
    counter = BodyCounter()
    llm = ScriptedLLM([("lookup", {"q": "a"}), "done"], errors=[RuntimeError("overloaded")], max_tokens=1000)
    crew = one_agent_crew([counted_tool(counter)], llm)
    breaker = Breaker(max_tokens=1500)

    with guard_crew(breaker):
        result = crew.kickoff()

    assert str(result) == "done"
    assert counter.count() == 1
    usage = breaker.usage()
    assert (usage.trips, usage.turns, usage.tokens) == (0, 3, 2 * 120)  # the failed call spent nothing


def test_a_second_kickoff_in_one_block_is_judged_on_its_own_not_stopped_with_the_first_trip() -> None:
    from loopguard_core.testing import FakeClock

    clock = FakeClock()
    breaker = Breaker(clock=clock, recovery_seconds=30)
    first = one_agent_crew([counted_tool(BodyCounter())], ScriptedLLM(loop=RUNAWAY), role="first")
    counter = BodyCounter()
    second = one_agent_crew([counted_tool(counter, "other")], ScriptedLLM([("other", {"q": "x"})]), role="second")
    again = one_agent_crew([counted_tool(counter, "other")], ScriptedLLM([("other", {"q": "y"}), "done"]), role="third")

    with guard_crew(breaker):
        with pytest.raises(LoopGuardTripped) as first_trip:
            first.kickoff()
        # Still open after the first crew's loop: the second crew is refused, and the trip names the second crew.
        with pytest.raises(LoopGuardTripped) as second_trip:
            second.kickoff()
        clock.advance(31)  # past the recovery window: the next crew runs on its own merits
        result = again.kickoff()

    assert (first_trip.value.reason, first_trip.value.agent) == ("loop", "first")
    assert (second_trip.value.reason, second_trip.value.agent) == ("open", "second")
    assert second_trip.value is not first_trip.value
    assert str(result) == "done"
    assert counter.runs == [("other", {"q": "y"})]


def test_a_trip_is_quiet_in_crewai_output_and_still_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    counter = BodyCounter()
    crew, _ = runaway_crew(counter)

    with caplog.at_level("WARNING"), pytest.raises(LoopGuardTripped) as caught, guard_crew(Breaker()):
        crew.kickoff()

    assert caught.value.reason == "loop"
    # CrewAI's Flow runtime logs "Error executing listener <name>: <error>" for an error it has not logged yet;
    # the trip carries CrewAI's own "already logged" mark, because loopguard logged it, once, on its own logger.
    assert not [r for r in caplog.records if r.name.startswith("crewai") and "loopguard" in r.getMessage()]
    assert [r for r in caplog.records if r.name == "loopguard" and "[loop/repeat]" in r.getMessage()]


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_messages_are_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so no history is read for one."""
    sent = preflight_estimates
    counter = BodyCounter()
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"])
    breaker = Breaker(**settings)
    with guard_crew(breaker):
        one_agent_crew([counted_tool(counter)], llm).kickoff()
    assert counter.count() == 2 and len(sent) == 3
    assert all(n > 0 for n in sent) if estimated else sent == [0, 0, 0]
