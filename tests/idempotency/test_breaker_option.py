"""The breaker option: a tool declared ``side_effect`` runs at most once per key through ``run_tool_body``."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopguard_core import Breaker, Ledger, LoopGuardTripped, ToolPolicy
from loopguard_core.idempotency import MemorySideEffects, SQLiteSideEffects
from loopguard_core.testing import BodyCounter

REFUND = {"order": "A-17", "amount_eur": 20}


def refund_body(bodies: BodyCounter) -> object:
    bodies.hit("refund", REFUND)
    return {"refund_id": f"re_{bodies.count('refund')}"}


def test_the_model_asking_twice_gets_the_recorded_outcome() -> None:
    breaker, bodies = Breaker(tools={"refund": ToolPolicy(side_effect=True)}, side_effects="memory://"), BodyCounter()
    with breaker.run("order-A-17"):
        first = breaker.run_tool_body("refund", REFUND, lambda: refund_body(bodies))
        second = breaker.run_tool_body("refund", dict(REFUND), lambda: refund_body(bodies))
    assert first == second == {"refund_id": "re_1"}
    assert bodies.count("refund") == 1
    # other tools just run
    assert breaker.run_tool_body("search", {"q": "x"}, lambda: "found") == "found"


def test_a_resumed_run_on_the_ledger_file_finds_the_outcome(tmp_path: Path) -> None:
    bodies = BodyCounter()
    for _ in range(2):  # two processes' worth of breakers, one after the other, same run id
        breaker = Breaker(ledger=Ledger(tmp_path / "runs.db"), tools={"refund": ToolPolicy(side_effect=True)})
        with breaker.run("order-A-17"):
            assert breaker.run_tool_body("refund", REFUND, lambda: refund_body(bodies)) == {"refund_id": "re_1"}
        assert isinstance(breaker.side_effects.store, SQLiteSideEffects)
    assert bodies.count("refund") == 1


def test_a_user_key_with_other_arguments_is_a_trip_in_the_ledger(tmp_path: Path) -> None:
    ledger, seen = Ledger(tmp_path / "runs.db"), []
    policy = ToolPolicy(side_effect=True, idempotency_key=lambda a: a["order"])
    breaker = Breaker(ledger=ledger, tools={"refund": policy}, side_effects=MemorySideEffects(), on_trip=seen.append)
    with breaker.run("r"):
        breaker.run_tool_body("refund", REFUND, lambda: "done")
        with pytest.raises(LoopGuardTripped) as conflict:
            breaker.run_tool_body("refund", {**REFUND, "amount_eur": 99}, lambda: "done twice")
    assert conflict.value.reason == "side_effect_conflict" and conflict.value.steerable
    assert [t.reason for t in seen] == ["side_effect_conflict"]
    assert [r.breach_reason for r in ledger.rows("r") if r.is_trip] == ["side_effect_conflict"]


async def test_async_bodies() -> None:
    breaker, calls = Breaker(tools={"refund": ToolPolicy(side_effect=True)}, side_effects="memory://"), []

    async def body() -> str:
        calls.append(1)
        return "refunded"

    assert await breaker.arun_tool_body("refund", REFUND, body) == "refunded"
    assert await breaker.arun_tool_body("refund", REFUND, body) == "refunded"
    assert calls == [1]


def test_bad_option() -> None:
    with pytest.raises(TypeError, match="side_effects must be"):
        Breaker(side_effects=3)  # type: ignore[arg-type]
