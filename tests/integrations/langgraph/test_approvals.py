"""Approval gates in plain LangGraph graphs (``guarded_tool_node`` and ``guard_node``): the graph suspends on its
checkpointer with ``interrupt``, a person decides from another process, ``Command(resume=...)`` resumes it, and
the gated body runs exactly once (with the person's edited arguments, if any)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import SQLiteApprovals
from loopguard_core.testing import BodyCounter
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_langgraph import guard_node, guarded_tool_node

from .graphs import agent_graph

REFUND = ("refund", {"order": "A-17", "amount_eur": 30})
NODES = ("tool_node", "guard_node")


def refund_tool(counter: BodyCounter) -> Any:
    @tool
    def refund(order: str, amount_eur: int) -> str:
        """Refund an order."""
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur} EUR on {order}"

    return refund


def graph_for(
    node: str, model: ScriptedChatModel, counter: BodyCounter, breaker: Breaker, *, on_trip: str = "raise", saver: Any
) -> Any:
    tools = [refund_tool(counter)]
    if node == "tool_node":
        return agent_graph(model, guarded_tool_node(tools, breaker, on_trip=on_trip), checkpointer=saver)
    return agent_graph(model, ToolNode(tools), guard=guard_node(breaker, on_trip), checkpointer=saver)


def start(graph: Any, thread: str) -> tuple[dict[str, Any], str]:
    config = {"configurable": {"thread_id": thread}}
    result = graph.invoke({"messages": [{"role": "user", "content": "refund A-17"}]}, config)
    (waiting,) = result["__interrupt__"]
    return config, str(waiting.value["loopguard"]["request_id"])


def gated(db: str) -> Breaker:
    return Breaker(
        approvals=db, tools={"refund": ToolPolicy(irreversible=True, preview=lambda a: str(a["amount_eur"]))}
    )


@pytest.mark.parametrize("node", NODES)
def test_second_process_approves_and_the_resumed_graph_runs_the_body_once(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    graph = graph_for(node, ScriptedChatModel([REFUND, "done"]), counter, gated(db), saver=InMemorySaver())
    config, rid = start(graph, "t-1")
    assert counter.count() == 0
    state = graph.get_state(config)
    assert state.interrupts[0].value["loopguard"]["preview"] == "30"

    assert graph.invoke(Command(resume=True), config).get("__interrupt__")  # still pending: suspended again
    assert counter.count() == 0

    subprocess.run(
        [sys.executable, "-m", "loopguard_core", "approvals", "approve", rid, "--db", db, "--by", "alice"],
        check=True,
        capture_output=True,
    )
    done = graph.invoke(Command(resume=True), config)
    assert "__interrupt__" not in done and done["messages"][-1].content == "done"
    assert counter.count("refund") == 1
    graph.invoke(Command(resume=True), config)  # nothing left to resume: the body never runs again
    assert counter.count("refund") == 1


@pytest.mark.parametrize("node", NODES)
def test_edited_arguments_are_what_the_body_receives(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    graph = graph_for(node, ScriptedChatModel([REFUND, "done"]), counter, gated(db), saver=InMemorySaver())
    config, rid = start(graph, "t-2")
    SQLiteApprovals(db).decide(rid, approve=True, by="alice", args={"order": "A-17", "amount_eur": 15})
    done = graph.invoke(Command(resume=True), config)
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 15})]
    assert any(getattr(m, "content", "") == "refunded 15 EUR on A-17" for m in done["messages"])


@pytest.mark.parametrize("node", NODES)
def test_rejection_reaches_the_model_under_steer(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    model = ScriptedChatModel([REFUND, "understood"])
    graph = graph_for(node, model, counter, gated(db), on_trip="steer", saver=InMemorySaver())
    config, rid = start(graph, "t-3")
    SQLiteApprovals(db).decide(rid, approve=False, by="bob", reason="over the refund limit")
    done = graph.invoke(Command(resume=True), config)
    assert counter.count() == 0
    assert "over the refund limit" in str(model.seen[-1][-1].content)
    assert done["messages"][-1].content == "understood"


@pytest.mark.parametrize("node", NODES)
def test_rejection_reaches_the_caller_otherwise(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    graph = graph_for(node, ScriptedChatModel([REFUND, "x"]), counter, gated(db), saver=InMemorySaver())
    config, rid = start(graph, "t-4")
    SQLiteApprovals(db).decide(rid, approve=False, by="bob", reason="duplicate")
    with pytest.raises(LoopGuardTripped) as trip:
        graph.invoke(Command(resume=True), config)
    assert trip.value.reason == "approval_rejected" and "duplicate" in str(trip.value)
    assert counter.count() == 0


@pytest.mark.parametrize("node", NODES)
def test_without_a_checkpointer_the_caller_gets_approval_required(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    graph = graph_for(node, ScriptedChatModel([REFUND, REFUND, "done"]), counter, breaker, saver=None)
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("order-9"):
        graph.invoke({"messages": [{"role": "user", "content": "go"}]})
    assert counter.count() == 0
    SQLiteApprovals(db).decide(str(waiting.value.request_id), approve=True, by="alice")
    with breaker.run("order-9"):
        graph.invoke({"messages": [{"role": "user", "content": "go"}]})
    assert counter.count("refund") == 1


@pytest.mark.parametrize("node", NODES)
def test_async_graph_suspends_and_resumes(node: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    graph = graph_for(node, ScriptedChatModel([REFUND, "done"]), counter, gated(db), saver=InMemorySaver())
    config = {"configurable": {"thread_id": "t-6"}}

    async def scenario() -> Any:
        first = await graph.ainvoke({"messages": [{"role": "user", "content": "go"}]}, config)
        rid = first["__interrupt__"][0].value["loopguard"]["request_id"]
        assert counter.count() == 0
        SQLiteApprovals(db).decide(rid, approve=True, by="alice")
        return await graph.ainvoke(Command(resume=True), config)

    done = asyncio.run(scenario())
    assert counter.count("refund") == 1 and done["messages"][-1].content == "done"


def test_tool_metadata_declares_the_gate_in_guarded_tool_node(tmp_path: Path) -> None:
    counter = BodyCounter()
    refund = refund_tool(counter)
    refund.metadata = {"loopguard": {"irreversible": True}}
    breaker = Breaker(approvals=str(tmp_path / "approvals.db"))
    graph = agent_graph(
        ScriptedChatModel([REFUND, "done"]), guarded_tool_node([refund], breaker), checkpointer=InMemorySaver()
    )
    start(graph, "t-7")
    assert counter.count() == 0 and breaker.tool_policy("refund").irreversible


def metadata_gated(counter: BodyCounter) -> Any:
    refund = refund_tool(counter)
    refund.metadata = {"loopguard": {"irreversible": True}}
    return refund


# guard_node admits the call before any node has seen the tool object that declares the gate.
METADATA_GRAPHS = {
    "guard_node in front of guarded_tool_node": lambda tools, breaker: (
        guarded_tool_node(tools, breaker),
        guard_node(breaker),
    ),
    "guard_node(tools=...) in front of a plain ToolNode": lambda tools, breaker: (
        ToolNode(tools),
        guard_node(breaker, tools=tools),
    ),
}


@pytest.mark.parametrize("wiring", METADATA_GRAPHS)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_gate_declared_in_tool_metadata_holds_behind_guard_node(wiring: str, mode: str, tmp_path: Path) -> None:
    counter = BodyCounter()
    tools = [metadata_gated(counter)]
    breaker = Breaker(approvals=str(tmp_path / "approvals.db"))
    tools_node, guard = METADATA_GRAPHS[wiring](tools, breaker)
    graph = agent_graph(ScriptedChatModel([REFUND, "done"]), tools_node, guard=guard)
    start = {"messages": [{"role": "user", "content": "refund A-17"}]}
    with pytest.raises(ApprovalRequired) as waiting:
        graph.invoke(start) if mode == "invoke" else asyncio.run(graph.ainvoke(start))
    assert counter.count() == 0 and waiting.value.tool == "refund"


def test_a_metadata_gate_behind_guard_node_runs_the_body_once_approved(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = Breaker(approvals=db)
    tools_node, guard = METADATA_GRAPHS["guard_node in front of guarded_tool_node"]([metadata_gated(counter)], breaker)
    graph = agent_graph(ScriptedChatModel([REFUND, "done"]), tools_node, guard=guard, checkpointer=InMemorySaver())
    config, rid = start(graph, "t-8")
    assert counter.count() == 0
    SQLiteApprovals(db).decide(rid, approve=True, by="alice")
    done = graph.invoke(Command(resume=True), config)
    assert counter.count("refund") == 1 and done["messages"][-1].content == "done"


def test_guard_node_tools_must_be_a_list_of_tools() -> None:
    with pytest.raises(TypeError, match="list of the tools node's tools"):
        guard_node(Breaker(), tools="refund")
