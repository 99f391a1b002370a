"""The decorator sits under a framework's tool decorator: the framework builds the same tool schema from it, and
the framework's tool runs the body once (LangChain here; Pydantic AI and CrewAI read the same signature)."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker
from loopguard_core.idempotency import side_effect


def send_refund(order_id: str, amount_cents: int) -> dict[str, str]:
    """Refund part of an order.

    Args:
        order_id: the order to refund.
        amount_cents: how much, in cents.
    """
    RUNS.append(order_id)
    return {"refund": "re_1", "order_id": order_id}


RUNS: list[str] = []


def test_a_langchain_tool_over_side_effect_has_the_same_schema_and_runs_once() -> None:
    tools = pytest.importorskip("langchain_core.tools", reason="needs the langchain extra")
    RUNS.clear()
    plain = tools.tool(send_refund)
    guarded = tools.tool(side_effect(breaker=Breaker())(send_refund))
    assert guarded.name == plain.name and guarded.description == plain.description
    assert guarded.args_schema.model_json_schema() == plain.args_schema.model_json_schema()
    call = {"order_id": "order-42", "amount_cents": 1500}
    assert guarded.invoke(call) == guarded.invoke(call) == {"refund": "re_1", "order_id": "order-42"}
    assert RUNS == ["order-42"]
