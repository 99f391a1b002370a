"""Hard ceilings: pre-flight, strict boundaries (reaching a limit is fine, exceeding trips), terminal."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, LoopGuardWarning, StaticPrices
from loopguard_core.limits import UNCAPPED_OUTPUT_TOKENS
from loopguard_core.testing import FakeClock


def test_turn_ceiling_allows_exactly_the_limit_and_refuses_the_next() -> None:
    breaker = Breaker(max_turns=3)
    for _ in range(3):
        breaker.before_model()
        breaker.after_model(input_tokens=1, output_tokens=1)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model()
    assert info.value.reason == "turn_ceiling"
    assert info.value.facts["limit"] == 3
    assert info.value.terminal
    assert breaker.usage().turns == 3
    assert breaker.state is BreakerState.OPEN


def test_token_projection_refuses_the_call_that_would_cross_before_it_is_sent() -> None:
    breaker = Breaker(max_tokens=1_000)
    breaker.before_model(estimated_input_tokens=300, max_output_tokens=200)
    breaker.after_model(input_tokens=300, output_tokens=200)
    # 500 spent + 300 + 200 projected = 1000: reaching the limit exactly is allowed.
    breaker.before_model(estimated_input_tokens=300, max_output_tokens=200)
    breaker.after_model(input_tokens=250, output_tokens=150)  # 900 spent
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(estimated_input_tokens=50, max_output_tokens=100)  # 1050 projected
    assert info.value.reason == "token_ceiling"
    assert info.value.facts["observed"] == 1_050
    assert info.value.facts["spent"] == 900


def test_output_reserve_is_used_when_the_request_sets_no_cap() -> None:
    breaker = Breaker(max_tokens=1_000, output_reserve_tokens=600)
    with pytest.raises(LoopGuardTripped):
        breaker.before_model(estimated_input_tokens=500)
    breaker2 = Breaker(max_tokens=1_000, output_reserve_tokens=600)
    breaker2.before_model(estimated_input_tokens=500, max_output_tokens=100)  # the request's cap wins


def test_overspend_reported_after_the_call_is_recorded_and_the_next_call_refused() -> None:
    breaker = Breaker(max_tokens=100)
    breaker.before_model(estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(input_tokens=90, output_tokens=60)  # the provider used more than projected
    assert breaker.usage().tokens == 150
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model()
    assert info.value.reason == "token_ceiling"


def test_at_the_token_ceiling_exactly_a_further_call_is_refused() -> None:
    breaker = Breaker(max_tokens=100)
    breaker.before_model(estimated_input_tokens=50, max_output_tokens=50)
    breaker.after_model(input_tokens=50, output_tokens=50)
    with pytest.raises(LoopGuardTripped):
        breaker.before_model()  # any call spends at least one token


def test_cost_ceiling_projects_with_prices_and_records_explicit_cost() -> None:
    prices = StaticPrices({"m": (1.0, 2.0)})  # USD per million tokens
    breaker = Breaker(max_cost_usd=0.01, prices=prices)
    breaker.before_model(model="m", estimated_input_tokens=2_000, max_output_tokens=1_000)  # 0.004
    breaker.after_model(model="m", input_tokens=2_000, output_tokens=1_000)
    assert breaker.usage().cost_micros == 4_000
    breaker.before_model(model="m", estimated_input_tokens=1_000, max_output_tokens=500)
    breaker.after_model(model="m", input_tokens=1, output_tokens=1, cost_usd=0.005)  # explicit wins
    assert breaker.usage().cost_micros == 9_000
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(model="m", estimated_input_tokens=1_000, max_output_tokens=1_000)  # +0.003
    assert info.value.reason == "cost_ceiling"
    assert info.value.facts["limit"] == 0.01


def test_cost_ceiling_with_genai_prices_uses_the_bundled_price_database() -> None:
    pytest.importorskip("genai_prices", reason="needs the pricing extra: pip install 'loopguard-core[pricing]'")
    breaker = Breaker(max_cost_usd=0.05)
    breaker.before_model(model="claude-sonnet-4-5", estimated_input_tokens=1_000, max_output_tokens=500)
    breaker.after_model(model="claude-sonnet-4-5", input_tokens=1_000, output_tokens=500)
    # $3/M input + $15/M output -> 0.003 + 0.0075
    assert breaker.usage().cost_micros == 10_500
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(model="claude-sonnet-4-5", estimated_input_tokens=10_000, max_output_tokens=2_000)
    assert info.value.reason == "cost_ceiling"


def test_tool_ceilings_total_and_per_tool() -> None:
    breaker = Breaker(max_tool_calls=3, max_calls_per_tool={"search": 2})
    breaker.before_tool("search", {"q": 1})
    breaker.after_tool("search", {"q": 1}, result="a")
    breaker.before_tool("search", {"q": 2})
    breaker.after_tool("search", {"q": 2}, result="b")
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("search", {"q": 3})
    assert info.value.reason == "tool_ceiling"
    assert info.value.tool == "search"
    assert info.value.facts["applies_to"] == "this tool"

    other = Breaker(max_tool_calls=2)
    other.before_tool("a", {})
    other.before_tool("b", {})
    with pytest.raises(LoopGuardTripped) as info:
        other.before_tool("c", {})
    assert info.value.facts["applies_to"] == "all tools"
    assert other.usage().tool_calls == 2


def test_wall_clock_is_measured_with_the_injected_clock(clock: FakeClock) -> None:
    breaker = Breaker(max_seconds=30, clock=clock)
    breaker.before_model()
    clock.advance(30)
    breaker.before_tool("t", {})  # exactly at the limit: allowed
    clock.advance(0.5)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("t", {"x": 1})
    assert info.value.reason == "wall_clock"
    assert info.value.terminal


def test_budget_trips_are_terminal_and_never_half_open(clock: FakeClock) -> None:
    breaker = Breaker(max_turns=1, clock=clock, recovery_seconds=1)
    breaker.before_model()
    with pytest.raises(LoopGuardTripped):
        breaker.before_model()
    clock.advance(3600)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("anything", {})
    assert info.value.reason == "open"
    assert info.value.facts["tripped_by"] == "turn_ceiling"
    assert breaker.state is BreakerState.OPEN


def test_refused_calls_are_not_counted() -> None:
    breaker = Breaker(max_turns=1)
    breaker.before_model()
    for _ in range(5):
        with pytest.raises(LoopGuardTripped):
            breaker.before_model()
    assert breaker.usage().turns == 1


def test_trip_message_is_one_actionable_line() -> None:
    breaker = Breaker(max_turns=1)
    breaker.before_model()
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(agent="writer")
    text = str(info.value)
    assert "\n" not in text
    assert "max_turns=1" in text
    assert "writer" in text
    assert "To continue" in text
    assert isinstance(info.value, RuntimeError)


def test_concurrent_model_calls_cannot_both_take_the_last_tokens(clock: FakeClock) -> None:
    breaker = Breaker(max_tokens=1_000, clock=clock, isolate_runs=False)
    breaker.before_model(estimated_input_tokens=300, max_output_tokens=300, call_id="a")  # in flight: 600
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(estimated_input_tokens=300, max_output_tokens=300, call_id="b")  # 1200 > 1000
    assert info.value.facts["in_flight"] == 600


def test_a_reported_call_releases_its_reservation() -> None:
    breaker = Breaker(max_tokens=1_000)
    breaker.before_model(estimated_input_tokens=300, max_output_tokens=300, call_id="a")
    breaker.after_model(input_tokens=100, output_tokens=50, call_id="a")
    breaker.before_model(estimated_input_tokens=400, max_output_tokens=400, call_id="b")  # 150 + 800 <= 1000
    breaker.after_model(input_tokens=10, output_tokens=10)  # no id: releases the smallest reservation
    assert breaker.usage().tokens == 170


def test_a_call_that_never_reports_releases_its_reservation_after_the_window(clock: FakeClock) -> None:
    from loopguard_core import MemoryStore

    breaker = Breaker(max_tokens=1_000, clock=clock, store=MemoryStore(reservation_seconds=60))
    breaker.before_model(estimated_input_tokens=400, max_output_tokens=400)  # crashed before reporting
    with pytest.raises(LoopGuardTripped):
        breaker.before_model(estimated_input_tokens=400, max_output_tokens=400)
    fresh = Breaker(max_tokens=1_000, clock=clock, store=MemoryStore(reservation_seconds=60))
    fresh.before_model(estimated_input_tokens=400, max_output_tokens=400)
    clock.advance(60)
    fresh.before_model(estimated_input_tokens=400, max_output_tokens=400)  # the first reservation expired


def test_failed_model_calls_do_not_add_up_to_a_false_ceiling() -> None:
    rows: list[dict[str, object]] = []

    class Recorder:
        def record(self, **row: object) -> int:
            rows.append(row)
            return len(rows)

    breaker = Breaker(max_tokens=1_000, ledger=Recorder())
    for _ in range(10):  # ten requests that each reserve 600 tokens and then fail (e.g. HTTP 529)
        breaker.before_model(estimated_input_tokens=300, max_output_tokens=300)
        breaker.model_failed(error=TimeoutError("overloaded"))
    breaker.before_model(estimated_input_tokens=300, max_output_tokens=300)  # not refused: nothing was spent
    assert breaker.usage().tokens == 0
    assert [row["passed"] for row in rows] == [False] * 10


# -- cost ceilings that cannot be silently bypassed ------------------------------------------------------
def test_a_model_with_no_known_price_is_refused_under_a_cost_ceiling() -> None:
    breaker = Breaker(max_cost_usd=1.0, prices=StaticPrices({"known": (1.0, 2.0)}))
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(model="my-finetune", estimated_input_tokens=10, max_output_tokens=10, agent="writer")
    assert (info.value.reason, info.value.facts["model"], info.value.terminal) == (
        "unpriced_model",
        "my-finetune",
        False,
    )
    text = str(info.value)
    assert "my-finetune" in text and "StaticPrices" in text and "allow_unpriced=True" in text
    with pytest.raises(LoopGuardTripped) as nameless:
        breaker.before_model(estimated_input_tokens=10, max_output_tokens=10)
    assert nameless.value.reason == "unpriced_model" and "before_model(model=...)" in str(nameless.value)
    assert breaker.usage().turns == 0  # nothing was sent
    breaker.before_model(model="known", max_output_tokens=10)  # a priced model still goes


def test_unpriced_models_may_be_allowed_knowingly() -> None:
    breaker = Breaker(max_cost_usd=1.0, prices=StaticPrices({}), allow_unpriced=True)
    with pytest.warns(LoopGuardWarning, match="cannot price"):
        breaker.before_model(model="my-finetune", max_output_tokens=10)
    breaker.after_model(model="my-finetune", input_tokens=5, output_tokens=5, cost_usd=0.25)
    assert breaker.usage().cost_usd == 0.25


def test_a_request_without_an_output_cap_reserves_what_the_model_could_write() -> None:
    prices = StaticPrices({"small": (1.0, 2.0, 1_000)})
    tokens = Breaker(max_tokens=10_000)
    with pytest.raises(LoopGuardTripped) as uncapped:
        tokens.before_model(estimated_input_tokens=100)
    assert (uncapped.value.reason, uncapped.value.facts["observed"]) == ("token_ceiling", 100 + UNCAPPED_OUTPUT_TOKENS)
    known = Breaker(max_tokens=10_000, prices=prices)
    known.before_model(model="small", estimated_input_tokens=100)  # its maximum output, 1,000, fits
    assert Breaker(max_tokens=10_000, output_reserve_tokens=0).before_model(estimated_input_tokens=100) is None


def test_an_overshoot_by_a_whole_uncapped_output_is_no_longer_possible() -> None:
    # 0.98 USD spent; the next request sets no cap: reserving 16,384 output tokens at $60/M would cross $1.
    breaker = Breaker(max_cost_usd=1.00, prices=StaticPrices({"big": (15.0, 60.0)}))
    breaker.before_model(model="big", estimated_input_tokens=1_000, max_output_tokens=1_000)
    breaker.after_model(model="big", input_tokens=1_000, output_tokens=1_000, cost_usd=0.98)
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(model="big", estimated_input_tokens=100)
    assert info.value.reason == "cost_ceiling"


# -- steer: the run goes on after a refused call, up to max_refusals ---------------------------------------
def _refuse(breaker: Breaker) -> LoopGuardTripped:
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("search", {"q": "x"})
    return info.value


def test_steer_tells_the_model_why_and_the_same_call_stays_refused() -> None:
    breaker = Breaker(max_refusals=2)
    for _ in range(3):
        breaker.before_tool("search", {"q": "x"})
        breaker.after_tool("search", {"q": "x"}, result="same")
    message = breaker.steer(_refuse(breaker))
    assert "did not run" in message and "Repeating it will not bring a different answer" in message
    assert "loopguard refused the call" not in message  # written for the model, not the developer
    assert breaker.state is BreakerState.CLOSED
    breaker.before_tool("other", {"q": "y"})  # the run goes on with something else
    breaker.after_tool("other", {"q": "y"}, result="new")
    for _ in range(3):  # the loop starts over: refused again at its 4th call, and told again
        breaker.before_tool("search", {"q": "x"})
        breaker.after_tool("search", {"q": "x"}, result="same")
    breaker.steer(_refuse(breaker))
    assert breaker.usage().refusals == 2
    with pytest.raises(LoopGuardTripped) as stop:
        breaker.steer(_refuse(breaker))
    assert (stop.value.reason, stop.value.terminal, stop.value.facts["limit"]) == ("refusals", True, 2)
    with pytest.raises(LoopGuardTripped) as after:
        breaker.before_tool("anything", {})
    assert (after.value.reason, after.value.facts["tripped_by"]) == ("open", "refusals")
    assert "budget ceiling and stays stopped" in str(after.value)


def test_budget_ceilings_always_stop_even_when_steering() -> None:
    breaker = Breaker(max_tool_calls=1)
    breaker.before_tool("a", {})
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_tool("b", {})
    assert not info.value.steerable
    with pytest.raises(LoopGuardTripped) as again:
        breaker.steer(info.value)
    assert again.value is info.value


async def test_steer_async_twin() -> None:
    breaker = Breaker()
    for _ in range(3):
        await breaker.abefore_tool("search", {"q": "x"})
        await breaker.aafter_tool("search", {"q": "x"}, result="same")
    with pytest.raises(LoopGuardTripped) as info:
        await breaker.abefore_tool("search", {"q": "x"})
    assert "did not run" in await breaker.asteer(info.value)
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("settings", "needed"),
    [
        ({}, False),  # loop detection, turn and tool ceilings never read a model call's projection
        ({"max_turns": 5, "max_tool_calls": 9}, False),
        ({"max_tokens": 1_000}, True),
        ({"max_cost_usd": 1.0, "allow_unpriced": True}, True),
    ],
)
def test_the_input_estimate_is_needed_only_where_a_projection_is_read(settings: dict, needed: bool) -> None:
    assert Breaker(**settings).needs_token_estimate is needed


def test_a_budget_needs_the_input_estimate_for_its_reservations() -> None:
    from loopguard_core.budgets import Budget, MemoryBudgets

    breaker = Breaker(budgets=[Budget("app", max_turns=9)], budget_store=MemoryBudgets())
    assert breaker.needs_token_estimate
    breaker.before_model(model="m", estimated_input_tokens=700, max_output_tokens=300)
    assert breaker.budgets[0].in_flight["tokens"] == 1_000  # what an estimate of 0 would have hidden
