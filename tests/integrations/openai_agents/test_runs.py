"""The Agents SDK adapter through the real ``Runner`` with an ``OpenAIChatCompletionsModel`` over a scripted
transport (no network): runaways stopped before the fourth body, the trip unwrapped at the caller."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("agents", reason="needs the openai-agents extra: pip install 'loopguard-core[openai-agents]'")

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from agents.exceptions import AgentsException
from openai import AsyncOpenAI

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_openai_agents import LoopGuardHooks, agent_tool, guarded_run, guarded_run_streamed, guarded_run_sync
from loopguard_pytest import assert_not_tripped, assert_tripped

from ..openai.fakes import BASE_URL, ScriptedOpenAI, async_http_client, legit, runaway, script
from ..ordering import SiblingOrder

set_tracing_disabled(True)


def model(api: ScriptedOpenAI) -> OpenAIChatCompletionsModel:
    client = AsyncOpenAI(api_key="scripted", base_url=BASE_URL, http_client=async_http_client(api))
    return OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)


def lookup_tool(counter: BodyCounter) -> Any:
    @function_tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", {"q": q})
        return "nothing new"

    return lookup


def researcher(api: ScriptedOpenAI, counter: BodyCounter, **kwargs: Any) -> Agent[Any]:
    return Agent(name="researcher", model=model(api), tools=[lookup_tool(counter)], **kwargs)


RUNAWAY_STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


async def test_run_runaway_trips_at_the_caller(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        await guarded_run(researcher(ScriptedOpenAI(runaway()), loopguard_bodies), "find it", breaker)
    assert type(caught.trip) is LoopGuardTripped and not isinstance(caught.trip, AgentsException)
    assert caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3


def test_run_sync_runaway_trips_at_the_caller(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies):
        guarded_run_sync(researcher(ScriptedOpenAI(runaway()), loopguard_bodies), "find it", breaker)
    assert loopguard_bodies.count("lookup") == 3


async def test_run_streamed_runaway_trips_at_the_caller(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    result = guarded_run_streamed(researcher(ScriptedOpenAI(runaway()), loopguard_bodies), "find it", breaker)
    with assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        async for _ in result.stream_events():
            pass
    assert type(caught.trip) is LoopGuardTripped
    assert loopguard_bodies.count("lookup") == 3


async def test_plain_runner_wraps_the_trip_which_is_why_the_wrappers_exist() -> None:
    api, counter, breaker = ScriptedOpenAI(runaway()), BodyCounter(), Breaker()
    with breaker.run(), pytest.raises(AgentsException) as caught:
        await Runner.run(researcher(api, counter), "find it", hooks=LoopGuardHooks(breaker))
    assert isinstance(caught.value.__cause__, LoopGuardTripped)  # UserError("Error running tool lookup: ...")
    assert counter.count("lookup") == 3


@pytest.mark.loopguard(max_tokens=1_000)
async def test_token_ceiling_refuses_the_model_call_before_it_is_sent(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    api = ScriptedOpenAI(legit())
    agent = researcher(api, loopguard_bodies, model_settings=ModelSettings(max_tokens=4_000))
    with assert_tripped(reason="token_ceiling", max_body_runs=0, bodies=loopguard_bodies):
        await guarded_run(agent, "find it", breaker)
    assert api.requests == []


@pytest.mark.loopguard(max_tokens=100_000)
async def test_legit_run_completes(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_not_tripped(breaker):
        result = await guarded_run(researcher(ScriptedOpenAI(legit(2)), loopguard_bodies), "find it", breaker)
    assert result.final_output == "the answer"
    assert loopguard_bodies.count("lookup") == 2


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
async def test_the_conversation_is_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so the input items are not read."""
    breaker = Breaker(**settings)
    await guarded_run(researcher(ScriptedOpenAI(legit(2)), BodyCounter()), "find it", breaker)
    assert len(preflight_estimates) == 3
    assert all(n > 0 for n in preflight_estimates) if estimated else preflight_estimates == [0, 0, 0]


async def test_handoff_shares_the_breaker_with_per_agent_attribution() -> None:
    counter, breaker = BodyCounter(), Breaker()
    seen: list[tuple[str | None, str | None]] = []
    breaker.add_listener(on_trip=lambda trip: seen.append((trip.agent, trip.tool)))
    writer_api = ScriptedOpenAI(runaway(), prefix="writer")
    writer = Agent(name="writer", model=model(writer_api), tools=[lookup_tool(counter)])

    def triage_plan(n: int, body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str | None]:
        return ("lookup", {"q": "same"}, None) if n <= 2 else ("transfer_to_writer", {}, None)

    triage_api = ScriptedOpenAI(triage_plan, prefix="triage")
    triage = Agent(name="triage", model=model(triage_api), tools=[lookup_tool(counter)], handoffs=[writer])
    with pytest.raises(LoopGuardTripped) as caught:
        await guarded_run(triage, "find it", breaker)
    # triage: two lookups, then the handoff (a call of its own, transfer_to_writer, which breaks the streak);
    # writer: three identical lookups run, the fourth in a row is refused, attributed to the writer
    assert (caught.value.reason, caught.value.agent, caught.value.tool) == ("loop", "writer", "lookup")
    assert counter.count("lookup") == 5
    assert seen == [("writer", "lookup")]
    assert len(triage_api.requests) == 3 and len(writer_api.requests) == 4


async def test_agent_used_as_tool_shares_the_breaker_and_its_trip_reaches_the_caller() -> None:
    counter, breaker = BodyCounter(), Breaker()
    child = Agent(name="child", model=model(ScriptedOpenAI(runaway(), prefix="child")), tools=[lookup_tool(counter)])
    parent_api = ScriptedOpenAI(runaway("ask_child", {"input": "dig"}, stop_after=3), prefix="parent")
    tool = agent_tool(child, breaker, tool_name="ask_child", tool_description="Ask the child agent.")
    parent = Agent(name="parent", model=model(parent_api), tools=[tool])
    with pytest.raises(LoopGuardTripped) as caught:
        await guarded_run(parent, "find it", breaker)
    assert (caught.value.reason, caught.value.agent) == ("loop", "child")
    assert counter.count("lookup") == 3


async def test_steer_answers_the_refused_call_through_the_tool_guardrail() -> None:
    from dataclasses import replace

    from loopguard_openai_agents import tool_guardrail

    api, counter, breaker = ScriptedOpenAI(runaway(stop_after=6)), BodyCounter(), Breaker()
    guard = LoopGuardHooks(breaker, on_trip="steer")
    tool = replace(lookup_tool(counter), tool_input_guardrails=[tool_guardrail(guard)])
    agent = Agent(name="researcher", model=model(api), tools=[tool])
    try:
        result = await guarded_run(agent, "find it", breaker, hooks=guard)
        ended = result.final_output
    except LoopGuardTripped as trip:  # too many refusals: the run is stopped for good
        ended = trip.reason
    assert counter.count("lookup") == 3  # refused calls were answered, their bodies never ran
    assert ended in ("giving up", "refusals")
    told = [m for body in api.requests[4:] for m in body["messages"] if m.get("role") == "tool"]
    assert any(
        "loopguard" in str(m.get("content", "")).lower() or "refused" in str(m.get("content", "")).lower() for m in told
    )


SAME, FRESH = {"q": "same"}, {"q": "fresh"}


def _ordered(*, fresh_first: bool) -> SiblingOrder:
    """The SDK runs the siblings concurrently on one event loop."""
    return SiblingOrder(
        sibling_first=fresh_first,
        is_repeat=lambda tool, args: args == SAME,
        is_sibling=lambda tool, args: args == FRESH,
    )


@pytest.mark.parametrize("fresh_first", [True, False], ids=["fresh-reports-first", "fresh-reports-last"])
async def test_a_parallel_siblings_verdict_does_not_depend_on_which_finishes_first(fresh_first: bool) -> None:
    # The SDK runs one response's tool calls concurrently; the hooks name the batch (the response), so the 4th
    # identical lookup is refused whether its fresh sibling reported before it was checked or after.
    for _ in range(3):
        breaker, counter = _ordered(fresh_first=fresh_first), BodyCounter()
        api = ScriptedOpenAI(script(*[("lookup", SAME)] * 3, [("lookup", SAME), ("lookup", FRESH)], "done"))
        with pytest.raises(LoopGuardTripped) as caught:
            await guarded_run(researcher(api, counter), "find it", breaker)
        # the order asked for really happened (in the other order the trip may end the run before the fresh
        # sibling reports at all: the SDK cancels it)
        assert breaker.waits == [True] if fresh_first else breaker.waits in ([], [True])
        assert caught.value.reason == "loop"
        assert counter.runs[:3] == [("lookup", SAME)] * 3 and ("lookup", SAME) not in counter.runs[3:]
