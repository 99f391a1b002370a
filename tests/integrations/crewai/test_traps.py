"""Where CrewAI (or a setting) would swallow a trip, loopguard still raises it or says loudly what to change."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.hooks import register_before_tool_call_hook, unregister_before_tool_call_hook
from crewai.tools import tool
from crewai.tools.tool_failure import ToolExecutionFailedError

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning, MissingExtra
from loopguard_core.testing import BodyCounter
from loopguard_crewai import CrewAILoopGuardTripped, guard_crew, guarded_tool
from loopguard_crewai.testing import ScriptedLLM

from .helpers import counted_tool, one_agent_crew

RUNAWAY = ("lookup", {"q": "same"})


@pytest.mark.parametrize("policy", [None, "warn", "ignore", "raise"])
def test_a_trip_is_raised_whatever_crewai_does_about_the_repeats(policy: str | None) -> None:
    # One model turn asks for ten identical calls: three run, the rest are blocked. CrewAI's own repeated-call
    # stop then fires on the fifth blocked one, before any model call could carry the trip. What it does there
    # is the tool failure policy's ("raise" raises ToolExecutionFailedError; since crewai 1.15.44 the others let
    # the agent answer; before, every policy raised); the trip reaches the caller in each case.
    # (max_usage_count makes CrewAI run them one by one; in parallel, in-flight calls have no outcome yet.)
    counter = BodyCounter()
    lookup = counted_tool(counter)
    lookup.max_usage_count = 100
    llm = ScriptedLLM(script=[[RUNAWAY] * 10])
    settings = {} if policy is None else {"tool_failure_policy": policy}

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(Breaker()):
        one_agent_crew([lookup], llm, **settings).kickoff()

    assert isinstance(caught.value, CrewAILoopGuardTripped)
    assert caught.value.reason == "loop"
    if policy == "raise":  # CrewAI's own error came first: it is kept as the trip's cause
        assert isinstance(caught.value.__cause__, ToolExecutionFailedError)
    assert counter.count() == 3
    assert llm.calls == 1


def test_a_trip_on_a_result_as_answer_tool_is_raised_when_the_block_ends() -> None:
    # result_as_answer ends the task with the tool's result: no model call follows the refused call.
    counter = BodyCounter()
    breaker = Breaker(max_tool_calls=1)

    @tool("final_lookup", result_as_answer=True)
    def final_lookup(q: str) -> str:
        """Look up and answer."""
        counter.hit("final_lookup", {"q": q})
        return "the answer"

    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("final_lookup", {"q": "x"}), "done"])
    with pytest.raises(LoopGuardTripped) as caught, guard_crew(breaker):
        one_agent_crew([counted_tool(counter), final_lookup], llm).kickoff()

    assert caught.value.reason == "tool_ceiling"
    assert counter.runs == [("lookup", {"q": "a"})]  # final_lookup's body never ran
    assert llm.calls == 2


def test_guarding_a_result_as_answer_tool_warns() -> None:
    @tool("final_lookup", result_as_answer=True)
    def final_lookup(q: str) -> str:
        """Look up and answer."""
        return q

    with pytest.warns(LoopGuardWarning, match="result_as_answer=True"):
        guarded_tool(Breaker())(final_lookup)


def test_loopguard_hooks_left_as_global_hooks_are_reported() -> None:
    stale = guard_crew(Breaker())
    register_before_tool_call_hook(stale._before_tool_call)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with guard_crew(Breaker()):
                pass
        assert any("registered as CrewAI *global* hooks" in str(w.message) for w in seen)
    finally:
        unregister_before_tool_call_hook(stale._before_tool_call)


def test_a_block_that_saw_no_call_warns_that_kickoff_ran_elsewhere() -> None:
    with pytest.warns(LoopGuardWarning, match="saw no model or tool call"), guard_crew(Breaker()):
        pass


def test_a_kickoff_on_a_thread_that_does_not_copy_the_context_is_reported() -> None:
    import threading

    counter = BodyCounter()
    crew = one_agent_crew([counted_tool(counter)], ScriptedLLM(script=[("lookup", {"q": "a"}), "done"]))
    worker = threading.Thread(target=crew.kickoff)  # a plain thread starts with an empty context

    def kickoff_elsewhere() -> None:
        with guard_crew(Breaker()):
            worker.start()
            worker.join()

    with pytest.warns(LoopGuardWarning, match="saw no model or tool call"):
        kickoff_elsewhere()
    assert counter.count() == 1


def test_nested_blocks_on_one_breaker_count_each_call_once() -> None:
    counter = BodyCounter()
    breaker = Breaker()
    llm = ScriptedLLM(script=[("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"])
    with guard_crew(breaker), guard_crew(breaker):
        one_agent_crew([counted_tool(counter)], llm).kickoff()
    assert breaker.usage().tool_calls == 2
    assert breaker.usage().turns == 3


def test_a_removed_relay_hook_is_reported_and_the_body_stays_protected() -> None:
    from crewai.hooks import unregister_before_llm_call_hook

    from loopguard_crewai import _relay

    counter = BodyCounter()
    lookup = guarded_tool(Breaker())(counted_tool(counter))
    unregister_before_llm_call_hook(_relay.relay_hook)  # e.g. a test suite's clear_all_global_hooks()
    try:
        crew = one_agent_crew([lookup], ScriptedLLM(loop=RUNAWAY))
        with (
            pytest.warns(LoopGuardWarning, match="relay hook had been removed"),
            # What ends the run is CrewAI's: its own 5-repeat stop, or (crewai 1.15.44 and later) the agent's
            # final model call, where CrewAI's provider-level dispatch finds the relay hook put back just now.
            pytest.raises((ToolExecutionFailedError, LoopGuardTripped)),
        ):
            crew.kickoff()
    finally:
        _relay.install()
    assert counter.count() == 3


def test_importing_without_crewai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "loopguard_crewai" or name.startswith("loopguard_crewai.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "crewai", None)  # what an interpreter without CrewAI sees
    with pytest.raises(MissingExtra, match=r"loopguard-core\[crewai\]"):
        importlib.import_module("loopguard_crewai")


def test_a_worker_crewai_abandons_on_timeout_runs_nothing_more_after_the_block() -> None:
    # On max_execution_time CrewAI (1.15.44 and later) raises TimeoutError to the caller and abandons its worker,
    # which keeps the block's hooks in its copy of the context. Once the block has ended they let nothing run.
    import time

    started: list[float] = []

    @tool("lookup")
    def lookup(q: str) -> str:
        """Look something up."""
        started.append(time.monotonic())
        time.sleep(0.4)
        words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
        return f"news about {words[len(started) % 8]}"  # a new answer each time: no loop for the guard to find

    crew = one_agent_crew([lookup], ScriptedLLM(loop=RUNAWAY), max_execution_time=1, max_retry_limit=0)
    with pytest.raises((TimeoutError, LoopGuardTripped)), guard_crew(Breaker()):
        crew.kickoff()
    ended = time.monotonic()
    time.sleep(1.5)  # the abandoned worker's next turns, were they allowed
    assert started and all(at < ended for at in started)


@pytest.mark.parametrize("policy", [None, "warn", "ignore", "raise"])
def test_a_stand_alone_guarded_tool_trip_outlasts_crewais_repeated_call_stop(policy: str | None) -> None:
    # No guard_crew block: the trip travels through the relay to the next model call. One model turn asks for ten
    # identical calls; the refusals of #4-#10 each read differently, so CrewAI's stop on five identical results in a
    # row (which, under "raise", would end the run with its own error before any model call) never fires on them.
    counter = BodyCounter()
    lookup = counted_tool(counter)
    lookup.max_usage_count = 100  # one by one
    llm = ScriptedLLM(script=[[RUNAWAY] * 10, "done"])
    settings = {} if policy is None else {"tool_failure_policy": policy}
    crew = one_agent_crew([guarded_tool(Breaker())(lookup)], llm, **settings)

    with pytest.raises(LoopGuardTripped) as caught:
        crew.kickoff()
    assert caught.value.reason == "loop"
    assert counter.count() == 3


def test_a_planning_agents_stand_alone_guarded_tool_trip_reaches_the_caller() -> None:
    # A one-step plan whose step asks for ten identical calls: no model call may follow the step (CrewAI skips the
    # summary call), so without a refusal that reads differently each time CrewAI's repeated-call stop ended the
    # step and kickoff returned the refusals as its answer (crewai 1.15.44).
    import json

    from crewai.agent.planning_config import PlanningConfig

    plan = json.dumps({"plan": "look it up", "steps": [{"step_number": 1, "description": "look it up"}], "ready": True})
    counter = BodyCounter()
    lookup = counted_tool(counter)
    lookup.max_usage_count = 100
    llm = ScriptedLLM(script=[plan, [RUNAWAY] * 10, "answer", "answer", "answer"])
    crew = one_agent_crew(
        [guarded_tool(Breaker())(lookup)], llm, planning_config=PlanningConfig(reasoning_effort="low")
    )
    with pytest.raises(LoopGuardTripped) as caught:
        crew.kickoff()
    assert caught.value.reason == "loop"
    assert counter.count() == 3
