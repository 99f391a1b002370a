"""``@side_effect`` keeps what frameworks read off a tool function, and refuses a configuration that cannot work."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from loopguard_core import Breaker
from loopguard_core.errors import LoopGuardTripped
from loopguard_core.idempotency import MemorySideEffects, SideEffects, side_effect


def send_refund(order_id: str, amount_cents: int, *, reason: str = "duplicate") -> dict[str, Any]:
    """Refund part of an order.

    Args:
        order_id: the order.
        amount_cents: how much.
    """
    return {"order_id": order_id, "amount_cents": amount_cents}


async def send_refund_async(order_id: str, amount_cents: int) -> dict[str, Any]:
    """Refund part of an order (async)."""
    return {"order_id": order_id, "amount_cents": amount_cents}


def test_the_wrapper_keeps_name_docstring_and_signature() -> None:
    """Frameworks (LangChain @tool, CrewAI, Pydantic AI) build the tool schema from these."""
    for func in (send_refund, send_refund_async):
        wrapped = side_effect(breaker=Breaker())(func)
        assert inspect.signature(wrapped) == inspect.signature(func)
        assert wrapped.__name__ == func.__name__ and wrapped.__doc__ == func.__doc__
        assert wrapped.__wrapped__ is func  # type: ignore[attr-defined]
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(func)
        assert wrapped.tool_name == f"{__name__}.{func.__qualname__}"  # type: ignore[attr-defined]


def test_the_wrapper_carries_its_side_effects_and_a_release() -> None:
    runs = []

    @side_effect(breaker=Breaker(), name="refund")
    def refund(order_id: str) -> str:
        runs.append(order_id)
        return "ok"

    assert isinstance(refund.side_effects, SideEffects)  # type: ignore[attr-defined]
    refund("o-1")
    refund("o-1")
    assert refund.release(order_id="o-1")  # type: ignore[attr-defined]
    refund("o-1")
    assert runs == ["o-1", "o-1"]


def test_methods_are_keyed_without_self() -> None:
    class Payments:
        def __init__(self) -> None:
            self.runs = 0

        @side_effect(breaker=Breaker())
        def refund(self, order_id: str) -> str:
            self.runs += 1
            return f"refunded {order_id}"

    first, second = Payments(), Payments()
    assert first.refund("o-1") == second.refund("o-1") == "refunded o-1"
    assert first.runs + second.runs == 1


def test_exclude_args_leaves_framework_context_out_of_the_key() -> None:
    runs = []

    @side_effect(breaker=Breaker(), exclude_args=["ctx"])
    def refund(ctx: object, order_id: str) -> str:
        runs.append(order_id)
        return "ok"

    refund(object(), "o-1")  # a new context object each call (Pydantic AI's RunContext, a LangChain config)
    refund(object(), "o-1")
    assert runs == ["o-1"]
    with pytest.raises(ValueError, match="exclude_args names no parameter"):
        side_effect(breaker=Breaker(), exclude_args=["context"])(refund)
    with pytest.raises(TypeError, match="exclude_args"):
        side_effect(breaker=Breaker(), exclude_args="ctx")


def test_a_key_callable_gets_the_bound_arguments() -> None:
    seen: list[dict[str, Any]] = []

    def key(args: dict[str, Any]) -> str:
        seen.append(args)
        return f"refund:{args['order_id']}"

    wrapped = side_effect(key=key)(send_refund)
    wrapped("o-1", 100)
    assert seen == [{"order_id": "o-1", "amount_cents": 100, "reason": "duplicate"}]
    with pytest.raises(LoopGuardTripped) as caught:
        wrapped("o-1", 200)
    assert caught.value.reason == "side_effect_conflict"


def test_wrong_arguments_fail_as_the_function_would() -> None:
    wrapped = side_effect(breaker=Breaker())(send_refund)
    with pytest.raises(TypeError):
        wrapped("o-1")  # missing amount_cents


def test_configurations_that_cannot_work_are_refused_with_the_parameter_named() -> None:
    with pytest.raises(TypeError, match=r"breaker= .* or key="):
        side_effect()
    with pytest.raises(TypeError, match="bare @side_effect"):
        side_effect(send_refund)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store must be"):
        side_effect(42, key="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_seconds"):
        side_effect(key="k", ttl_seconds=-1)
    with pytest.raises(ValueError, match="lease_seconds"):
        SideEffects(lease_seconds=0)
    with pytest.raises(TypeError, match="wait_seconds"):
        SideEffects(wait_seconds=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_flight"):
        SideEffects(in_flight="block")
    with pytest.raises(ValueError, match="on_unknown"):
        SideEffects(on_unknown="run")
    with pytest.raises(ValueError, match="on_error"):
        SideEffects(on_error="ignore")
    with pytest.raises(TypeError, match="serializer"):
        SideEffects(serializer="json")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        SideEffects(key=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker"):
        SideEffects(breaker=object())
    with pytest.raises(TypeError, match="name"):
        side_effect(key="k", name="")
    effects = SideEffects(MemorySideEffects())
    with pytest.raises(TypeError, match=r"pass breaker= .*run_id=, or key="):
        effects.run("tool", {}, lambda: None)
    with pytest.raises(TypeError, match="run_id"):
        effects.run("tool", {}, lambda: None, run_id="")
    with pytest.raises(TypeError, match="tool"):
        effects.run("", {}, lambda: None, run_id="r")
    with pytest.raises(TypeError, match="body"):
        effects.run("tool", {}, "not callable", run_id="r")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must give a non-empty str"):
        effects.run("tool", {}, lambda: None, key=lambda args: None)  # type: ignore[arg-type,return-value]
