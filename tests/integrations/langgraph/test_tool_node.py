"""guarded_tool_node driven through real LangGraph graphs with a scripted fake model."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, LoopGuardWarning
from loopguard_core.testing import BodyCounter, Recorder
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_langgraph import GuardedToolNode, guarded_tool_node
from loopguard_pytest import assert_not_tripped, assert_tripped

from ..langchain.helpers import counted_tools, user
from .graphs import agent_graph

RUNAWAY = ("lookup", {"q": "same"})
STOPPED = {"reason": "loop", "max_body_runs": 3}  # the fourth identical call is refused: its body never runs


def test_sync_runaway_is_stopped_and_reaches_the_caller(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(loop=RUNAWAY)
    graph = agent_graph(model, guarded_tool_node(counted_tools(loopguard_bodies), breaker))
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        graph.invoke(user())
    assert loopguard_bodies.count("lookup") == 3
    assert model.calls == 4
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("tool_name", ["lookup", "alookup"])
async def test_async_runaway_is_stopped(tool_name: str, breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(loop=(tool_name, {"q": "x"}))
    graph = agent_graph(model, guarded_tool_node(counted_tools(loopguard_bodies), breaker))
    with assert_tripped(**STOPPED, tool=tool_name, bodies=loopguard_bodies):
        await graph.ainvoke(user())
    assert loopguard_bodies.count(tool_name) == 3


def test_stream_raises_the_trip(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    graph = agent_graph(ScriptedChatModel(loop=RUNAWAY), guarded_tool_node(counted_tools(loopguard_bodies), breaker))
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        for _ in graph.stream(user()):
            pass
    assert loopguard_bodies.count("lookup") == 3


def test_a_varied_run_completes_untouched(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    model = ScriptedChatModel(script=[[("fetch_page", {"page": n})] for n in range(1, 8)] + ["done"])
    graph = agent_graph(model, guarded_tool_node(counted_tools(loopguard_bodies), breaker))
    with assert_not_tripped(breaker):
        result = graph.invoke(user())
    assert result["messages"][-1].content == "done"
    assert loopguard_bodies.count("fetch_page") == 7 == breaker.usage().tool_calls
    assert breaker.state is BreakerState.CLOSED


def test_parallel_calls_in_one_message_are_each_checked() -> None:
    # ToolNode runs the calls of one AIMessage on worker threads; the third is refused, its body never runs.
    breaker, counter = Breaker(max_tool_calls=2), BodyCounter()
    batch = [("fetch_page", {"page": n}) for n in (1, 2, 3)]
    graph = agent_graph(ScriptedChatModel(script=[batch, "done"]), guarded_tool_node(counted_tools(counter), breaker))
    with pytest.raises(LoopGuardTripped) as caught:
        graph.invoke(user())
    assert caught.value.reason == "tool_ceiling"
    assert counter.count("fetch_page") == 2


@pytest.mark.parametrize(
    "setting",
    [True, "Tool failed, try again.", (ValueError,), ValueError, lambda exc: f"failed: {exc}"],
    ids=["True", "str", "tuple", "type", "callable"],
)
async def test_converting_handle_tool_errors_warns_and_the_trip_still_propagates(setting: Any) -> None:
    for path in ("sync", "async"):
        breaker, counter = Breaker(), BodyCounter()
        with pytest.warns(LoopGuardWarning, match="handle_tool_errors"):
            node = guarded_tool_node(counted_tools(counter), breaker, handle_tool_errors=setting)
        graph = agent_graph(ScriptedChatModel(loop=RUNAWAY), node)
        with pytest.raises(LoopGuardTripped):
            await _run(graph, path)
        assert counter.count("lookup") == 3, path


async def test_a_subclass_of_the_node_still_raises_a_converted_trip() -> None:
    class Traced(GuardedToolNode):
        def _run_one(self, call: Any, input_type: Any, tool_runtime: Any) -> Any:
            return super()._run_one(call, input_type, tool_runtime)

    for path in ("sync", "async"):
        breaker, counter = Breaker(), BodyCounter()
        with pytest.warns(LoopGuardWarning, match="handle_tool_errors"):
            node = guarded_tool_node(counted_tools(counter), breaker, handle_tool_errors=True)
        node.__class__ = Traced
        with pytest.raises(LoopGuardTripped):
            await _run(agent_graph(ScriptedChatModel(loop=RUNAWAY), node), path)
        assert counter.count("lookup") == 3, path


async def _run(graph: Any, path: str) -> Any:
    return graph.invoke(user()) if path == "sync" else await graph.ainvoke(user())


def test_with_converting_errors_tool_failures_still_become_messages_and_count() -> None:
    calls = BodyCounter()

    @tool
    def flaky(n: int) -> str:
        """Always fails."""
        calls.hit("flaky")
        raise ValueError(f"backend down ({n})")

    breaker = Breaker(max_consecutive_failures=3, loop_detection=False)
    with pytest.warns(LoopGuardWarning):
        node = guarded_tool_node([flaky], breaker, handle_tool_errors=True)
    graph = agent_graph(ScriptedChatModel(script=[[("flaky", {"n": n})] for n in range(1, 9)]), node)
    with pytest.raises(LoopGuardTripped) as caught:
        graph.invoke(user())
    assert caught.value.reason == "failures"  # the errors were converted to messages AND reported as failures
    assert calls.count("flaky") == 3


def test_the_upstream_trap_a_plain_tool_node_converts_a_wrapper_exception_despite_a_type_filter() -> None:
    # Why guarded_tool_node re-raises: ToolNode ignores the (ValueError,) filter for wrapper exceptions.
    def guard(request: Any, execute: Any) -> Any:
        raise LoopGuardTripped("loop")

    node = ToolNode(counted_tools(BodyCounter()), wrap_tool_call=guard, handle_tool_errors=(ValueError,))
    graph = agent_graph(ScriptedChatModel(script=[[RUNAWAY], "done"]), node)
    result = graph.invoke(user())
    converted = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert converted and converted[0].status == "error" and "LoopGuardTripped" in converted[0].content


def test_a_user_wrapper_runs_inside_the_guard_on_both_paths() -> None:
    breaker, counter = Breaker(), BodyCounter()
    seen: list[str] = []

    def audit(request: Any, execute: Any) -> Any:
        seen.append(request.tool_call["id"])
        return execute(request)

    node = guarded_tool_node(counted_tools(counter), breaker, wrap_tool_call=audit)
    with pytest.raises(LoopGuardTripped):
        agent_graph(ScriptedChatModel(loop=RUNAWAY), node).invoke(user())
    assert len(seen) == 3 == counter.count("lookup")  # the refused call never reached the inner wrapper


async def test_a_sync_only_user_wrapper_still_runs_under_ainvoke() -> None:
    breaker, counter = Breaker(), BodyCounter()
    seen: list[str] = []

    def audit(request: Any, execute: Any) -> Any:
        seen.append(request.tool_call["id"])
        return execute(request)

    node = guarded_tool_node(counted_tools(counter), breaker, wrap_tool_call=audit)
    with pytest.raises(LoopGuardTripped):
        await agent_graph(ScriptedChatModel(loop=RUNAWAY), node).ainvoke(user())
    assert len(seen) == 3 == counter.count("lookup")


def test_construction_is_checked() -> None:
    with pytest.raises(TypeError, match=r"needs a loopguard_core\.Breaker"):
        guarded_tool_node([], "nope")  # type: ignore[arg-type]
    node = guarded_tool_node(counted_tools(BodyCounter()), Breaker())
    assert isinstance(node, GuardedToolNode) and isinstance(node, ToolNode)


def _subgraph(model: ScriptedChatModel, tools: list[Any], breaker: Breaker) -> Any:
    return agent_graph(model, guarded_tool_node(tools, breaker))


def test_one_breaker_across_two_agent_subgraphs_trips_in_the_second_and_attributes_calls() -> None:
    ledger, counter = Recorder(), BodyCounter()
    breaker = Breaker(ledger=ledger)
    tools = counted_tools(counter)
    parent = StateGraph(MessagesState)
    parent.add_node("researcher", _subgraph(ScriptedChatModel(script=[[RUNAWAY]] * 3 + ["found"]), tools, breaker))
    parent.add_node("writer", _subgraph(ScriptedChatModel(loop=RUNAWAY), tools, breaker))
    parent.add_edge(START, "researcher")
    parent.add_edge("researcher", "writer")
    parent.add_edge("writer", END)
    with pytest.raises(LoopGuardTripped) as caught:
        parent.compile().invoke(user())
    assert caught.value.reason == "loop" and caught.value.agent == "writer"
    assert counter.count("lookup") == 3
    assert [r["agent"] for r in ledger.where(origin="tool")] == ["researcher", "researcher", "researcher"]
    assert len({r["session_id"] for r in ledger.rows}) == 1


async def test_one_breaker_across_two_agent_subgraphs_async() -> None:
    counter = BodyCounter()
    breaker = Breaker()
    tools = counted_tools(counter)
    parent = StateGraph(MessagesState)
    parent.add_node("researcher", _subgraph(ScriptedChatModel(script=[[RUNAWAY]] * 3 + ["found"]), tools, breaker))
    parent.add_node("writer", _subgraph(ScriptedChatModel(loop=RUNAWAY), tools, breaker))
    parent.add_edge(START, "researcher")
    parent.add_edge("researcher", "writer")
    parent.add_edge("writer", END)
    with pytest.raises(LoopGuardTripped) as caught:
        await parent.compile().ainvoke(user())
    assert caught.value.agent == "writer"
    assert counter.count("lookup") == 3


@pytest.mark.parametrize("page_first", [True, False], ids=["page-reports-first", "page-reports-last"])
def test_a_parallel_siblings_verdict_does_not_depend_on_which_finishes_first(page_first: bool) -> None:
    # ToolNode runs one answer's sync calls on worker threads; the guard names the batch (the AIMessage's id), so
    # the 4th identical lookup is refused whether the fresh page of the same answer reported before it or after.
    from ..langchain.test_parallel_batch import PAGE, SCRIPT, OrderedBreaker, _FourthLookup

    class Gated(GuardedToolNode):
        gate: _FourthLookup

        def _run_one(self, call: Any, input_type: Any, tool_runtime: Any) -> Any:
            self.gate.hold_if_fourth(call["name"])  # outside the guard: before the lookup is checked
            return super()._run_one(call, input_type, tool_runtime)

    for _ in range(3):
        breaker, counter = OrderedBreaker(page_last=not page_first), BodyCounter()
        node = guarded_tool_node(counted_tools(counter), breaker, on_trip="steer")
        node.__class__ = Gated
        node.gate = _FourthLookup(breaker)  # type: ignore[attr-defined]
        model = ScriptedChatModel(SCRIPT)

        result = agent_graph(model, node).invoke(user())

        assert breaker.waits == [True]
        assert result["messages"][-1].content == "done"
        assert counter.runs == [RUNAWAY, RUNAWAY, RUNAWAY, PAGE]
        answers = {m.name: m for m in model.seen[4] if isinstance(m, ToolMessage)}
        assert answers["lookup"].status == "error" and answers["fetch_page"].content.startswith("page 1")
        assert breaker.usage().refusals == 1


@pytest.mark.parametrize("with_guard_node", [False, True])
def test_with_model_calls_counted_a_runaway_under_reused_call_ids_is_stopped(
    with_guard_node: bool, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    # Kimi K2/K3 servers name calls "<tool>:<n>" anew in every answer. The callback handler counts the model's
    # calls, so each answer's "lookup:0" is a new call (docs/frameworks/langgraph.md, trap 5).
    from loopguard_langchain import LoopGuardCallbackHandler
    from loopguard_langgraph import guard_node

    model = ScriptedChatModel(loop=RUNAWAY, call_ids="per_answer")
    guard = guard_node(breaker) if with_guard_node else None
    graph = agent_graph(model, guarded_tool_node(counted_tools(loopguard_bodies), breaker), guard=guard)
    with assert_tripped(**STOPPED, tool="lookup", bodies=loopguard_bodies):
        graph.invoke(user(), config={"callbacks": [LoopGuardCallbackHandler(breaker)]})
    assert (loopguard_bodies.count("lookup"), model.calls) == (3, 4)
