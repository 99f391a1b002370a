"""on_trip="steer" through the real CrewAI runtime: guard_crew (a crew's scoped hooks) and guarded_tool.

Each path proves: the refused call's body never ran, the model's next request carried the refusal (the tool
message the scripted LLM was sent), the crew went on to a normal end once the model changed course, and a model
that keeps repeating is stopped for good (reason "refusals") at the caller of kickoff; a budget ceiling still
stops.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.hooks import HookAborted

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_crewai import CrewAILoopGuardTripped, guard_crew, guarded_tool
from loopguard_crewai.testing import ScriptedLLM

from ..ordering import SiblingOrder
from .helpers import counted_tool, one_agent_crew

SAME = ("lookup", {"q": "same"})
CHANGES_COURSE = [SAME, SAME, SAME, SAME, ("lookup", {"q": "other"}), "done"]
REFUSED = "loopguard refused this call and it did not run"


def kickoff(path: str, llm: ScriptedLLM, breaker: Breaker, counter: BodyCounter) -> Any:
    if path == "crew":
        crew = one_agent_crew([counted_tool(counter)], llm)
        with guard_crew(breaker, on_trip="steer"):
            return crew.kickoff()
    # the tool decorator alone, no guard_crew block
    return one_agent_crew([guarded_tool(breaker, on_trip="steer")(counted_tool(counter))], llm).kickoff()


def tool_messages(llm: ScriptedLLM, call: int) -> list[str]:
    """The tool results in the LLM's ``call``-th request (1-based), oldest first."""
    return [str(m.get("content")) for m in llm.seen[call - 1] if m.get("role") == "tool"]


@pytest.mark.parametrize("path", ["crew", "tool_decorator"])
def test_steer_tells_the_model_why_and_the_crew_goes_on_then_stops_for_good(path: str) -> None:
    breaker, counter = Breaker(), BodyCounter()
    llm = ScriptedLLM(CHANGES_COURSE)

    result = kickoff(path, llm, breaker, counter)

    assert str(result) == "done"
    assert counter.runs == [SAME, SAME, SAME, ("lookup", {"q": "other"})]  # the 4th identical call never ran
    assert tool_messages(llm, 5)[-1].startswith(REFUSED)  # what the model read for the refused call
    assert "Repeating it will not bring a different answer" in tool_messages(llm, 5)[-1]
    assert breaker.usage().refusals == 1
    assert breaker.state is BreakerState.CLOSED

    breaker, counter = Breaker(max_refusals=2), BodyCounter()
    llm = ScriptedLLM(loop=SAME)
    with pytest.raises(LoopGuardTripped) as stop:
        kickoff(path, llm, breaker, counter)
    assert (stop.value.reason, stop.value.terminal) == ("refusals", True)
    assert isinstance(stop.value, CrewAILoopGuardTripped) and isinstance(stop.value, HookAborted)  # as in raise mode
    assert counter.count() == 3
    # Calls 4 and 5 were answered with refusals; call 6 asked again and the model call after it was never made.
    assert llm.calls == 6
    assert tool_messages(llm, 6)[-1].startswith(REFUSED)


async def test_steer_in_an_async_crew() -> None:
    breaker, counter = Breaker(), BodyCounter()
    llm = ScriptedLLM(CHANGES_COURSE)
    crew = one_agent_crew([counted_tool(counter)], llm)
    async with guard_crew(breaker, on_trip="steer"):
        result = await crew.akickoff()
    assert str(result) == "done"
    assert counter.count() == 4
    assert tool_messages(llm, 5)[-1].startswith(REFUSED)


@pytest.mark.parametrize("path", ["crew", "tool_decorator"])
def test_a_budget_ceiling_still_stops_in_steer_mode(path: str) -> None:
    breaker, counter = Breaker(max_tool_calls=3), BodyCounter()
    llm = ScriptedLLM([("lookup", {"q": q}) for q in "abcd"] + ["done"])

    with pytest.raises(LoopGuardTripped) as caught:
        kickoff(path, llm, breaker, counter)

    assert caught.value.reason == "tool_ceiling" and caught.value.terminal
    assert counter.count() == 3
    assert llm.calls == 4  # the model call after the ceiling was never made
    assert breaker.usage().refusals == 0


def test_on_trip_is_checked() -> None:
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        guard_crew(Breaker(), on_trip="end")
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        guarded_tool(Breaker(), on_trip="end")


def test_in_a_parallel_turn_only_the_refused_call_is_answered_for_the_model() -> None:
    page = ("lookup", {"q": "fresh"})
    for _ in range(3):
        breaker, counter = Breaker(), BodyCounter()
        llm = ScriptedLLM([SAME, SAME, SAME, [SAME, page], "done"])

        result = kickoff("crew", llm, breaker, counter)

        assert str(result) == "done"
        assert counter.runs[3:] == [page], counter.runs  # the sibling ran; the refused call did not
        told = tool_messages(llm, 5)
        assert any(text.startswith(REFUSED) for text in told)
        assert any(text == "no news about fresh" for text in told)
        assert breaker.usage().refusals == 1


def _ordered(*, fresh_first: bool) -> SiblingOrder:
    """CrewAI's thread pool runs the siblings. (Raise mode: nothing else holds a lock around the check.)"""
    return SiblingOrder(
        sibling_first=fresh_first,
        is_repeat=lambda tool, args: args == SAME[1],
        is_sibling=lambda tool, args: args == {"q": "fresh"},
    )


@pytest.mark.parametrize("fresh_first", [True, False], ids=["fresh-reports-first", "fresh-reports-last"])
def test_a_parallel_siblings_verdict_does_not_depend_on_which_finishes_first(fresh_first: bool) -> None:
    # The hook names the answer (its tool call ids) as the batch, so the 4th identical lookup is refused whether
    # its fresh sibling of the same answer reported before it was checked or after.
    fresh = ("lookup", {"q": "fresh"})
    for _ in range(2):  # the order is forced: a repeat only shows it holds
        breaker, counter = _ordered(fresh_first=fresh_first), BodyCounter()
        llm = ScriptedLLM([SAME, SAME, SAME, [SAME, fresh], "done"])

        with pytest.raises(CrewAILoopGuardTripped) as caught, guard_crew(breaker):
            one_agent_crew([counted_tool(counter)], llm).kickoff()

        assert caught.value.reason == "loop"
        assert counter.runs[:3] == [SAME, SAME, SAME] and SAME not in counter.runs[3:]
        if fresh_first:
            assert breaker.waits == [True]  # the order asked for really happened
            assert counter.runs[3:] == [fresh]
        else:  # once the trip is held, a sibling not yet checked is blocked: the fresh one may never report
            assert breaker.waits in ([], [True])
