"""Observers see every guarded step, after the decision, without arguments, and can never break a call."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices
from loopguard_core.events import GuardEvent
from loopguard_core.testing import FakeClock


def test_every_step_is_an_event_with_what_observers_need() -> None:
    seen: list[GuardEvent] = []
    clock = FakeClock()
    breaker = Breaker(
        on_event=seen.append, clock=clock, prices=StaticPrices({"m": (1.0, 2.0)}), max_tool_calls=1, scope="team"
    )
    breaker.before_model(model="m", estimated_input_tokens=100, max_output_tokens=50, agent="writer")
    clock.advance(1.5)
    breaker.after_model(model="m", input_tokens=100, output_tokens=40, agent="writer")
    breaker.before_tool("search", {"q": "secret-query"})
    breaker.after_tool("search", {"q": "secret-query"}, error="boom")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "other"})

    assert [(e.kind, e.phase, e.name) for e in seen] == [
        ("model", "admitted", "m"),
        ("model", "recorded", "m"),
        ("tool", "admitted", "search"),
        ("tool", "recorded", "search"),
        ("tool", "refused", "search"),
    ]
    recorded = seen[1]
    assert (recorded.input_tokens, recorded.output_tokens, recorded.duration_s) == (100, 40, 1.5)
    assert recorded.cost_usd == pytest.approx((100 * 1.0 + 40 * 2.0) / 1e6)
    assert (recorded.agent, recorded.scope) == ("writer", "team")
    assert seen[3].failed is True
    refused = seen[4]
    assert refused.reason == "tool_ceiling" and isinstance(refused.trip, LoopGuardTripped)
    assert refused.usage is not None and refused.usage().tool_calls == 1
    assert "secret-query" not in repr(seen)  # names and counts, never arguments


def test_an_observer_that_raises_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: GuardEvent) -> None:
        raise RuntimeError("observer down")

    breaker = Breaker()
    breaker.add_listener(on_event=broken)
    breaker.before_tool("search", {"q": "x"})
    breaker.after_tool("search", {"q": "x"}, result="ok")
    assert "observer down" in caplog.text


def test_observe_mode_steps_are_events() -> None:
    seen: list[GuardEvent] = []
    breaker = Breaker(mode="observe", max_tool_calls=1, on_event=seen.append)
    for q in ("a", "b"):
        breaker.before_tool("search", {"q": q})
        breaker.after_tool("search", {"q": q}, result=q)
    assert [e.phase for e in seen if e.phase == "observed"] == ["observed"]
    assert next(e for e in seen if e.phase == "observed").reason == "tool_ceiling"


def test_bad_listener_is_refused() -> None:
    with pytest.raises(TypeError, match="on_event"):
        Breaker(on_event=3)  # type: ignore[arg-type]


def test_an_expensive_model_call_leaves_a_checkpoint_row(tmp_path: object) -> None:
    from pathlib import Path

    from loopguard_core import Ledger

    ledger = Ledger(Path(str(tmp_path)) / "l.db")
    breaker = Breaker(ledger=ledger, prices=StaticPrices({"m": (10.0, 10.0)}), checkpoint_after_usd=0.5)
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=10, output_tokens=10)  # 0.0002 USD: no checkpoint
    breaker.before_model(model="m", estimated_input_tokens=60_000, max_output_tokens=1_000)
    breaker.after_model(model="m", input_tokens=60_000, output_tokens=1_000)  # 0.61 USD
    rows = [r for r in ledger.rows() if r.origin == "checkpoint"]
    assert [(r.breach_reason, r.turn, r.tokens) for r in rows] == [
        ("after:model turns=2 tokens=61020 cost_usd=0.610200 tool_calls=0", 2, 0)
    ]
    assert ledger.sessions()[0].tokens == 61_020  # a checkpoint adds nothing to the session's totals
    with pytest.raises(ValueError, match="checkpoint_after_usd"):
        Breaker(checkpoint_after_usd=-1)
