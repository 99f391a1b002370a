"""Bad configuration fails at construction with a message naming the parameter."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, LoopDetection

from .._build import type_error


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_turns": 0}, ValueError, "max_turns"),
        ({"max_turns": -1}, ValueError, "max_turns"),
        ({"max_turns": 2.5}, TypeError, "max_turns"),
        ({"max_turns": True}, TypeError, "max_turns"),
        ({"max_tokens": "100"}, TypeError, "max_tokens"),
        ({"max_cost_usd": -0.5}, ValueError, "max_cost_usd"),
        ({"max_cost_usd": float("nan")}, ValueError, "max_cost_usd"),
        ({"max_seconds": 0}, ValueError, "max_seconds"),
        ({"max_tool_calls": -3}, ValueError, "max_tool_calls"),
        ({"max_calls_per_tool": {"search": 0}}, ValueError, "max_calls_per_tool"),
        ({"max_calls_per_tool": [("search", 1)]}, TypeError, "max_calls_per_tool"),
        ({"max_consecutive_failures": 0}, ValueError, "max_consecutive_failures"),
        ({"output_reserve_tokens": -1}, ValueError, "output_reserve_tokens"),
        ({"recovery_seconds": 0}, ValueError, "recovery_seconds"),
        ({"loop_detection": "yes"}, TypeError, "loop_detection"),
        ({"scope": ""}, TypeError, "scope"),
        ({"clock": object()}, TypeError, "clock"),
        ({"ledger": object()}, TypeError, "ledger"),
        ({"on_trip": 5}, TypeError, "on_trip"),
        ({"store": "mysql://x"}, ValueError, "store"),
        ({"ledger_failure": "ignore"}, ValueError, "ledger_failure"),
        ({"max_turnz": 5}, TypeError, "max_turnz"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, object], error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=type_error(name) if error is TypeError else name):
        Breaker(**kwargs)  # type: ignore[arg-type]


def test_limits_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Breaker(40)  # type: ignore[misc]


def test_loop_detection_validation() -> None:
    with pytest.raises(ValueError, match="max_repeats"):
        LoopDetection(max_repeats=0)
    with pytest.raises(TypeError, match="exempt_tools"):
        LoopDetection(exempt_tools="search")  # a str is not a collection of names


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda b: b.before_model(estimated_input_tokens=-1), "estimated_input_tokens"),
        (lambda b: b.before_model(max_output_tokens="5"), "max_output_tokens"),
        (lambda b: b.after_model(input_tokens=-1, output_tokens=0), "input_tokens"),
        (lambda b: b.after_model(input_tokens=1, output_tokens=1, cost_usd=-1), "cost_usd"),
        (lambda b: b.before_tool(None, {}), "tool"),
        (lambda b: b.before_tool("", {}), "tool"),
    ],
)
def test_bad_call_arguments_get_a_clear_error(call: object, name: str) -> None:
    breaker = Breaker()
    with pytest.raises((TypeError, ValueError), match=type_error(name)):
        call(breaker)  # type: ignore[operator]
    assert breaker.usage().turns == 0 and breaker.usage().tokens == 0  # nothing half-recorded


def test_missing_pricing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from loopguard_core import MissingExtra, StaticPrices

    monkeypatch.setitem(sys.modules, "genai_prices", None)  # makes `import genai_prices` fail
    with pytest.raises(MissingExtra, match=r"loopguard-core\[pricing\]"):
        Breaker(max_cost_usd=1.0)
    Breaker(max_cost_usd=1.0, prices=StaticPrices({}))  # own prices: fine
