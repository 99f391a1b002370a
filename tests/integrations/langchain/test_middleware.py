"""LoopGuardMiddleware driven through the real ``create_agent`` runtime with a scripted fake model."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain.agents import create_agent
from langchain.agents.middleware import (
    ModelCallLimitMiddleware,
    ToolErrorMiddleware,
    ToolRetryMiddleware,
)
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, LoopGuardWarning
from loopguard_core.testing import BodyCounter, Recorder
from loopguard_langchain import LoopGuardMiddleware, check_middleware_order, guarded_agent
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_pytest import assert_not_tripped, assert_tripped

from .helpers import (
    NoUsageModel,
    answered_every_tool_call,
    counted_tools,
    page_script,
    start_rows,
    user,
    watched_breaker,
)

RUNAWAY = ("lookup", {"q": "same"})


def runaway_agent(breaker: Breaker, counter: BodyCounter, *, on_trip: str = "raise", call=RUNAWAY, **model_kw):
    model = ScriptedChatModel(loop=call, **model_kw)
    mw = LoopGuardMiddleware(breaker, on_trip=on_trip)
    return create_agent(model, counted_tools(counter), middleware=[mw], name="researcher"), model


# -- the runaway is stopped, on every path ---------------------------------------------------------

STOPPED = {"reason": "loop", "max_body_runs": 3}  # the fourth identical call is refused: its body never runs


def test_sync_invoke_runaway_is_stopped_before_the_fourth_identical_call(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent, model = runaway_agent(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies) as caught:
        agent.invoke(user())
    assert isinstance(caught.trip, RuntimeError) and caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3
    assert model.calls == 4  # the run stopped at the refusal: no further model call
    assert breaker.state is BreakerState.OPEN
    assert breaker.usage().tool_calls == 3


@pytest.mark.parametrize("call_ids", ["per_answer", "constant"])
def test_a_runaway_is_stopped_when_the_server_reuses_tool_call_ids(
    breaker: Breaker, loopguard_bodies: BodyCounter, call_ids: str
) -> None:
    # Kimi K2/K3 servers name calls "<tool>:<n>" anew in every answer; some llama.cpp builds send one id for all.
    # Each answer's call is a new call, not a retry of the last one.
    agent, model = runaway_agent(breaker, loopguard_bodies, call_ids=call_ids)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        agent.invoke(user())
    assert (loopguard_bodies.count("lookup"), model.calls, breaker.usage().tool_calls) == (3, 4, 3)


async def test_async_invoke_runaway_is_stopped_with_an_async_tool(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent, model = runaway_agent(breaker, loopguard_bodies, call=("alookup", {"q": "same"}))
    with assert_tripped(**STOPPED, tool="alookup", bodies=loopguard_bodies):
        await agent.ainvoke(user())
    assert (loopguard_bodies.count("alookup"), model.calls) == (3, 4)


async def test_async_invoke_runaway_is_stopped_with_a_sync_tool(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent, _ = runaway_agent(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        await agent.ainvoke(user())
    assert loopguard_bodies.count("lookup") == 3


def test_stream_raises_the_trip_from_the_iterator(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent, _ = runaway_agent(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        for _ in agent.stream(user()):
            pass
    assert loopguard_bodies.count("lookup") == 3


async def test_astream_raises_the_trip_from_the_iterator(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent, _ = runaway_agent(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        async for _ in agent.astream(user()):
            pass
    assert loopguard_bodies.count("lookup") == 3


# -- legitimate work is left alone ---------------------------------------------------------------


def test_a_varied_run_completes_untouched_and_its_usage_is_recorded(
    breaker: Breaker, loopguard_bodies: BodyCounter, loopguard_ledger: Recorder
) -> None:
    pages = [[("fetch_page", {"page": n})] for n in range(1, 6)]
    model = ScriptedChatModel(script=[*pages, [("lookup", {"q": "same"})], [("lookup", {"q": "same"})], "all done"])
    agent = create_agent(model, counted_tools(loopguard_bodies), middleware=[LoopGuardMiddleware(breaker)])
    with assert_not_tripped(breaker):
        result = agent.invoke(user())
    assert result["messages"][-1].content == "all done"
    assert loopguard_bodies.count() == 7
    usage = breaker.usage()
    assert usage.state is BreakerState.CLOSED
    assert usage.turns == 8 == model.calls
    assert usage.tokens == 8 * 120  # usage_metadata of every model call: 100 in + 20 out
    assert usage.tool_calls == 7 == len(loopguard_ledger.where(origin="tool"))


async def test_a_varied_async_run_completes_untouched(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(script=[[("fetch_page", {"page": n})] for n in range(1, 6)] + ["all done"])
    agent = create_agent(model, counted_tools(loopguard_bodies), middleware=[LoopGuardMiddleware(breaker)])
    with assert_not_tripped(breaker):
        result = await agent.ainvoke(user())
    assert result["messages"][-1].content == "all done"
    assert loopguard_bodies.count("fetch_page") == 5
    assert breaker.usage().tokens == 6 * 120


def _flaky(calls: BodyCounter):
    @tool
    def flaky(n: int) -> str:
        """Always fails."""
        calls.hit("flaky")
        raise ValueError(f"backend down ({n})")

    return flaky


def test_tool_errors_are_reported_and_a_failing_streak_trips() -> None:
    calls = BodyCounter()
    breaker = Breaker(max_consecutive_failures=2, loop_detection=False)
    model = ScriptedChatModel(script=[[("flaky", {"n": n})] for n in range(1, 10)])
    # an error middleware INSIDE the guard turns failures into messages; the guard still sees them as errors
    inner = ToolErrorMiddleware(on_error=lambda exc, request: f"failed: {exc}")
    agent = create_agent(model, [_flaky(calls)], middleware=[LoopGuardMiddleware(breaker), inner])
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "failures"
    assert calls.count("flaky") == 2


def test_a_tool_exception_reaches_the_caller_unchanged() -> None:
    calls = BodyCounter()
    breaker = Breaker()
    model = ScriptedChatModel(script=[[("flaky", {"n": 1})], "done"])
    agent = create_agent(model, [_flaky(calls)], middleware=[LoopGuardMiddleware(breaker)])
    with pytest.raises(ValueError, match=r"backend down \(1\)"):
        agent.invoke(user())
    assert calls.count("flaky") == 1
    assert breaker.usage().tool_calls == 1


# -- model pre-flight ----------------------------------------------------------------------------


def test_model_call_that_would_cross_the_token_ceiling_is_never_sent() -> None:
    breaker, counter = Breaker(max_tokens=1_000), BodyCounter()
    # the model's own cap (max_tokens=1000) plus any input cannot fit under a 1000-token ceiling
    agent, model = runaway_agent(breaker, counter, max_tokens=1_000)
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "token_ceiling"
    assert model.calls == 0
    assert counter.count() == 0


def test_without_an_output_cap_the_call_reserves_what_the_model_could_write() -> None:
    # No max_tokens on the model: the request could write the model's whole output, so that is reserved
    # (16,384 tokens unless the price data knows better) and a 1,000-token ceiling refuses it before it is sent.
    breaker, counter = Breaker(max_tokens=1_000, loop_detection=False), BodyCounter()
    agent, model = runaway_agent(breaker, counter)
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "token_ceiling"
    assert model.calls == 0


def test_with_no_output_reserve_the_same_ceiling_counts_what_was_spent() -> None:
    breaker, counter = Breaker(max_tokens=1_000, loop_detection=False, output_reserve_tokens=0), BodyCounter()
    agent, model = runaway_agent(breaker, counter)
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    # 120 tokens per call: calls 1..8 fit (960), the 9th is refused before it is sent
    assert caught.value.reason == "token_ceiling"
    assert model.calls == 8
    assert breaker.usage().tokens == 960


def test_turn_ceiling_refuses_the_model_call_before_it_is_made() -> None:
    breaker, counter = Breaker(max_turns=2, loop_detection=False), BodyCounter()
    agent, model = runaway_agent(breaker, counter)
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "turn_ceiling"
    assert model.calls == 2
    assert counter.count("lookup") == 2


# -- on_trip="end" -------------------------------------------------------------------------------


def test_end_mode_finishes_the_run_with_a_message_naming_the_trip(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent, model = runaway_agent(breaker, loopguard_bodies, on_trip="end")
    result = agent.invoke(user())  # no exception: the adapter ends the run
    last = result["messages"][-1]
    assert last.type == "ai" and not last.tool_calls
    assert "[loopguard] run stopped" in last.content and "[loop/repeat]" in last.content
    assert last.response_metadata["loopguard_trip"]["reason"] == "loop"
    assert_tripped(breaker, reason="loop", tool="lookup")  # the breaker saw it, though the caller did not
    assert loopguard_bodies.count("lookup") == 3
    assert model.calls == 4  # the model was not asked again after the trip
    assert answered_every_tool_call(result["messages"])
    refused = [m for m in result["messages"] if m.type == "tool" and m.status == "error"]
    assert len(refused) == 1 and "did not run" in refused[0].content


@pytest.mark.loopguard(max_turns=3, loop_detection=False)
async def test_end_mode_async_and_on_a_model_ceiling(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent, model = runaway_agent(breaker, loopguard_bodies, on_trip="end")
    result = await agent.ainvoke(user())
    assert "turn_ceiling" in result["messages"][-1].content
    assert_tripped(breaker, reason="turn_ceiling")
    assert model.calls == 3
    assert loopguard_bodies.count("lookup") == 3
    assert answered_every_tool_call(result["messages"])


def test_bad_arguments_are_refused_with_a_clear_message() -> None:
    with pytest.raises(TypeError, match=r"needs a loopguard_core\.Breaker"):
        LoopGuardMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_trip must be 'raise', 'end' or 'steer'"):
        LoopGuardMiddleware(Breaker(), on_trip="interrupt")


# -- misconfiguration is loud -------------------------------------------------------------------


@pytest.mark.parametrize(
    "outer",
    [
        lambda: ToolRetryMiddleware(initial_delay=0, jitter=False),
        lambda: ToolErrorMiddleware(on_error=lambda exc, request: f"failed: {exc}"),
    ],
    ids=["ToolRetryMiddleware", "ToolErrorMiddleware"],
)
def test_a_swallowing_middleware_placed_before_the_guard_warns_at_build_time(outer) -> None:
    breaker, counter = Breaker(), BodyCounter()
    first = outer()
    with pytest.warns(LoopGuardWarning, match=rf"{type(first).__name__} is placed before LoopGuardMiddleware"):
        create_agent(
            ScriptedChatModel(loop=RUNAWAY), counted_tools(counter), middleware=[first, LoopGuardMiddleware(breaker)]
        )


def test_why_the_order_matters_the_outer_retry_converts_the_tool_trip() -> None:
    # Documented trap, pinned: the outer retry turns the tool refusal into a ToolMessage; only the model
    # pre-flight (breaker now open) still stops the run, with reason "open" instead of "loop".
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel(loop=RUNAWAY)
    with pytest.warns(LoopGuardWarning):
        agent = create_agent(
            model,
            counted_tools(counter),
            middleware=[ToolRetryMiddleware(initial_delay=0, jitter=False), LoopGuardMiddleware(breaker)],
        )
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "open"
    assert counter.count("lookup") == 3


def test_any_middleware_before_the_guard_warns_that_it_is_not_first() -> None:
    with pytest.warns(LoopGuardWarning, match="LoopGuardMiddleware is not first"):
        create_agent(
            ScriptedChatModel(),
            counted_tools(BodyCounter()),
            middleware=[ModelCallLimitMiddleware(run_limit=5), LoopGuardMiddleware(Breaker())],
        )


def test_guard_first_with_retry_inside_builds_silently_and_still_raises() -> None:
    breaker, counter = Breaker(), BodyCounter()
    # pytest turns LoopGuardWarning into an error: building without one proves the order check is quiet here
    agent = create_agent(
        ScriptedChatModel(loop=RUNAWAY),
        counted_tools(counter),
        middleware=[LoopGuardMiddleware(breaker), ToolRetryMiddleware(initial_delay=0, jitter=False)],
    )
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user())
    assert caught.value.reason == "loop"
    assert counter.count("lookup") == 3


def test_check_middleware_order_and_guarded_agent() -> None:
    breaker = Breaker()
    retry = ToolRetryMiddleware()
    with pytest.raises(ValueError, match="ToolRetryMiddleware is placed before"):
        check_middleware_order([retry, LoopGuardMiddleware(breaker)], strict=True)
    with pytest.warns(LoopGuardWarning):
        check_middleware_order([retry, LoopGuardMiddleware(breaker)])
    with pytest.raises(ValueError, match="holds no LoopGuardMiddleware"):
        check_middleware_order([retry])
    check_middleware_order([LoopGuardMiddleware(breaker), retry], strict=True)

    with pytest.raises(ValueError, match="adds LoopGuardMiddleware itself"):
        guarded_agent(ScriptedChatModel(), [], breaker=breaker, middleware=[LoopGuardMiddleware(breaker)])
    counter = BodyCounter()
    agent = guarded_agent(
        ScriptedChatModel(loop=RUNAWAY),
        counted_tools(counter),
        breaker=breaker,
        middleware=[ToolRetryMiddleware(initial_delay=0, jitter=False)],
    )
    with pytest.raises(LoopGuardTripped):
        agent.invoke(user())
    assert counter.count("lookup") == 3


# -- runs: one per invocation, nested agents join ----------------------------------------------------


def test_each_invocation_is_a_fresh_run_unless_the_caller_shares_one() -> None:
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel(script=[[RUNAWAY], "ok"] * 4)
    agent = create_agent(model, counted_tools(counter), middleware=[LoopGuardMiddleware(breaker)])
    for _ in range(4):
        agent.invoke(user())  # one identical lookup per invocation: never a loop
    assert counter.count("lookup") == 4
    assert breaker.usage().tool_calls == 1  # the last run only

    shared = ScriptedChatModel(script=[[RUNAWAY], "ok"] * 4)
    agent = create_agent(shared, counted_tools(counter), middleware=[LoopGuardMiddleware(breaker)])
    with breaker.run():  # one run around several invocations: counts add up
        agent.invoke(user())
        agent.invoke(user())
        agent.invoke(user())
        with pytest.raises(LoopGuardTripped):
            agent.invoke(user())
    assert counter.count("lookup") == 7


def test_an_agent_called_from_a_tool_joins_the_parent_run() -> None:
    breaker = Breaker(max_tool_calls=3, loop_detection=False)
    counter = BodyCounter()
    child_model = ScriptedChatModel(script=[[("lookup", {"q": str(n)})] for n in range(1, 5)] + ["child done"])
    guard = LoopGuardMiddleware(breaker)
    child = create_agent(child_model, counted_tools(counter), middleware=[guard], name="helper")

    @tool
    def delegate(task: str) -> str:
        """Hand a task to the helper agent."""
        counter.hit("delegate")
        return child.invoke(user(task))["messages"][-1].content

    parent = create_agent(
        ScriptedChatModel(script=[[("delegate", {"task": "dig"})], "done"]), [delegate], middleware=[guard], name="boss"
    )
    with pytest.raises(LoopGuardTripped) as caught:
        parent.invoke(user())
    # delegate (1) + two lookups = 3 calls in ONE run; the helper's third lookup is refused
    assert caught.value.reason == "tool_ceiling"
    assert caught.value.agent == "helper"
    assert counter.count("lookup") == 2


def _two_agent_graph(breaker: Breaker, ledger_counter: BodyCounter):
    guard = LoopGuardMiddleware(breaker)
    tools = counted_tools(ledger_counter)
    researcher = create_agent(
        ScriptedChatModel(script=[[RUNAWAY], [RUNAWAY], [RUNAWAY], "research done"]),
        tools,
        middleware=[guard],
        name="researcher",
    )
    writer = create_agent(ScriptedChatModel(loop=RUNAWAY), tools, middleware=[guard], name="writer")
    graph = StateGraph(MessagesState)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_edge(START, "researcher")
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", END)
    return graph.compile()


def test_one_breaker_shared_by_two_agents_of_a_graph_trips_across_them() -> None:
    ledger, counter = Recorder(), BodyCounter()
    breaker = Breaker(ledger=ledger)
    graph = _two_agent_graph(breaker, counter)
    with pytest.raises(LoopGuardTripped) as caught:
        graph.invoke(user())
    # researcher ran the lookup three times; the writer's first identical lookup is the fourth: refused
    assert caught.value.reason == "loop" and caught.value.agent == "writer"
    assert counter.count("lookup") == 3
    tools = ledger.where(origin="tool")
    assert [r["agent"] for r in tools] == ["researcher", "researcher", "researcher"]
    models = ledger.where(origin="model")
    assert {r["agent"] for r in models} == {"researcher", "writer"}
    (trip,) = ledger.where(origin="breaker")
    assert trip["agent"] == "writer" and trip["breach_reason"] == "loop" and trip["tool"] == "lookup"
    assert len({r["session_id"] for r in ledger.rows}) == 1  # one run for the whole graph invocation


async def test_shared_breaker_across_agents_async() -> None:
    counter = BodyCounter()
    graph = _two_agent_graph(Breaker(), counter)
    with pytest.raises(LoopGuardTripped) as caught:
        await graph.ainvoke(user())
    assert caught.value.agent == "writer"
    assert counter.count("lookup") == 3


class _OverloadedModel(ScriptedChatModel):
    """A provider that answers every request with an error (HTTP 529 in real life)."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise ConnectionError("529 overloaded")

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise ConnectionError("529 overloaded")


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_failed_model_calls_release_their_reservation_and_the_error_reaches_the_caller(use_async: bool) -> None:
    import asyncio

    breaker = Breaker(max_tokens=600, isolate_runs=False)  # one budget across the retries
    agent = create_agent(_OverloadedModel(max_tokens=400), [], middleware=[LoopGuardMiddleware(breaker)])

    def call() -> Any:
        return asyncio.run(agent.ainvoke(user("hi"))) if use_async else agent.invoke(user("hi"))

    for _ in range(4):  # without the release, the second request would already be refused (2 x 400 > 600)
        with pytest.raises(ConnectionError):
            call()
    assert breaker.usage().tokens == 0


# -- a hook does not read the store or restart the run ------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
async def test_hooks_re_enter_the_run_without_a_store_read_or_a_start_row_per_turn(tmp_path, use_async: bool) -> None:
    """Every model and tool hook runs inside the invocation's run; entering it must not cost a store read (a round
    trip on Redis or PostgreSQL) nor write another ``start`` checkpoint: only the agent's own hooks open and close."""
    reads: dict[int, int] = {}
    for pages in (2, 8):
        breaker, store, ledger = watched_breaker(tmp_path / f"l{pages}.db")
        agent = create_agent(
            ScriptedChatModel(script=page_script(pages)),
            counted_tools(BodyCounter()),
            middleware=[LoopGuardMiddleware(breaker)],
        )
        result = await agent.ainvoke(user()) if use_async else agent.invoke(user())
        assert result["messages"][-1].content == "done"
        reads[pages] = store.snapshots
        assert len(start_rows(ledger)) == 1  # one run, one start row: not one per hook
    assert reads[8] == reads[2]  # 6 more turns, 24 more hook entries, not one more store read


# -- the input estimate: read only where something uses it --------------------------------------------


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_preflight_estimates_the_input_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    sent = preflight_estimates
    breaker, counter = Breaker(**settings), BodyCounter()
    model = ScriptedChatModel(page_script(3))
    agent = create_agent(model, counted_tools(counter), middleware=[LoopGuardMiddleware(breaker)])
    agent.invoke(user())
    assert len(sent) == 4
    assert all(n > 0 for n in sent) if estimated else sent == [0, 0, 0, 0]
    assert breaker.usage().tokens == 4 * 120  # what the provider reported, either way


def test_a_reply_without_usage_still_counts_the_estimated_input_without_a_ceiling() -> None:
    from loopguard_langchain._common import estimate_messages

    breaker, counter = Breaker(), BodyCounter()
    model = NoUsageModel(page_script(2))
    agent = create_agent(model, counted_tools(counter), middleware=[LoopGuardMiddleware(breaker)])
    out = agent.invoke(user())
    assert counter.count("fetch_page") == 2
    # Each turn's input is the history it was sent; the three replies are counted as output.
    histories = [out["messages"][:n] for n in (1, 3, 5)]
    replies = [m for m in out["messages"] if m.type == "ai"]
    expected = sum(estimate_messages(h) for h in histories) + sum(estimate_messages([m]) for m in replies)
    assert breaker.usage().tokens == expected > 0
