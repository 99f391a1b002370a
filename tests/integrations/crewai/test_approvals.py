"""Approval gates in CrewAI (``guard_crew`` and ``guarded_tool``) on the real runtime with the scripted LLM: the
gated body never runs before a person decides; ``ApprovalRequired`` reaches the caller of ``kickoff`` (through
CrewAI's ``HookAborted`` channel); a decision from another process and a kickoff under the same run id run the
body once, with the person's edited arguments if any."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.hooks import HookAborted
from crewai.tools import BaseTool, tool
from pydantic import BaseModel, Field

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import SQLiteApprovals
from loopguard_core.testing import BodyCounter
from loopguard_crewai import CrewAIApprovalRequired, guard_crew, guarded_tool
from loopguard_crewai.testing import ScriptedLLM

from .helpers import one_agent_crew

REFUND = ("refund", {"order": "A-17", "amount_eur": 30})
PATHS = pytest.mark.parametrize("native", [True, False], ids=["native", "react"])


def refund_tool(counter: BodyCounter) -> Any:
    @tool("refund")
    def refund(order: str, amount_eur: int) -> str:
        """Refund part of an order."""
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur} EUR on {order}"

    return refund


def gated(db: str, **options: Any) -> Breaker:
    return Breaker(approvals=db, tools={"refund": ToolPolicy(irreversible=True)}, **options)


def kickoff_waiting(crew: Any, breaker: Breaker, run_id: str, *, on_trip: str = "raise") -> ApprovalRequired:
    with pytest.raises(ApprovalRequired) as waiting, guard_crew(breaker, run_id=run_id, on_trip=on_trip):
        crew.kickoff()
    assert isinstance(waiting.value, CrewAIApprovalRequired) and isinstance(waiting.value, HookAborted)
    assert waiting.value.reason == "approval_required" and waiting.value.tool == "refund"
    return waiting.value


@PATHS
def test_approval_from_the_cli_and_a_second_kickoff_run_the_body_once(native: bool, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    crew = one_agent_crew([refund_tool(counter)], ScriptedLLM([REFUND, REFUND, "refunded"], native=native))
    waiting = kickoff_waiting(crew, breaker, "order-A-17")
    assert counter.count() == 0

    subprocess.run(
        [sys.executable, "-m", "loopguard_core", "approvals", "approve", str(waiting.request_id), "--db", db],
        check=True,
        capture_output=True,
    )
    with guard_crew(breaker, run_id="order-A-17"):  # the same run id: the same call finds its approval
        result = crew.kickoff()
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 30})]
    assert "refunded" in str(result)


@PATHS
def test_edited_arguments_are_what_the_body_receives(native: bool, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    crew = one_agent_crew([refund_tool(counter)], ScriptedLLM([REFUND, REFUND, "done"], native=native))
    waiting = kickoff_waiting(crew, breaker, "order-2")
    SQLiteApprovals(db).decide(str(waiting.request_id), approve=True, by="a", args={"order": "A-17", "amount_eur": 15})
    with guard_crew(breaker, run_id="order-2"):
        crew.kickoff()
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 15})]


@PATHS
def test_rejection_reason_reaches_the_model_under_steer(native: bool, tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    llm = ScriptedLLM([REFUND, REFUND, "understood"], native=native)
    crew = one_agent_crew([refund_tool(counter)], llm)
    waiting = kickoff_waiting(crew, breaker, "order-3", on_trip="steer")
    SQLiteApprovals(db).decide(str(waiting.request_id), approve=False, by="bob", reason="refunded on Monday")
    with guard_crew(breaker, run_id="order-3", on_trip="steer"):
        result = crew.kickoff()
    assert counter.count() == 0 and "understood" in str(result)
    assert "refunded on Monday" in str(llm.seen[-1])


def test_rejection_reaches_the_caller_otherwise(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    crew = one_agent_crew([refund_tool(counter)], ScriptedLLM([REFUND, REFUND, "x"]))
    waiting = kickoff_waiting(crew, breaker, "order-4")
    SQLiteApprovals(db).decide(str(waiting.request_id), approve=False, by="bob", reason="wrong order")
    with pytest.raises(LoopGuardTripped) as trip, guard_crew(breaker, run_id="order-4"):
        crew.kickoff()
    assert trip.value.reason == "approval_rejected" and "wrong order" in str(trip.value)
    assert counter.count() == 0


def test_approval_wait_seconds_lets_a_person_approve_while_the_crew_waits(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db, approval_wait_seconds=10)
    crew = one_agent_crew([refund_tool(counter)], ScriptedLLM([REFUND, "done"]))
    stop = threading.Event()

    def person() -> None:
        queue = SQLiteApprovals(db)
        while not stop.is_set():
            for request in queue.list("pending"):
                queue.decide(request.id, approve=True, by="alice")
                return
            time.sleep(0.02)

    worker = threading.Thread(target=person)
    worker.start()
    try:
        with guard_crew(breaker):
            crew.kickoff()
    finally:
        stop.set()
        worker.join()
    assert counter.count("refund") == 1


class RefundInput(BaseModel):
    order: str
    amount_eur: int


def test_tool_metadata_declares_the_gate(tmp_path: Path) -> None:
    counter = BodyCounter()

    class Refund(BaseTool):
        name: str = "refund"
        description: str = "Refund part of an order."
        args_schema: type[BaseModel] = RefundInput
        metadata: dict[str, Any] = Field(default_factory=lambda: {"loopguard": {"irreversible": True}})

        def _run(self, order: str, amount_eur: int) -> str:
            counter.hit("refund")
            return "refunded"

    breaker = Breaker(approvals=str(tmp_path / "q.db"))
    crew = one_agent_crew([Refund()], ScriptedLLM([REFUND, "x"]))
    kickoff_waiting(crew, breaker, "order-5")
    assert counter.count() == 0 and breaker.tool_policy("refund").irreversible


def test_guarded_tool_alone_gates_and_runs_edited_arguments(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    counter = BodyCounter()
    breaker = gated(db)
    refund = guarded_tool(breaker)(refund_tool(counter))
    crew = one_agent_crew([refund], ScriptedLLM([REFUND, REFUND, "done"]))
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("order-6"):
        crew.kickoff()
    assert counter.count() == 0
    SQLiteApprovals(db).decide(
        str(waiting.value.request_id), approve=True, by="a", args={"order": "B", "amount_eur": 1}
    )
    with breaker.run("order-6"):
        crew.kickoff()
    assert counter.runs == [("refund", {"order": "B", "amount_eur": 1})]
