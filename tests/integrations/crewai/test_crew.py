"""One breaker across the agents of a real CrewAI crew: counts, loops and the ledger span agents, and each
call is attributed to the agent (its role) that made it."""

from __future__ import annotations

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai import Agent, Crew, Task

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter, Recorder
from loopguard_crewai import CrewAILoopGuardTripped, guard_crew
from loopguard_crewai.testing import ScriptedLLM

from .helpers import counted_tool

ACCOUNT = ("lookup", {"q": "account 42"})


def two_agent_crew(counter: BodyCounter, triage_llm: ScriptedLLM, billing_llm: ScriptedLLM) -> Crew:
    lookup = counted_tool(counter, answer=lambda q: f"{q}: balance 0, last refund pending")
    triage = Agent(role="triage", goal="route tickets", backstory="front desk", llm=triage_llm, tools=[lookup])
    billing = Agent(role="billing", goal="settle billing", backstory="accounts", llm=billing_llm, tools=[lookup])
    return Crew(
        agents=[triage, billing],
        tasks=[
            Task(description="Triage ticket T-1.", expected_output="a route", agent=triage),
            Task(description="Settle ticket T-1.", expected_output="a resolution", agent=billing),
        ],
    )


def test_a_shared_breaker_trips_in_the_second_agent_on_the_first_agents_history() -> None:
    counter = BodyCounter()
    triage_llm = ScriptedLLM(script=[ACCOUNT, ACCOUNT, "route to billing"])
    billing_llm = ScriptedLLM(loop=ACCOUNT)  # billing repeats triage's lookup forever
    recorder = Recorder()
    breaker = Breaker(ledger=recorder)

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(breaker):
        two_agent_crew(counter, triage_llm, billing_llm).kickoff()

    trip = caught.value
    assert isinstance(trip, CrewAILoopGuardTripped)
    assert trip.reason == "loop"
    assert trip.agent == "billing"
    # Triage looked up twice, billing once: billing's second identical lookup is the fourth in the crew
    # (billing alone would have been allowed three), and it was refused.
    assert [args["q"] for _, args in counter.runs] == ["account 42", "account 42", "account 42"]
    assert billing_llm.calls == 2

    usage = breaker.usage()
    assert usage.turns == triage_llm.calls + billing_llm.calls == 5
    assert usage.tokens == 5 * 120

    # The ledger attributes every row to the agent that made the call.
    tools = [(row["agent"], row["tool"]) for row in recorder.where(origin="tool")]
    assert tools == [("triage", "lookup"), ("triage", "lookup"), ("billing", "lookup")]
    models = sorted(row["agent"] for row in recorder.where(origin="model"))
    assert models == ["billing", "billing", "triage", "triage", "triage"]
    (trip_row,) = recorder.where(origin="breaker")
    assert trip_row["agent"] == "billing"
    assert trip_row["breach_reason"] == "loop"


def test_delegation_ping_pong_between_two_agents_is_stopped() -> None:
    # triage keeps delegating the same ticket to billing, billing keeps sending it back.
    delegate = (
        "delegate_work_to_coworker",
        {"task": "refund ticket T-1", "context": "customer wants a refund", "coworker": "billing"},
    )
    triage_llm = ScriptedLLM(loop=delegate)
    billing_llm = ScriptedLLM(script=["This is a triage matter; send it back to triage."] * 20)
    triage = Agent(role="triage", goal="route", backstory="front desk", llm=triage_llm, allow_delegation=True)
    billing = Agent(role="billing", goal="settle", backstory="accounts", llm=billing_llm)
    crew = Crew(agents=[triage, billing], tasks=[Task(description="Handle T-1.", expected_output="done", agent=triage)])
    recorder = Recorder()
    breaker = Breaker(ledger=recorder)

    with pytest.raises(LoopGuardTripped) as caught, guard_crew(breaker):
        crew.kickoff()

    assert caught.value.reason == "loop"
    assert caught.value.tool == "delegate_work_to_coworker"
    assert billing_llm.calls == 3  # the fourth hand-off never reached billing
    assert {row["agent"] for row in recorder.where(origin="model")} == {"triage", "billing"}


def test_separate_runs_do_not_share_counts() -> None:
    # The same breaker, two kickoffs: each guard_crew block is its own run.
    breaker = Breaker()
    for _ in range(2):
        counter = BodyCounter()
        llm = ScriptedLLM(script=[ACCOUNT, ACCOUNT, "done"])
        crew = Crew(
            agents=[agent := Agent(role="r", goal="g", backstory="b", llm=llm, tools=[counted_tool(counter)])],
            tasks=[Task(description="Look up account 42.", expected_output="x", agent=agent)],
        )
        with guard_crew(breaker):
            assert str(crew.kickoff()) == "done"
        assert counter.count() == 2
        assert breaker.usage().tool_calls == 2
