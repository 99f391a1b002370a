"""Approval gates for Anthropic SDK clients under ``guard()`` (the beta tool runner and your own loop), on the real
client over the scripted API: a gated ``tool_use`` raises ``ApprovalRequired`` before the tool runner can run it;
a person decides from another process; asking again under the same run id runs the tool once, with the edited
input if the person gave one; a rejection is told to the model (steer) or reaches the caller."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

from anthropic import beta_async_tool, beta_tool

from loopguard_anthropic import guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import ApprovalError, ApprovalRequired, Breaker, LoopGuardTripped, ToolPolicy
from loopguard_core.approvals import SQLiteApprovals
from loopguard_core.testing import BodyCounter

MODEL = "claude-sonnet-4-6"
REFUND = ("refund", {"order": "A-17", "amount_eur": 30})
PROMPT = [{"role": "user", "content": "refund A-17"}]
GATED = {"refund": ToolPolicy(irreversible=True)}


def refund_tool(counter: BodyCounter) -> Any:
    @beta_tool
    def refund(order: str, amount_eur: int) -> str:
        """Refund part of an order."""
        counter.hit("refund", {"order": order, "amount_eur": amount_eur})
        return f"refunded {amount_eur} EUR on {order}"

    return refund


def run_tools(client: Any, counter: BodyCounter) -> Any:
    runner = client.beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[refund_tool(counter)]
    )
    return runner.until_done()


def waiting_in_runner(client: Any, breaker: Breaker, counter: BodyCounter, run_id: str) -> str:
    with pytest.raises(ApprovalRequired) as waiting, breaker.run(run_id):
        run_tools(client, counter)
    assert counter.count() == 0 and waiting.value.tool == "refund"
    return str(waiting.value.request_id)


def test_tool_runner_never_runs_a_gated_tool_and_a_cli_approval_runs_it_once(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api, counter = ScriptedAPI([REFUND, REFUND, "refunded"]), BodyCounter()
    breaker = Breaker(approvals=db)
    client = guard(api.client(), breaker, tools={"refund": {"loopguard": {"irreversible": True}}})  # declared here
    rid = waiting_in_runner(client, breaker, counter, "ticket-1")
    subprocess.run(
        [sys.executable, "-m", "loopguard_core", "approvals", "approve", rid, "--db", db, "--by", "alice"],
        check=True,
        capture_output=True,
    )
    with breaker.run("ticket-1"):  # the same run id: the same call finds its approval
        final = run_tools(client, counter)
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 30})]
    assert final.content[0].text == "refunded"


def test_edited_input_is_what_the_tool_runner_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api, counter = ScriptedAPI([REFUND, REFUND, "ok"]), BodyCounter()
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.client(), breaker)
    rid = waiting_in_runner(client, breaker, counter, "ticket-2")
    SQLiteApprovals(db).decide(rid, approve=True, by="alice", args={"order": "A-17", "amount_eur": 15})
    with breaker.run("ticket-2"):
        run_tools(client, counter)
    assert counter.runs == [("refund", {"order": "A-17", "amount_eur": 15})]
    assert "refunded 15 EUR on A-17" in str(api.bodies[-1]["messages"])  # what really ran goes back to the model


def test_rejection_reason_reaches_the_model_under_steer(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api, counter = ScriptedAPI([REFUND, REFUND, "understood"]), BodyCounter()
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.client(), breaker, on_trip="steer")
    rid = waiting_in_runner(client, breaker, counter, "ticket-3")
    SQLiteApprovals(db).decide(rid, approve=False, by="bob", reason="refunded on Monday")
    with breaker.run("ticket-3"):
        final = run_tools(client, counter)
    assert counter.count() == 0 and final.content[0].text == "understood"
    assert "refunded on Monday" in str(api.bodies[-1]["messages"])


def test_rejection_reaches_the_caller_otherwise(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api, counter = ScriptedAPI([REFUND, REFUND, "x"]), BodyCounter()
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.client(), breaker)
    rid = waiting_in_runner(client, breaker, counter, "ticket-4")
    SQLiteApprovals(db).decide(rid, approve=False, by="bob", reason="wrong order")
    with pytest.raises(LoopGuardTripped) as trip, breaker.run("ticket-4"):
        run_tools(client, counter)
    assert trip.value.reason == "approval_rejected" and "wrong order" in str(trip.value)
    assert counter.count() == 0


def test_own_loop_gets_the_edited_input_and_async_client_too(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api = ScriptedAPI([REFUND, REFUND])
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.async_client(), breaker)

    async def ask() -> Any:
        return await client.messages.create(model=MODEL, max_tokens=256, messages=PROMPT)

    async def scenario() -> Any:
        with pytest.raises(ApprovalRequired) as waiting, breaker.run("ticket-5"):
            await ask()
        SQLiteApprovals(db).decide(
            str(waiting.value.request_id), approve=True, by="a", args={"order": "Z", "amount_eur": 1}
        )
        with breaker.run("ticket-5"):
            return await ask()

    reply = asyncio.run(scenario())
    assert reply.content[0].input == {"order": "Z", "amount_eur": 1}


def test_async_tool_runner_waits_for_approval(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api, counter = ScriptedAPI([REFUND, REFUND, "done"]), BodyCounter()
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.async_client(), breaker)

    @beta_async_tool
    async def refund(order: str, amount_eur: int) -> str:
        """Refund part of an order."""
        counter.hit("refund")
        return "refunded"

    async def run() -> Any:
        return await client.beta.messages.tool_runner(
            model=MODEL, max_tokens=256, messages=PROMPT, tools=[refund]
        ).until_done()

    async def scenario() -> None:
        with pytest.raises(ApprovalRequired) as waiting, breaker.run("ticket-6"):
            await run()
        assert counter.count() == 0
        SQLiteApprovals(db).decide(str(waiting.value.request_id), approve=True, by="alice")
        with breaker.run("ticket-6"):
            await run()

    asyncio.run(scenario())
    assert counter.count("refund") == 1


def test_edited_input_cannot_be_applied_to_a_stream(tmp_path: Path) -> None:
    db = str(tmp_path / "approvals.db")
    api = ScriptedAPI([REFUND, REFUND])
    breaker = Breaker(approvals=db, tools=GATED)
    client = guard(api.client(), breaker)
    with pytest.raises(ApprovalRequired) as waiting, breaker.run("ticket-7"):
        client.messages.create(model=MODEL, max_tokens=256, messages=PROMPT)
    SQLiteApprovals(db).decide(
        str(waiting.value.request_id), approve=True, by="a", args={"order": "Z", "amount_eur": 1}
    )
    with (
        pytest.raises(ApprovalError, match="streamed"),
        breaker.run("ticket-7"),
        client.messages.stream(model=MODEL, max_tokens=256, messages=PROMPT) as stream,
    ):
        stream.get_final_message()


def test_mcp_tool_annotations_are_declared() -> None:
    class Annotations:
        readOnlyHint = True
        destructiveHint = False

    class McpTool:
        name = "get_invoice"
        annotations = Annotations()

    breaker = Breaker()
    guard(
        ScriptedAPI(["hi"]).client(),
        breaker,
        tools=[McpTool(), {"name": "wipe", "annotations": {"destructiveHint": True}}],
    )
    assert breaker.tool_policy("get_invoice").read_only is True
    assert breaker.tool_policy("wipe").destructive is True and not breaker.tool_policy("wipe").irreversible
