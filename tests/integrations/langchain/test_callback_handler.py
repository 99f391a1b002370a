"""LoopGuardCallbackHandler driven through create_agent, a plain LangGraph graph and the classic AgentExecutor."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain.agents import create_agent
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import ToolException, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, estimate_tokens
from loopguard_core.testing import BodyCounter, Recorder
from loopguard_langchain import LoopGuardCallbackHandler
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_pytest import assert_not_tripped, assert_tripped

from .helpers import NoUsageModel, counted_tools, page_script, start_rows, user, watched_breaker

RUNAWAY = ("lookup", {"q": "same"})
STOPPED = {"reason": "loop", "max_body_runs": 3}  # the fourth identical call is refused: its body never runs


def cfg(handler: Any) -> dict[str, Any]:
    return {"callbacks": [handler]}


# -- create_agent with config callbacks ------------------------------------------------------------


def test_create_agent_sync_runaway_is_stopped_in_on_tool_start(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(loop=RUNAWAY)
    agent = create_agent(model, counted_tools(loopguard_bodies), name="researcher")
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies) as caught:
        agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3
    assert model.calls == 4
    assert breaker.usage().tokens == 4 * 120  # usage from on_llm_end


@pytest.mark.parametrize("tool_name", ["lookup", "alookup"], ids=["sync-def-tool", "async-def-tool"])
async def test_create_agent_async_runaway_is_stopped(
    tool_name: str, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    agent = create_agent(ScriptedChatModel(loop=(tool_name, {"q": "same"})), counted_tools(loopguard_bodies))
    with assert_tripped(**STOPPED, tool=tool_name, bodies=loopguard_bodies):
        await agent.ainvoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert loopguard_bodies.count(tool_name) == 3


def test_create_agent_stream_raises_the_trip(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = create_agent(ScriptedChatModel(loop=RUNAWAY), counted_tools(loopguard_bodies))
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        for _ in agent.stream(user(), config=cfg(LoopGuardCallbackHandler(breaker))):
            pass
    assert loopguard_bodies.count("lookup") == 3


def test_a_varied_run_completes_untouched(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(script=[[("fetch_page", {"page": n})] for n in range(1, 7)] + ["done"])
    agent = create_agent(model, counted_tools(loopguard_bodies))
    with assert_not_tripped(breaker):
        result = agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert result["messages"][-1].content == "done"
    assert loopguard_bodies.count("fetch_page") == 6
    usage = breaker.usage()
    assert usage.state is BreakerState.CLOSED
    assert (usage.turns, usage.tokens, usage.tool_calls) == (7, 7 * 120, 6)


def test_model_pre_flight_refuses_a_call_that_cannot_fit_before_it_is_sent() -> None:
    breaker, counter = Breaker(max_tokens=1_000), BodyCounter()
    model = ScriptedChatModel(loop=RUNAWAY, max_tokens=1_000)  # its own output cap alone fills the budget
    agent = create_agent(model, counted_tools(counter))
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.value.reason == "token_ceiling"
    assert model.calls == 0


def test_turn_ceiling_in_on_chat_model_start() -> None:
    breaker, counter = Breaker(max_turns=3, loop_detection=False), BodyCounter()
    model = ScriptedChatModel(loop=RUNAWAY)
    agent = create_agent(model, counted_tools(counter))
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.value.reason == "turn_ceiling"
    assert model.calls == 3


def test_tool_errors_reach_on_tool_end_as_failures_and_a_streak_trips() -> None:
    calls = BodyCounter()

    @tool
    def flaky(n: int) -> str:
        """Always fails (the tool turns the error into a message itself)."""
        calls.hit("flaky")
        raise ToolException(f"backend down ({n})")

    flaky.handle_tool_error = True

    breaker = Breaker(max_consecutive_failures=3, loop_detection=False)
    agent = create_agent(ScriptedChatModel(script=[[("flaky", {"n": n})] for n in range(1, 10)]), [flaky])
    with pytest.raises(LoopGuardTripped) as caught:
        agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.value.reason == "failures"
    assert calls.count("flaky") == 3


# -- a plain LangGraph graph ----------------------------------------------------------------------


def plain_graph(model: ScriptedChatModel, tools: list[Any]):
    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    graph = StateGraph(MessagesState)
    graph.add_node("agent", RunnableLambda(agent, afunc=aagent))
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def test_plain_graph_sync() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph = plain_graph(ScriptedChatModel(loop=RUNAWAY), counted_tools(counter))
    with pytest.raises(LoopGuardTripped) as caught:
        graph.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.value.reason == "loop"
    assert caught.value.agent == "tools"  # no agent name in a plain graph: the node is named
    assert counter.count("lookup") == 3


async def test_plain_graph_async() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph = plain_graph(ScriptedChatModel(loop=RUNAWAY), counted_tools(counter))
    with pytest.raises(LoopGuardTripped):
        await graph.ainvoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert counter.count("lookup") == 3


def test_shared_handler_across_two_agents_of_a_graph_attributes_each_call() -> None:
    ledger, counter = Recorder(), BodyCounter()
    breaker = Breaker(ledger=ledger)
    tools = counted_tools(counter)
    researcher = create_agent(
        ScriptedChatModel(script=[[RUNAWAY], [RUNAWAY], [RUNAWAY], "found"]), tools, name="researcher"
    )
    writer = create_agent(ScriptedChatModel(loop=RUNAWAY), tools, name="writer")
    graph = StateGraph(MessagesState)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_edge(START, "researcher")
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", END)
    with pytest.raises(LoopGuardTripped) as caught:
        graph.compile().invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert caught.value.agent == "writer" and caught.value.reason == "loop"
    assert counter.count("lookup") == 3
    assert [r["agent"] for r in ledger.where(origin="tool")] == ["researcher", "researcher", "researcher"]
    assert [r["agent"] for r in ledger.where(origin="breaker")] == ["writer"]
    assert len({r["session_id"] for r in ledger.rows}) == 1


def test_each_invocation_is_its_own_run() -> None:
    breaker, counter = Breaker(), BodyCounter()
    handler = LoopGuardCallbackHandler(breaker)
    agent = create_agent(ScriptedChatModel(script=[[RUNAWAY], "ok"] * 4), counted_tools(counter))
    for _ in range(4):
        agent.invoke(user(), config=cfg(handler))
    assert counter.count("lookup") == 4
    assert breaker.usage().tool_calls == 1


# -- the classic AgentExecutor (langchain_classic) ----------------------------------------------------


def classic_executor(model: ScriptedChatModel, tools: list[Any]):
    classic = pytest.importorskip("langchain_classic.agents", reason="needs langchain-classic (langchain extra)")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are helpful."), ("human", "{input}"), ("placeholder", "{agent_scratchpad}")]
    )
    agent = classic.create_tool_calling_agent(model, tools, prompt)
    return classic.AgentExecutor(agent=agent, tools=tools, max_iterations=12)


def test_classic_agent_executor_sync_stops_in_on_agent_action(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    executor = classic_executor(ScriptedChatModel(loop=RUNAWAY), counted_tools(loopguard_bodies))
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        executor.invoke({"input": "go"}, config=cfg(LoopGuardCallbackHandler(breaker)))
    assert loopguard_bodies.count("lookup") == 3
    assert breaker.usage().tool_calls == 3  # checked once in on_agent_action, not again in on_tool_start


async def test_classic_agent_executor_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    executor = classic_executor(ScriptedChatModel(loop=RUNAWAY), counted_tools(loopguard_bodies))
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        await executor.ainvoke({"input": "go"}, config=cfg(LoopGuardCallbackHandler(breaker)))
    assert loopguard_bodies.count("lookup") == 3


def test_classic_agent_executor_varied_run_completes(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(script=[[("fetch_page", {"page": n})] for n in range(1, 5)] + ["done"])
    executor = classic_executor(model, counted_tools(loopguard_bodies))
    with assert_not_tripped(breaker):
        result = executor.invoke({"input": "go"}, config=cfg(LoopGuardCallbackHandler(breaker)))
    assert result["output"] == "done"
    assert loopguard_bodies.count("fetch_page") == 4 == breaker.usage().tool_calls


# -- the traps are refused -------------------------------------------------------------------------


def test_raise_error_cannot_be_turned_off() -> None:
    handler = LoopGuardCallbackHandler(Breaker())
    assert handler.raise_error is True
    with pytest.raises(TypeError, match="needs raise_error=True"):
        handler.raise_error = False


def test_async_variants_are_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match="mixes LoopGuardCallbackHandler with AsyncCallbackHandler"):

        class Mixed(LoopGuardCallbackHandler, AsyncCallbackHandler):  # type: ignore[misc]
            pass

    with pytest.raises(TypeError, match=r"on_tool_start is 'async def'"):

        class AsyncHook(LoopGuardCallbackHandler):
            async def on_tool_start(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                return None

    with pytest.raises(TypeError, match=r"needs a loopguard_core\.Breaker"):
        LoopGuardCallbackHandler("breaker")  # type: ignore[arg-type]


def test_why_async_handlers_are_refused_langchain_swallows_them() -> None:
    # Pins the upstream trap the refusal protects against: an AsyncCallbackHandler raising in on_tool_start,
    # even with raise_error=True, is swallowed for a sync tool and the tool body runs anyway.
    counter = BodyCounter()

    class NaiveAsyncGuard(AsyncCallbackHandler):
        raise_error = True

        async def on_tool_start(self, *args: Any, **kwargs: Any) -> None:
            raise LoopGuardTripped("loop")

    agent = create_agent(ScriptedChatModel(script=[[RUNAWAY], "done"]), counted_tools(counter))
    agent.invoke(user(), config=cfg(NaiveAsyncGuard()))
    assert counter.count("lookup") == 1


def test_failed_model_calls_release_their_reservation_through_on_llm_error() -> None:

    class Overloaded(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            raise ConnectionError("529 overloaded")

    breaker = Breaker(max_tokens=600, isolate_runs=False)  # one budget across the retries
    handler = LoopGuardCallbackHandler(breaker)
    agent = create_agent(Overloaded(max_tokens=400), [])
    for _ in range(4):  # without the release, the second request would be refused (2 x 400 > 600)
        with pytest.raises(ConnectionError):
            agent.invoke(user("hi"), config={"callbacks": [handler]})
    assert breaker.usage().tokens == 0


def test_callbacks_re_enter_the_run_without_a_store_read_or_a_start_row_per_turn(tmp_path) -> None:
    """Each callback runs inside the root chain's run; entering it costs no store read and writes no new start row."""
    reads: dict[int, int] = {}
    for pages in (2, 8):
        breaker, store, ledger = watched_breaker(tmp_path / f"l{pages}.db")
        agent = create_agent(ScriptedChatModel(script=page_script(pages)), counted_tools(BodyCounter()))
        result = agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
        assert result["messages"][-1].content == "done"
        assert breaker.usage().tool_calls == pages
        reads[pages] = store.snapshots
        assert len(start_rows(ledger)) == 1
    assert reads[8] == reads[2]


# -- the input estimate: read only where something uses it --------------------------------------------


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_preflight_estimates_the_input_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    breaker, counter = Breaker(**settings), BodyCounter()
    agent = create_agent(ScriptedChatModel(page_script(3)), counted_tools(counter))
    agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert len(preflight_estimates) == 4
    assert all(n > 0 for n in preflight_estimates) if estimated else preflight_estimates == [0, 0, 0, 0]
    assert breaker.usage().tokens == 4 * 120  # what the provider reported, either way


def test_a_reply_without_usage_still_counts_the_estimated_input_without_a_ceiling() -> None:
    from loopguard_langchain._common import estimate_messages

    breaker, counter = Breaker(), BodyCounter()
    agent = create_agent(NoUsageModel(page_script(2)), counted_tools(counter))
    out = agent.invoke(user(), config=cfg(LoopGuardCallbackHandler(breaker)))
    assert counter.count("fetch_page") == 2
    # Each turn's input is the history it was sent; the three replies' texts are counted as output.
    inputs = sum(estimate_messages(out["messages"][:n]) for n in (1, 3, 5))
    outputs = sum(estimate_tokens([m.text]) for m in out["messages"] if m.type == "ai")
    assert breaker.usage().tokens == inputs + outputs > outputs
