"""The breaker's approval gate: a gated call never runs before a person approves it, in this process or another."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import ApprovalRequired, Breaker, Ledger, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import MemoryApprovals, SQLiteApprovals
from loopguard_core.testing import BodyCounter

from .._build import type_error
from .conftest import WallClock

REFUND = {"order": "A-17", "amount_eur": 20}


def gated(**options: Any) -> Breaker:
    tools = {"refund": ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['amount_eur']} EUR")}
    options.setdefault("approvals", MemoryApprovals())
    return Breaker(tools=tools, **options)


def call(breaker: Breaker, bodies: BodyCounter, args: dict[str, Any] = REFUND, **kw: Any) -> Any:
    """What an adapter does: check, then run the body with the approved (possibly edited) arguments."""
    approved = breaker.before_tool("refund", args, **kw)
    run_with = approved.args() if approved is not None and approved.args() is not None else args
    bodies.hit("refund", run_with)
    result = f"refunded {run_with['amount_eur']} EUR"
    breaker.after_tool("refund", args, result=result, **kw)
    return result


def test_a_gated_call_waits_for_a_person_and_then_runs_once() -> None:
    breaker, bodies = gated(), BodyCounter()
    with breaker.run("order-A-17"):
        with pytest.raises(ApprovalRequired) as asked:
            call(breaker, bodies, agent="support")
        assert bodies.count("refund") == 0
        assert breaker.usage().tool_calls == 0  # not counted until it runs
        request = breaker.approvals.get(asked.value.request_id or "")
        assert request is not None
        assert (request.tool, request.agent, request.preview) == ("refund", "support", "refund 20 EUR")
        assert request.session_id == "order-A-17" and "cost_usd" in request.spend
        assert "refund" in str(asked.value) and asked.value.request_id in str(asked.value)
        with pytest.raises(ApprovalRequired) as again:  # asking again does not queue twice
            call(breaker, bodies)
        assert again.value.request_id == asked.value.request_id
        assert len(breaker.approvals.list("pending")) == 1

        breaker.decide(asked.value.request_id or "", approve=True, by="alice")
        assert call(breaker, bodies) == "refunded 20 EUR"
        assert bodies.count("refund") == 1
        assert breaker.usage().tool_calls == 1
        # the approval was used: the same refund again needs a person again
        with pytest.raises(ApprovalRequired):
            call(breaker, bodies)
        assert bodies.count("refund") == 1


def test_a_person_may_edit_the_arguments() -> None:
    breaker, bodies = gated(), BodyCounter()
    with pytest.raises(ApprovalRequired) as asked:
        call(breaker, bodies)
    breaker.decide(asked.value.request_id or "", approve=True, by="alice", args={**REFUND, "amount_eur": 15})
    assert call(breaker, bodies) == "refunded 15 EUR"


def test_a_rejection_reaches_the_model_with_its_reason() -> None:
    breaker, bodies = gated(), BodyCounter()
    with pytest.raises(ApprovalRequired) as asked:
        call(breaker, bodies)
    breaker.decide(asked.value.request_id or "", approve=False, by="bob", reason="already refunded on Monday")
    with pytest.raises(LoopGuardTripped) as refused:
        call(breaker, bodies)
    trip = refused.value
    assert trip.reason == "approval_rejected" and not isinstance(trip, ApprovalRequired)
    assert trip.steerable
    assert "already refunded on Monday" in trip.for_model() and "bob" in str(trip)
    assert "already refunded on Monday" in breaker.steer(trip)  # the adapters' on_trip="steer"
    assert bodies.count("refund") == 0
    with pytest.raises(ApprovalRequired):  # asking again asks a person again
        call(breaker, bodies)


def test_nobody_deciding_in_time_refuses_the_call() -> None:
    wall = WallClock()
    breaker, bodies = gated(approvals=MemoryApprovals(wall_clock=wall), approval_expire_seconds=600), BodyCounter()
    with pytest.raises(ApprovalRequired):
        call(breaker, bodies)
    wall.now += 601
    with pytest.raises(LoopGuardTripped, match="no decision within 600") as refused:
        call(breaker, bodies)
    assert refused.value.reason == "approval_rejected"
    assert bodies.count("refund") == 0


def test_waiting_in_process_until_another_thread_decides() -> None:
    breaker, bodies = gated(approval_wait_seconds=10), BodyCounter()

    def person() -> None:
        while not breaker.approvals.list("pending"):
            time.sleep(0.01)
        breaker.decide(breaker.approvals.list("pending")[0].id, approve=True, by="alice")

    helper = threading.Thread(target=person)
    helper.start()
    assert call(breaker, bodies) == "refunded 20 EUR"
    helper.join()


async def test_the_async_path_gates_the_same_way() -> None:
    breaker = gated(approval_wait_seconds=0.2)
    with pytest.raises(ApprovalRequired) as asked:
        await breaker.abefore_tool("refund", REFUND)
    breaker.decide(asked.value.request_id or "", approve=True, by="alice")
    approved = await breaker.abefore_tool("refund", REFUND)
    assert approved is not None and approved.status == "approved"


def test_ungated_tools_pay_nothing_and_return_none() -> None:
    breaker = gated()
    assert breaker.before_tool("search", {"q": "x"}) is None
    assert breaker.tool_policy("search").needs_approval is False


def test_framework_declarations_gate_too() -> None:
    breaker = Breaker(approvals=MemoryApprovals())
    breaker.declare_tool("delete_repo", {"requires_approval": True})
    with pytest.raises(ApprovalRequired):
        breaker.before_tool("delete_repo", {"name": "prod"})


def test_every_request_and_decision_is_a_ledger_row(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.db")
    breaker, bodies = gated(ledger=ledger, approvals=None), BodyCounter()
    with breaker.run("order-A-17"):
        with pytest.raises(ApprovalRequired) as asked:
            call(breaker, bodies, agent="support")
        breaker.decide(asked.value.request_id or "", approve=True, by="alice")
        call(breaker, bodies, agent="support")
    rid = asked.value.request_id
    rows = [r for r in ledger.rows("order-A-17") if r.origin == "approval"]
    assert [(r.breach_reason, r.agent, r.passed) for r in rows] == [
        (f"requested:{rid}", "support", True),
        (f"approved:{rid}", "alice", True),
    ]
    assert isinstance(breaker.approvals, SQLiteApprovals)  # the default queue lives in the ledger's file
    assert breaker.approvals.path == Path(ledger.url)
    assert ledger.verify().ok


def test_an_approval_from_another_process_resumes_the_run(tmp_path: Path) -> None:
    """The run waits in this process; a person approves with the CLI from another one."""
    db = tmp_path / "runs.db"
    breaker, bodies = gated(ledger=Ledger(db), approvals=None, approval_wait_seconds=60), BodyCounter()
    person = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from loopguard_core.approvals import SQLiteApprovals
                from loopguard_core.cli import main
                queue = SQLiteApprovals({str(db)!r})
                while not queue.list("pending"):
                    time.sleep(0.05)
                main(["approvals", "approve", queue.list("pending")[0].id, "--db", {str(db)!r}, "--by", "carol"])
                """
            ),
        ],
    )
    try:
        assert call(breaker, bodies) == "refunded 20 EUR"
    finally:
        person.wait(timeout=60)
    assert person.returncode == 0
    assert bodies.count("refund") == 1
    decisions = [r.agent for r in Ledger(db, read_only=True).rows() if (r.breach_reason or "").startswith("approved")]
    assert decisions == ["carol"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"approvals": 3}, TypeError, "approvals must be"),
        ({"approval_wait_seconds": -1}, ValueError, "approval_wait_seconds"),
        ({"approval_wait_seconds": "1"}, TypeError, "approval_wait_seconds"),
        ({"approval_expire_seconds": float("nan")}, ValueError, "approval_expire_seconds"),
    ],
)
def test_bad_options_say_what_to_fix(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=type_error(match) if error is TypeError else match):
        Breaker(**kwargs)


def test_a_rejection_is_a_trip_in_the_ledger_and_on_trip(tmp_path: Path) -> None:
    ledger, seen = Ledger(tmp_path / "runs.db"), []
    breaker, bodies = gated(ledger=ledger, approvals=None, on_trip=seen.append), BodyCounter()
    with breaker.run("r"):
        with pytest.raises(ApprovalRequired) as asked:
            call(breaker, bodies)
        breaker.decide(asked.value.request_id or "", approve=False, by="bob", reason="no")
        with pytest.raises(LoopGuardTripped):
            call(breaker, bodies)
    assert [t.reason for t in seen] == ["approval_rejected"]  # waiting is not a trip; the rejection is
    trips = [r.breach_reason for r in ledger.rows("r") if r.is_trip]
    assert trips == ["approval_rejected"]


def test_observers_see_the_request() -> None:
    seen: list[Any] = []
    breaker = gated(on_event=seen.append)
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, agent="support")
    event = seen[-1]
    assert (event.phase, event.name, event.agent) == ("approval_requested", "refund", "support")
    assert event.facts == {"request_id": asked.value.request_id}


def test_a_checkpoint_row_marks_where_the_run_stood_before_the_irreversible_call(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "runs.db")
    breaker, bodies = gated(ledger=ledger, approvals=None), BodyCounter()
    with breaker.run("r"):
        breaker.before_tool("search", {"q": "order"})
        breaker.after_tool("search", {"q": "order"}, result="A-17")
        with pytest.raises(ApprovalRequired) as asked:
            call(breaker, bodies)
        breaker.decide(asked.value.request_id or "", approve=True, by="alice")
        call(breaker, bodies)
    marks = [(r.breach_reason, r.tool) for r in ledger.rows("r") if r.origin == "checkpoint"]
    assert marks == [
        ("start turns=0 tokens=0 cost_usd=0.000000 tool_calls=0", None),  # the run opened: its limits (none here)
        ("before:refund turns=0 tokens=0 cost_usd=0.000000 tool_calls=2", "refund"),
    ]


def test_a_new_process_resuming_the_run_by_id_finds_its_request() -> None:
    queue = MemoryApprovals()
    first = gated(approvals=queue)  # its own random scope, as every Breaker() without one
    with first.run("order-A-17"), pytest.raises(ApprovalRequired) as asked:
        call(first, BodyCounter())
    queue.decide(asked.value.request_id or "", approve=True, by="alice")
    restarted, bodies = gated(approvals=queue), BodyCounter()  # another object: another random scope
    with restarted.run("order-A-17"):
        assert call(restarted, bodies) == "refunded 20 EUR"
    assert bodies.count("refund") == 1


def test_a_caller_that_cannot_apply_edits_leaves_the_approval_unused() -> None:
    from loopguard_core import ApprovalError

    breaker = gated()
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, call_id="c1")
    rid = asked.value.request_id or ""
    breaker.decide(rid, approve=True, by="alice", args={**REFUND, "amount_eur": 5})
    with pytest.raises(ApprovalError, match="edited arguments"):
        breaker.before_tool("refund", REFUND, call_id="c1", accept_edits=False)
    assert breaker.approvals.get(rid).status == "approved"  # type: ignore[union-attr]
    approved = breaker.before_tool("refund", REFUND, call_id="c1")
    assert approved is not None and approved.args() == {**REFUND, "amount_eur": 5}


def test_the_same_call_checked_twice_asks_a_person_once() -> None:
    breaker = gated()
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, call_id="c1")
    breaker.decide(asked.value.request_id or "", approve=True, by="alice")
    first = breaker.before_tool("refund", REFUND, call_id="c1")  # e.g. guard_node
    second = breaker.before_tool("refund", REFUND, call_id="c1")  # then the tool node: the same call
    assert first is not None and second is not None and first.id == second.id
    assert breaker.approvals.list("pending") == []


def test_the_second_check_of_an_edited_call_with_the_edits_uses_the_same_approval() -> None:
    # guard_node approves, writes the person's edits into the call, and the tool node checks that call
    breaker = gated()
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, call_id="c1")
    edited = {**REFUND, "amount_eur": 15}
    breaker.decide(asked.value.request_id or "", approve=True, by="alice", args=edited)
    first = breaker.before_tool("refund", REFUND, call_id="c1")
    second = breaker.before_tool("refund", edited, call_id="c1")
    assert first is not None and second is not None and first.id == second.id
    assert breaker.approvals.list("pending") == []


@pytest.mark.parametrize(
    ("tool", "args"),
    [("refund", {**REFUND, "amount_eur": 2_000}), ("wipe", {"table": "orders"})],
    ids=["other-arguments", "other-tool"],
)
def test_an_approval_never_covers_another_call_under_the_same_id(tool: str, args: dict[str, Any]) -> None:
    # A node that rewrote the call after the guard approved it, or a server that reuses ids (llama.cpp sends one
    # id for all calls; Kimi numbers them per answer): the other call waits for a person of its own.
    tools = {"refund": ToolPolicy(irreversible=True), "wipe": ToolPolicy(irreversible=True)}
    breaker = Breaker(tools=tools, approvals=MemoryApprovals())
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, call_id="call_0")
    breaker.decide(asked.value.request_id or "", approve=True, by="alice")
    assert breaker.before_tool("refund", REFUND, call_id="call_0") is not None
    with pytest.raises(ApprovalRequired) as other:
        breaker.before_tool(tool, args, call_id="call_0")
    assert other.value.request_id != asked.value.request_id
    assert other.value.tool == tool


def test_the_same_call_id_in_the_models_next_answer_asks_a_person_again() -> None:
    breaker, bodies = gated(), BodyCounter()
    with breaker.run("r"):
        breaker.before_model(model="m")
        with pytest.raises(ApprovalRequired) as asked:
            call(breaker, bodies, call_id="call_0")
        breaker.decide(asked.value.request_id or "", approve=True, by="alice")
        assert call(breaker, bodies, call_id="call_0") == "refunded 20 EUR"
        breaker.before_model(model="m")  # the model answers again, with the same refund under the same id
        with pytest.raises(ApprovalRequired):
            call(breaker, bodies, call_id="call_0")
        assert bodies.count("refund") == 1
        assert breaker.usage().tool_calls == 1


@pytest.mark.parametrize("again", ["after another model call", "retried after it failed"])
def test_an_approved_call_checked_again_is_not_asked_again(again: str) -> None:
    # The same call checked again: after another model call of the run before its outcome (an LLM check in a tool
    # wrapper, then a second guard), or retried after it failed (LangGraph RetryPolicy on the tools node).
    breaker = gated()
    with breaker.run("r"):
        breaker.before_model(model="m")
        with pytest.raises(ApprovalRequired) as asked:
            breaker.before_tool("refund", REFUND, call_id="c1")
        breaker.decide(asked.value.request_id or "", approve=True, by="alice")
        first = breaker.before_tool("refund", REFUND, call_id="c1")
        if again == "after another model call":
            breaker.before_model(model="m", agent="checker")
        else:
            breaker.after_tool("refund", REFUND, error=TimeoutError("payment API timed out"), call_id="c1")
        second = breaker.before_tool("refund", REFUND, call_id="c1")
        assert first is not None and second is not None and first.id == second.id
        assert breaker.usage().tool_calls == 1
