"""``loopguard approvals``: a person lists, inspects and decides gated calls from another process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopguard_core import ApprovalRequired, Breaker, Ledger, LoopGuardTripped, ToolPolicy
from loopguard_core.cli import build

REFUND = {"order": "A-17", "amount_eur": 20}


def waiting_run(db: Path) -> tuple[Breaker, str]:
    """A run on a ledger whose refund waits for a person; returns the breaker and the request id."""
    breaker = Breaker(
        ledger=Ledger(db),
        tools={"refund": ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['amount_eur']} EUR")},
    )
    with pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", REFUND, agent="support")
    return breaker, asked.value.request_id or ""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args))
    return result.exit_code, result.output


def test_list_show_and_approve_with_edited_arguments(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    breaker, rid = waiting_run(db)
    code, out = run("approvals", "list", "--db", str(db))
    assert code == 0 and rid[:12] in out and "refund 20 EUR" in out and "support" in out
    code, out = run("approvals", "list", "--db", str(db), "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in listed] == [rid] and listed[0]["status"] == "pending"
    code, out = run("approvals", "show", rid[:8], "--db", str(db))  # a unique prefix is enough
    assert code == 0 and "refund 20 EUR" in out and "pending" in out

    code, out = run(
        "approvals", "approve", rid, "--db", str(db), "--by", "alice", "--args", '{"order": "A-17", "amount_eur": 15}'
    )
    assert code == 0, out
    assert "approved" in out and "alice" in out
    approved = breaker.before_tool("refund", REFUND)
    assert approved is not None and approved.args() == {"order": "A-17", "amount_eur": 15}
    rows = [(r.breach_reason, r.agent) for r in Ledger(db, read_only=True).rows() if r.origin == "approval"]
    assert rows == [(f"requested:{rid}", "support"), (f"approved:{rid}", "alice")]


def test_reject_needs_a_reason_and_the_model_sees_it(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    breaker, rid = waiting_run(db)
    code, out = run("approvals", "reject", rid, "--db", str(db))
    assert code == 2 and "--reason" in out
    code, out = run("approvals", "reject", rid, "--db", str(db), "--by", "bob", "--reason", "duplicate ticket")
    assert code == 0, out
    with pytest.raises(LoopGuardTripped, match="duplicate ticket") as refused:
        breaker.before_tool("refund", REFUND)
    assert refused.value.reason == "approval_rejected"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "nope"], "no approval request 'nope'"),
        (["approve", "{rid}", "--args", "{{not json"], "--args must be JSON"),
        (["show", "zzz"], "no approval request"),
    ],
)
def test_mistakes_exit_2_and_say_what_to_do(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "runs.db"
    _, rid = waiting_run(db)
    code, out = run("approvals", *[a.format(rid=rid) for a in args], "--db", str(db))
    assert code == 2 and message in out


def test_deciding_twice_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    _, rid = waiting_run(db)
    assert run("approvals", "approve", rid, "--db", str(db), "--by", "alice")[0] == 0
    code, out = run("approvals", "reject", rid, "--db", str(db), "--by", "bob", "--reason", "no")
    assert code == 2 and "approved (by alice)" in out


def test_a_missing_ledger_is_named(tmp_path: Path) -> None:
    code, out = run("approvals", "list", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "missing.db" in out
