"""guarded_tool guards one CrewAI tool's body, and a trip in it still stops the whole kickoff (through the
HookAborted channel at the next model call), on the native and the ReAct path, with and without
guard_crew, for @tool objects, BaseTool instances and subclasses."""

from __future__ import annotations

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.tools import BaseTool, tool

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_crewai import CrewAILoopGuardTripped, guard_crew, guarded_tool
from loopguard_crewai.testing import ScriptedLLM
from loopguard_pytest import assert_tripped

from .helpers import counted_tool, one_agent_crew

RUNAWAY = ("lookup", {"q": "same"})


STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def test_standalone_runaway_native_stops_the_kickoff_and_defeats_the_cache(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    lookup = guarded_tool(breaker)(counted_tool(loopguard_bodies))
    llm = ScriptedLLM(loop=RUNAWAY)
    crew = one_agent_crew([lookup], llm)
    assert crew.agents[0].cache is True  # CrewAI's default would serve repeats from its cache

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        crew.kickoff()  # no guard_crew: the trip travels through loopguard's relay hook

    assert isinstance(caught.trip, CrewAILoopGuardTripped)
    assert loopguard_bodies.count() == 3  # the guarded copy never caches, so the guard saw each repeat
    assert llm.calls == 4  # the model call after the refused tool call was never made
    assert breaker.state is BreakerState.OPEN


async def test_standalone_runaway_akickoff_stops_the_kickoff(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    lookup = guarded_tool(breaker)(counted_tool(loopguard_bodies))
    llm = ScriptedLLM(loop=RUNAWAY)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await one_agent_crew([lookup], llm).akickoff()

    assert (loopguard_bodies.count(), llm.calls) == (3, 4)


def test_standalone_react_path_stops_the_kickoff(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    # ReAct short-circuits an identical *consecutive* call before the body, so alternate two lookups.
    lookup = guarded_tool(breaker)(counted_tool(loopguard_bodies))
    llm = ScriptedLLM(native=False, script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"})] * 5)

    with assert_tripped(reason="loop", tool="lookup", max_body_runs=7, bodies=loopguard_bodies) as caught:
        one_agent_crew([lookup], llm).kickoff()

    # The (a, b) block went round three times and a started a fourth pass; the call completing it was refused.
    assert [args["q"] for _, args in loopguard_bodies.runs] == ["a", "b", "a", "b", "a", "b", "a"]
    assert caught.trip.facts["rule"] == "cycle"
    assert llm.calls == 8


def test_react_reinvoking_a_failing_tool_is_counted_and_stopped_without_more_retries() -> None:
    # CrewAI's ReAct path re-invokes a raising tool several times per model call; each attempt goes
    # through the guard, and the refusal does not raise, so CrewAI stops re-invoking at once.
    attempts: list[str] = []
    breaker = Breaker()

    @guarded_tool(breaker)
    @tool("flaky")
    def flaky(q: str) -> str:
        """A backend that is down."""
        attempts.append(q)
        raise ConnectionError("backend down")

    llm = ScriptedLLM(native=False, loop=("flaky", {"q": "x"}))
    with pytest.raises(LoopGuardTripped) as caught:
        one_agent_crew([flaky], llm).kickoff()

    assert caught.value.reason == "loop"  # the same failure three times in a row, then refused
    assert attempts == ["x", "x", "x"]  # unguarded, CrewAI would re-invoke it six times for this one model call
    assert llm.calls == 1
    assert breaker.usage().tool_calls == 3


def test_native_failing_tool_trips_on_the_failure_streak() -> None:
    attempts: list[str] = []

    @guarded_tool(Breaker(max_consecutive_failures=3, loop_detection=False))
    @tool("flaky")
    def flaky(q: str) -> str:
        """A backend that is down."""
        attempts.append(q)
        raise ConnectionError(f"backend down for {q}")

    llm = ScriptedLLM(script=[("flaky", {"q": str(n)}) for n in range(10)])
    with pytest.raises(LoopGuardTripped) as caught:
        one_agent_crew([flaky], llm).kickoff()

    assert caught.value.reason == "failures"
    assert attempts == ["0", "1", "2"]


def test_inside_guard_crew_on_the_same_breaker_calls_are_counted_once() -> None:
    counter = BodyCounter()
    breaker = Breaker()
    lookup = guarded_tool(breaker)(counted_tool(counter))
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"])

    with guard_crew(breaker):
        assert str(one_agent_crew([lookup], llm).kickoff()) == "done"

    assert counter.count() == 2
    assert breaker.usage().tool_calls == 2


def test_inside_guard_crew_a_per_tool_breaker_trip_stops_the_run() -> None:
    counter = BodyCounter()
    crew_breaker = Breaker()
    tool_breaker = Breaker(max_tool_calls=1)  # this tool may run once per run
    lookup = guarded_tool(tool_breaker)(counted_tool(counter))
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"])

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(crew_breaker):
        one_agent_crew([lookup], llm).kickoff()

    assert caught.value.reason == "tool_ceiling"
    assert caught.value.agent == "researcher"  # the guard's hook tells the tool who is calling
    assert counter.count() == 1
    assert llm.calls == 2
    assert crew_breaker.usage().tool_calls == 2  # the crew's breaker admitted it; the tool's refused it


def test_called_directly_outside_crewai_it_raises() -> None:
    counter = BodyCounter()
    lookup = guarded_tool(Breaker())(counted_tool(counter))
    for _ in range(3):
        assert lookup.run(q="same") == "no news about same"
    with pytest.raises(CrewAILoopGuardTripped) as caught:
        lookup.run(q="same")
    assert caught.value.reason == "loop"
    assert counter.count() == 3


class Weather(BaseTool):
    name: str = "weather"
    description: str = "The weather in a city."
    calls: int = 0

    def _run(self, city: str) -> str:
        self.calls += 1
        return f"sunny in {city}"


@pytest.mark.parametrize("shape", ["subclass", "instance"])
def test_basetool_subclass_and_instance_are_guarded(shape: str) -> None:
    breaker = Breaker()
    if shape == "subclass":
        weather = guarded_tool(breaker)(Weather)()
    else:
        original = Weather()
        weather = guarded_tool(breaker)(original)
        assert original.cache_function is not weather.cache_function  # the original is untouched
    assert isinstance(weather, Weather)
    llm = ScriptedLLM(loop=("weather", {"city": "Oslo"}))

    with pytest.raises(LoopGuardTripped) as caught:
        one_agent_crew([weather], llm).kickoff()

    assert caught.value.tool == "weather"
    assert weather.calls == 3


def test_forgetting_the_breaker_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"@guarded_tool\(breaker\)"):
        guarded_tool(counted_tool(BodyCounter()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates a CrewAI tool"):
        guarded_tool(Breaker())(42)
