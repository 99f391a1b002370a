"""on_trip="steer" in real LangGraph graphs: guarded_tool_node and guard_node (model -> guard -> tools).

Each path proves: the refused call's body never ran, the model's next request carried the refusal (what the
scripted model was sent), the run went on to a normal end once the model changed course, and a model that keeps
repeating is stopped for good (reason "refusals") at the caller; a budget ceiling still stops.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from langgraph.graph import END
from langgraph.prebuilt import ToolNode

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_langgraph import guard_node, guarded_tool_node

from ..langchain.helpers import answered_every_tool_call, counted_tools, user
from .graphs import agent_graph

SAME = ("lookup", {"q": "same"})
CHANGES_COURSE = [SAME, SAME, SAME, SAME, ("lookup", {"q": "other"}), "done"]
REFUSED = "loopguard refused this call and it did not run"


def steered_graph(path: str, model: ScriptedChatModel, breaker: Breaker, counter: BodyCounter) -> Any:
    if path == "tool_node":
        return agent_graph(model, guarded_tool_node(counted_tools(counter), breaker, on_trip="steer"))
    return agent_graph(model, ToolNode(counted_tools(counter)), guard=guard_node(breaker, "steer"))


def tool_answers(model: ScriptedChatModel, call: int) -> list[Any]:
    """The tool answers in the model's ``call``-th request (1-based), oldest first."""
    return [m for m in model.seen[call - 1] if m.type == "tool"]


@pytest.mark.parametrize("path", ["tool_node", "guard_node"])
def test_steer_tells_the_model_why_and_the_run_goes_on_then_stops_for_good(path: str) -> None:
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel(CHANGES_COURSE)

    result = steered_graph(path, model, breaker, counter).invoke(user())

    assert result["messages"][-1].content == "done"
    assert counter.runs == [SAME, SAME, SAME, ("lookup", {"q": "other"})]  # the 4th identical call never ran
    told = tool_answers(model, 5)[-1]
    assert told.status == "error" and told.content.startswith(REFUSED)
    assert answered_every_tool_call(result["messages"])
    assert breaker.usage().refusals == 1
    assert breaker.state is BreakerState.CLOSED

    breaker, counter = Breaker(max_refusals=2), BodyCounter()
    model = ScriptedChatModel(loop=SAME)
    with pytest.raises(LoopGuardTripped) as stop:
        steered_graph(path, model, breaker, counter).invoke(user())
    assert (stop.value.reason, stop.value.terminal) == ("refusals", True)
    assert counter.count() == 3
    assert model.calls == 6
    assert tool_answers(model, 6)[-1].content.startswith(REFUSED)


@pytest.mark.parametrize("path", ["tool_node", "guard_node"])
async def test_steer_async(path: str) -> None:
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel([("alookup", {"q": "same"})] * 4 + ["done"])
    result = await steered_graph(path, model, breaker, counter).ainvoke(user())
    assert result["messages"][-1].content == "done"
    assert counter.count("alookup") == 3
    assert tool_answers(model, 5)[-1].content.startswith(REFUSED)


@pytest.mark.parametrize("path", ["tool_node", "guard_node"])
def test_in_a_parallel_batch_only_the_refused_call_is_answered_for_the_model(path: str) -> None:
    breaker, counter = Breaker(), BodyCounter()
    page = ("fetch_page", {"page": 1})
    model = ScriptedChatModel([SAME, SAME, SAME, [SAME, page], "done"])

    result = steered_graph(path, model, breaker, counter).invoke(user())

    assert result["messages"][-1].content == "done"
    assert counter.runs == [SAME, SAME, SAME, page]  # the admitted sibling ran, the refused call did not
    answers = {m.name: m for m in tool_answers(model, 5)[-2:]}
    assert answers["lookup"].content.startswith(REFUSED)
    assert answers["fetch_page"].content.startswith("page 1")
    assert answered_every_tool_call(result["messages"])


@pytest.mark.parametrize("path", ["tool_node", "guard_node"])
def test_a_budget_ceiling_still_stops_in_steer_mode(path: str) -> None:
    breaker, counter = Breaker(max_tool_calls=3), BodyCounter()
    model = ScriptedChatModel([("lookup", {"q": q}) for q in "abcd"] + ["done"])

    with pytest.raises(LoopGuardTripped) as caught:
        steered_graph(path, model, breaker, counter).invoke(user())

    assert caught.value.reason == "tool_ceiling" and caught.value.terminal
    assert counter.count() == 3
    assert model.calls == 4
    assert breaker.usage().refusals == 0


def test_guard_node_routes_to_the_named_model_node_when_every_call_was_refused() -> None:
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel(CHANGES_COURSE)
    graph = StateGraph(MessagesState)
    graph.add_node("llm", RunnableLambda(lambda state: {"messages": [model.invoke(state["messages"])]}))
    graph.add_node("guard", guard_node(breaker, "steer", model_node="llm"), destinations=("tools", "llm", END))
    graph.add_node("tools", ToolNode(counted_tools(counter)))
    graph.add_edge(START, "llm")
    graph.add_conditional_edges("llm", tools_condition, {"tools": "guard", END: END})
    graph.add_edge("tools", "llm")

    result = graph.compile().invoke(user())

    assert result["messages"][-1].content == "done"
    assert counter.count() == 4


def test_on_trip_is_checked() -> None:
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        guarded_tool_node(counted_tools(BodyCounter()), Breaker(), on_trip="end")
    with pytest.raises(ValueError, match="'steer'"):
        guard_node(Breaker(), "retry")
