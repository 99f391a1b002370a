"""Approval gates through Pydantic AI's deferred tools (``LoopGuardCapability`` + ``approvals_for``), on the real
agent loop with the scripted model: the run ends with ``DeferredToolRequests`` carrying loopguard's request, a
person decides in loopguard's queue (another process here), and the next run acts on that one decision."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import SQLiteApprovals
from loopguard_core.testing import BodyCounter
from loopguard_pydantic_ai import LoopGuardCapability, approvals_for
from loopguard_pydantic_ai.testing import ScriptedModel

REFUND = ("refund", {"order": "A-17", "amount_eur": 30})
VARIANTS = ("requires_approval", "tool_policy")


def make_agent(
    variant: str, model: ScriptedModel, counter: BodyCounter, db: str, *, on_trip: str = "raise", **breaker: Any
) -> tuple[Agent[None, Any], Breaker]:
    """``requires_approval``: Pydantic AI's own flag, declared to the breaker by the capability (no tools=)."""
    tools = {"refund": ToolPolicy(irreversible=True)} if variant == "tool_policy" else None
    guard = Breaker(approvals=db, tools=tools, **breaker)
    agent: Agent[None, Any] = Agent(
        model, output_type=[str, DeferredToolRequests], capabilities=[LoopGuardCapability(guard, on_trip=on_trip)]
    )

    @agent.tool_plain(requires_approval=variant == "requires_approval")
    def refund(order: str, amount_eur: int) -> str:
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur} EUR on {order}"

    return agent, guard


def deferred_request(result: Any) -> str:
    assert isinstance(result.output, DeferredToolRequests)
    (call,) = result.output.approvals
    info = result.output.metadata[call.tool_call_id]["loopguard"]
    assert info["tool"] == "refund" and info["spend"]["turns"] == 1
    return str(info["request_id"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_run_ends_deferred_and_a_cli_approval_runs_the_body_once(variant: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent, breaker = make_agent(variant, ScriptedModel([REFUND, "refunded"]), counter, db)
    first = agent.run_sync("refund A-17")
    rid = deferred_request(first)
    assert counter.count() == 0
    assert approvals_for(breaker, first).approvals == {}  # nobody decided yet

    subprocess.run(
        [sys.executable, "-m", "loopguard_core", "approvals", "approve", rid, "--db", db, "--by", "alice"],
        check=True,
        capture_output=True,
    )
    results = approvals_for(breaker, first)
    second = agent.run_sync(message_history=first.all_messages(), deferred_tool_results=results)
    assert second.output == "refunded"
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 30})]
    assert SQLiteApprovals(db).get(rid).status == "used"  # type: ignore[union-attr]


@pytest.mark.parametrize("variant", VARIANTS)
def test_edited_arguments_are_what_the_body_receives(variant: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent, breaker = make_agent(variant, ScriptedModel([REFUND, "ok"]), counter, db)
    first = agent.run_sync("refund")
    SQLiteApprovals(db).decide(deferred_request(first), approve=True, by="a", args={"order": "A-17", "amount_eur": 15})
    agent.run_sync(message_history=first.all_messages(), deferred_tool_results=approvals_for(breaker, first))
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 15})]


@pytest.mark.parametrize("variant", VARIANTS)
def test_rejection_reason_reaches_the_model_under_steer(variant: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    model = ScriptedModel([REFUND, "understood"])
    agent, breaker = make_agent(variant, model, counter, db, on_trip="steer")
    first = agent.run_sync("refund")
    SQLiteApprovals(db).decide(deferred_request(first), approve=False, by="bob", reason="refunded on Monday")
    second = agent.run_sync(message_history=first.all_messages(), deferred_tool_results=approvals_for(breaker, first))
    assert second.output == "understood" and counter.count() == 0
    assert "refunded on Monday" in str(model.seen[-1][-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_rejection_reaches_the_caller_otherwise(variant: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent, breaker = make_agent(variant, ScriptedModel([REFUND, "x"]), counter, db)
    first = agent.run_sync("refund")
    SQLiteApprovals(db).decide(deferred_request(first), approve=False, by="bob", reason="not this customer")
    with pytest.raises(LoopGuardTripped) as trip:
        agent.run_sync(message_history=first.all_messages(), deferred_tool_results=approvals_for(breaker, first))
    assert trip.value.reason == "approval_rejected" and "not this customer" in str(trip.value)
    assert counter.count() == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_approving_in_pydantic_ai_alone_does_not_run_the_gated_body(variant: str, tmp_path: Path) -> None:
    """One decision, loopguard's: a DeferredToolResults approval without one in the queue defers again."""
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent, _ = make_agent(variant, ScriptedModel([REFUND, "x"]), counter, db)
    first = agent.run_sync("refund")
    rid = deferred_request(first)
    (call,) = first.output.approvals
    forged = DeferredToolResults(approvals={call.tool_call_id: ToolApproved()})
    second = agent.run_sync(message_history=first.all_messages(), deferred_tool_results=forged)
    assert isinstance(second.output, DeferredToolRequests) and counter.count() == 0
    assert second.output.metadata[call.tool_call_id]["loopguard"]["request_id"] == rid  # the same request


@pytest.mark.parametrize("variant", VARIANTS)
def test_approval_wait_seconds_lets_a_person_approve_while_the_run_waits(variant: str, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    agent, _ = make_agent(variant, ScriptedModel([REFUND, "done"]), counter, db, approval_wait_seconds=10)
    stop = threading.Event()

    def person() -> None:  # another connection to the queue, as a person at a terminal
        queue = SQLiteApprovals(db)
        while not stop.is_set():
            for request in queue.list("pending"):
                queue.decide(request.id, approve=True, by="alice")
                return
            time.sleep(0.02)

    worker = threading.Thread(target=person)
    worker.start()
    try:
        result = agent.run_sync("refund")
    finally:
        stop.set()
        worker.join()
    assert result.output == "done" and counter.count("refund") == 1


def test_an_agent_without_deferred_output_raises_approval_required_to_the_caller(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(approvals=str(tmp_path / "q.db"), tools={"refund": ToolPolicy(irreversible=True)})
    agent = Agent(ScriptedModel([REFUND, "x"]), capabilities=[LoopGuardCapability(breaker)])

    @agent.tool_plain
    def refund(order: str, amount_eur: int) -> str:
        counter.hit("refund")
        return "refunded"

    with pytest.raises(ApprovalRequired) as waiting:
        agent.run_sync("refund")
    assert waiting.value.request_id and counter.count() == 0


def test_tool_metadata_declares_the_gate(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(approvals=str(tmp_path / "q.db"))
    agent = Agent(
        ScriptedModel([REFUND, "x"]),
        output_type=[str, DeferredToolRequests],
        capabilities=[LoopGuardCapability(breaker)],
    )

    @agent.tool_plain(metadata={"loopguard": {"irreversible": True}})
    def refund(order: str, amount_eur: int) -> str:
        counter.hit("refund")
        return "refunded"

    assert isinstance(agent.run_sync("refund").output, DeferredToolRequests)
    assert counter.count() == 0 and breaker.tool_policy("refund").irreversible


def test_an_approval_settled_in_a_run_that_stopped_never_lets_another_call_under_its_id_run() -> None:
    # A server that numbers calls per answer ("refund:0" in every answer). A person approves one refund and
    # rejects a wipe in the same answer; the run stops on the rejection before the approved refund runs. Later,
    # another conversation's "refund:0" (5000 EUR) is rejected: resumed, it must be refused, not run on the
    # first refund's approval.
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from loopguard_core.approvals import MemoryApprovals

    answers: list[ModelResponse] = []
    breaker = Breaker(approvals=MemoryApprovals())
    agent: Agent[None, Any] = Agent(
        FunctionModel(lambda messages, info: answers.pop(0)),
        output_type=[str, DeferredToolRequests],
        capabilities=[LoopGuardCapability(breaker)],
    )
    counter = BodyCounter()

    @agent.tool_plain(requires_approval=True)
    def refund(order: str, amount_eur: int) -> str:
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur}"

    @agent.tool_plain(requires_approval=True)
    def wipe(table: str) -> str:
        counter.hit("wipe", {"table": table})
        return "wiped"

    def both() -> ModelResponse:
        return ModelResponse(
            parts=[
                ToolCallPart("refund", {"order": "A", "amount_eur": 10}, tool_call_id="refund:0"),
                ToolCallPart("wipe", {"table": "t"}, tool_call_id="wipe:0"),
            ]
        )

    answers[:] = [both()]
    with breaker.run("s"):
        agent.run_sync("go")
    for request in breaker.approvals.list("pending"):
        breaker.decide(request.id, approve=request.tool == "refund", by="alice")
    answers[:] = [both()]
    with pytest.raises(LoopGuardTripped) as stopped, breaker.run("s"):
        agent.run_sync("go")
    assert stopped.value.reason == "approval_rejected"

    answers[:] = [
        ModelResponse(parts=[ToolCallPart("refund", {"order": "B", "amount_eur": 5000}, tool_call_id="refund:0")]),
        ModelResponse(parts=[TextPart("done")]),
    ]
    later = agent.run_sync("refund B")
    (pending,) = breaker.approvals.list("pending")
    breaker.decide(pending.id, approve=False, by="alice", reason="no")
    with pytest.raises(LoopGuardTripped) as refused:
        agent.run_sync(message_history=later.all_messages(), deferred_tool_results=approvals_for(breaker, later))
    assert refused.value.reason == "approval_rejected"
    assert counter.count("refund") == 0 and counter.count("wipe") == 0
