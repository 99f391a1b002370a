"""Approval gates in LangChain ``create_agent`` (``LoopGuardMiddleware``) and the callback handler, on the real
runtime with the scripted model: the gated body never runs before a person decides; the decision comes from
another process; the run suspends on the checkpointer (``interrupt``) and resumes with ``Command(resume=...)``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from loopguard_core import ApprovalError, ApprovalRequired, Breaker, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import SQLiteApprovals
from loopguard_core.testing import BodyCounter
from loopguard_langchain import LoopGuardCallbackHandler, LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

from .helpers import user

REFUND = ("refund", {"order": "A-17", "amount_eur": 30})


def refund_tool(counter: BodyCounter, *, declared: bool = True) -> Any:
    @tool
    def refund(order: str, amount_eur: int) -> str:
        """Refund an order."""
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur} EUR on {order}"

    if declared:  # the framework's own declaration: no Breaker(tools=...) needed
        refund.metadata = {"loopguard": {"irreversible": True}}
    return refund


def cli(*args: str) -> str:
    """The decision from another process, as a person at a terminal makes it."""
    done = subprocess.run(
        [sys.executable, "-m", "loopguard_core", "approvals", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def request_id(result: dict[str, Any]) -> str:
    (waiting,) = result["__interrupt__"]
    payload = waiting.value["loopguard"]
    assert payload["kind"] == "approval" and payload["tool"] == "refund"
    return str(payload["request_id"])


def agent_with_checkpointer(model: Any, tools: list[Any], breaker: Breaker, on_trip: str = "raise") -> Any:
    return create_agent(
        model, tools, middleware=[LoopGuardMiddleware(breaker, on_trip=on_trip)], checkpointer=InMemorySaver()
    )


def test_suspends_on_the_checkpointer_and_resumes_after_a_cli_approval(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = Breaker(approvals=db)
    model = ScriptedChatModel([REFUND, "refunded"])
    agent = agent_with_checkpointer(model, [refund_tool(counter)], breaker)
    config = {"configurable": {"thread_id": "ticket-1"}}

    first = agent.invoke(user("refund A-17"), config)
    rid = request_id(first)
    assert counter.count("refund") == 0
    assert first["__interrupt__"][0].value["loopguard"]["spend"]["turns"] == 1

    again = agent.invoke(Command(resume=True), config)  # nobody decided yet: suspended again
    assert request_id(again) == rid and counter.count("refund") == 0

    assert "approved" in cli("approve", rid, "--db", db, "--by", "alice")
    done = agent.invoke(Command(resume=True), config)
    assert "__interrupt__" not in done
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 30})]
    assert done["messages"][-1].content == "refunded"
    assert breaker.usage().turns == 2  # the resumed invocation continued the run that asked
    assert SQLiteApprovals(db).get(rid).status == "used"  # type: ignore[union-attr]


def test_edited_arguments_are_what_the_body_receives(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent = agent_with_checkpointer(ScriptedChatModel([REFUND, "ok"]), [refund_tool(counter)], Breaker(approvals=db))
    config = {"configurable": {"thread_id": "ticket-2"}}
    rid = request_id(agent.invoke(user(), config))
    cli("approve", rid, "--db", db, "--by", "alice", "--args", '{"order": "A-17", "amount_eur": 15}')
    done = agent.invoke(Command(resume=True), config)
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 15})]
    assert any(getattr(m, "content", "") == "refunded 15 EUR on A-17" for m in done["messages"])


def test_a_rejection_reaches_the_model_with_its_reason_under_steer(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    model = ScriptedChatModel([REFUND, "understood"])
    agent = agent_with_checkpointer(model, [refund_tool(counter)], Breaker(approvals=db), on_trip="steer")
    config = {"configurable": {"thread_id": "ticket-3"}}
    rid = request_id(agent.invoke(user(), config))
    cli("reject", rid, "--db", db, "--by", "bob", "--reason", "already refunded on Monday")
    done = agent.invoke(Command(resume=True), config)
    assert counter.count("refund") == 0
    last_request = model.seen[-1]
    assert "already refunded on Monday" in str(last_request[-1].content)
    assert done["messages"][-1].content == "understood"


def test_a_rejection_reaches_the_caller_as_a_trip_otherwise(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent = agent_with_checkpointer(ScriptedChatModel([REFUND, "x"]), [refund_tool(counter)], Breaker(approvals=db))
    config = {"configurable": {"thread_id": "ticket-4"}}
    rid = request_id(agent.invoke(user(), config))
    SQLiteApprovals(db).decide(rid, approve=False, by="bob", reason="customer withdrew")
    with pytest.raises(LoopGuardTripped) as trip:
        agent.invoke(Command(resume=True), config)
    assert trip.value.reason == "approval_rejected"
    assert "customer withdrew" in str(trip.value)
    assert counter.count("refund") == 0


def test_without_a_checkpointer_approval_required_reaches_the_caller_and_a_rerun_goes_ahead(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = Breaker(approvals=db, tools={"refund": ToolPolicy(irreversible=True)})
    model = ScriptedChatModel([REFUND, REFUND, "done"])
    agent = create_agent(model, [refund_tool(counter, declared=False)], middleware=[LoopGuardMiddleware(breaker)])
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("order-A-17"):
        agent.invoke(user())
    assert waiting.value.reason == "approval_required" and counter.count() == 0
    SQLiteApprovals(db).decide(str(waiting.value.request_id), approve=True, by="alice")
    with breaker.run("order-A-17"):  # the same run id: the same call finds its approval
        result = agent.invoke(user())
    assert counter.count("refund") == 1 and result["messages"][-1].content == "done"


def test_async_agent_suspends_and_resumes(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent = agent_with_checkpointer(ScriptedChatModel([REFUND, "ok"]), [refund_tool(counter)], Breaker(approvals=db))
    config = {"configurable": {"thread_id": "ticket-5"}}

    async def scenario() -> Any:
        rid = request_id(await agent.ainvoke(user(), config))
        assert counter.count() == 0
        SQLiteApprovals(db).decide(rid, approve=True, by="alice", args={"order": "A-17", "amount_eur": 5})
        return await agent.ainvoke(Command(resume=True), config)

    asyncio.run(scenario())
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 5})]


def test_mcp_annotations_in_tool_metadata_are_declared(tmp_path: Path) -> None:
    counter = BodyCounter()

    @tool
    def read_invoice(number: str) -> str:
        """Read an invoice."""
        counter.hit("read_invoice")
        return "invoice"

    # What langchain-mcp-adapters puts in BaseTool.metadata: the MCP annotations (model_dump) and _meta.
    read_invoice.metadata = {"title": None, "readOnlyHint": True, "destructiveHint": False, "_meta": {"x": 1}}
    breaker = Breaker()
    agent = create_agent(
        ScriptedChatModel([("read_invoice", {"number": "7"}), "ok"]),
        [read_invoice],
        middleware=[LoopGuardMiddleware(breaker)],
    )
    agent.invoke(user())
    policy = breaker.tool_policy("read_invoice")
    assert policy.read_only is True and policy.destructive is False and not policy.irreversible
    assert counter.count() == 1


def test_breaker_tools_win_over_the_framework_declaration(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(tools={"refund": ToolPolicy(irreversible=False)})
    agent = create_agent(
        ScriptedChatModel([REFUND, "ok"]), [refund_tool(counter)], middleware=[LoopGuardMiddleware(breaker)]
    )
    agent.invoke(user())
    assert counter.count("refund") == 1


def test_callback_handler_gates_from_tool_metadata_and_lets_approval_reach_the_caller(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = Breaker(approvals=db)
    handler = LoopGuardCallbackHandler(breaker)
    model = ScriptedChatModel([REFUND, REFUND, "done"])
    agent = create_agent(model, [refund_tool(counter)])
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("cb-1"):
        agent.invoke(user(), config={"callbacks": [handler]})
    assert counter.count() == 0
    cli("approve", str(waiting.value.request_id), "--db", db, "--by", "alice")
    with breaker.run("cb-1"):
        agent.invoke(user(), config={"callbacks": [handler]})
    assert counter.count("refund") == 1


def test_callback_handler_refuses_edited_arguments_it_cannot_apply(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = Breaker(approvals=db)
    handler = LoopGuardCallbackHandler(breaker)
    agent = create_agent(ScriptedChatModel([REFUND, REFUND, "done"]), [refund_tool(counter)])
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("cb-2"):
        agent.invoke(user(), config={"callbacks": [handler]})
    SQLiteApprovals(db).decide(
        str(waiting.value.request_id), approve=True, by="a", args={"order": "A", "amount_eur": 1}
    )
    with pytest.raises(ApprovalError, match="edited arguments"), breaker.run("cb-2"):
        agent.invoke(user(), config={"callbacks": [handler]})
    assert counter.count() == 0


def test_each_call_runs_under_its_own_tools_declaration_when_two_hooks_share_a_name() -> None:
    # Two agents on one breaker, each with its own tool object named "deploy": one gated, one not. Each hook
    # declares the tool it is about to run, so the gated one is gated whatever the other declared in between.
    from langchain_core.tools import StructuredTool

    from loopguard_langchain._approval import ToolDeclarations

    def run(target: str) -> str:
        """Deploy."""
        return target

    gated = StructuredTool.from_function(run, name="deploy", metadata={"loopguard": {"irreversible": True}})
    plain = StructuredTool.from_function(run, name="deploy", metadata={"loopguard": {"irreversible": False}})

    breaker = Breaker()
    first, second = ToolDeclarations(breaker), ToolDeclarations(breaker)
    seen = []
    for hook, deploy in [(first, gated), (second, plain), (first, gated), (second, plain), (first, gated)]:
        hook(deploy)
        seen.append(breaker.tool_policy("deploy").irreversible)
    assert seen == [True, False, True, False, True]
