"""loopguard on OpenTelemetry: span events (or child spans) per guarded step, trips on the current span,
metrics that add up to the calls made, and never a tool's arguments or results in exported data."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, MissingExtra, StaticPrices, ToolPolicy
from loopguard_core.approvals import MemoryApprovals
from loopguard_core.otel import (
    BUDGET_REMAINING,
    CALLS,
    CHECK_EVENT,
    COST,
    RECORD_EVENT,
    TOKENS,
    TRIP_EVENT,
    TRIPS,
    Telemetry,
    unwatch_budget,
    watch_budget,
)

from .conftest import Otel

ARG_MARKER = "ARG-MARKER-5c1e"  # a tool argument: must never reach telemetry
RESULT_MARKER = "RESULT-MARKER-9b2d"  # a tool result: same
PRICES = StaticPrices({"gpt-test": (2.0, 8.0)})  # USD per million tokens in / out


def telemetry(otel: Otel, **options: Any) -> Telemetry:
    return Telemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, **options)


def run_agent(breaker: Breaker, *, turns: int = 2, loop_to_trip: bool = True) -> LoopGuardTripped | None:
    """A small agent run: model turns, a search tool answering the same, until a loop trip."""
    for turn in range(turns):
        breaker.before_model(model="gpt-test", estimated_input_tokens=500, max_output_tokens=100, agent="writer")
        breaker.after_model(model="gpt-test", input_tokens=480 + turn, output_tokens=60, agent="writer")
        args = {"q": f"{ARG_MARKER} turn {turn}"}
        breaker.before_tool("search", args, agent="writer")
        breaker.after_tool("search", args, result=f"{RESULT_MARKER} {turn}", agent="writer")
    if not loop_to_trip:
        return None
    same = {"q": f"{ARG_MARKER} again"}
    try:
        for _ in range(10):
            breaker.before_tool("search", same, agent="writer")
            breaker.after_tool("search", same, result=f"{RESULT_MARKER} same", agent="writer")
    except LoopGuardTripped as trip:
        return trip
    raise AssertionError("the loop was not refused")


def test_events_land_on_the_current_span_with_genai_and_loopguard_attributes(otel: Otel) -> None:
    breaker = Breaker(prices=PRICES, scope="team-a")
    telemetry(otel).attach(breaker)
    with otel.tracer.start_as_current_span("invoke_agent writer"), breaker.run():
        trip = run_agent(breaker)
        run_id = breaker.session_id

    assert trip is not None and trip.reason == "loop"
    span = otel.span("invoke_agent writer")
    names = [e.name for e in span.events]
    # per turn: model check + record, tool check + record; then 3 admitted repeats and the refused 4th + its trip
    assert names == [CHECK_EVENT, RECORD_EVENT] * 4 + [CHECK_EVENT, RECORD_EVENT] * 3 + [CHECK_EVENT, TRIP_EVENT]

    model_check, model_record, tool_check, tool_record = (dict(e.attributes or {}) for e in span.events[:4])
    assert model_check == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.agent.name": "writer",
        "loopguard.agent": "writer",
        "loopguard.kind": "model",
        "loopguard.verdict": "admitted",
        "loopguard.run_id": run_id,
        "loopguard.scope": "team-a",
    }
    assert model_record["loopguard.verdict"] == "recorded"
    assert (model_record["gen_ai.usage.input_tokens"], model_record["gen_ai.usage.output_tokens"]) == (480, 60)
    assert model_record["loopguard.cost_usd"] == pytest.approx((480 * 2.0 + 60 * 8.0) / 1e6)
    assert model_record["loopguard.failed"] is False
    assert tool_check["gen_ai.operation.name"] == "execute_tool"
    assert tool_check["gen_ai.tool.name"] == "search"
    assert tool_check["loopguard.verdict"] == "admitted"
    assert "gen_ai.request.model" not in tool_check
    assert tool_record["loopguard.verdict"] == "recorded" and "gen_ai.usage.input_tokens" not in tool_record

    refused = dict(span.events[-2].attributes or {})
    assert refused["loopguard.verdict"] == "refused"
    assert (refused["loopguard.reason"], refused["loopguard.rule"]) == ("loop", "repeat")
    assert refused["loopguard.terminal"] is False
    tripped = dict(span.events[-1].attributes or {})
    assert tripped["loopguard.reason"] == "loop" and tripped["loopguard.rule"] == "repeat"
    assert tripped["gen_ai.tool.name"] == "search" and tripped["loopguard.run_id"] == run_id
    assert tripped["exception.type"] == "loopguard_core.errors.LoopGuardTripped"
    assert tripped["exception.message"] == str(trip)
    assert tripped["loopguard.limit"] == trip.facts["limit"]
    # A refusal is the guard working: the span's status is left to the framework.
    assert span.status.status_code.name == "UNSET"


def test_nothing_of_a_tools_arguments_or_results_is_ever_exported(otel: Otel) -> None:
    for mode in ("events", "spans"):
        breaker = Breaker(prices=PRICES, mode="observe" if mode == "spans" else "enforce")
        telemetry(otel, spans=mode).attach(breaker)
        with otel.tracer.start_as_current_span("run"), breaker.run():
            run_agent(breaker, loop_to_trip=mode == "events")
    exported = otel.everything()
    assert "loopguard" in exported and "search" in exported  # the data is there...
    assert ARG_MARKER not in exported and RESULT_MARKER not in exported  # ...and no argument or result


def test_counters_add_up_to_the_calls_made_and_the_spend(otel: Otel) -> None:
    breaker = Breaker(prices=PRICES)
    telemetry(otel).attach(breaker)
    with breaker.run():
        trip = run_agent(breaker, turns=3)
        assert trip is not None and trip.reason == "loop"
        with pytest.raises(LoopGuardTripped) as ceiling:
            breaker.before_model(model="gpt-test", estimated_input_tokens=10, max_output_tokens=10, agent="writer")
        spent = breaker.usage()

    assert ceiling.value.reason == "open"  # the loop trip opened the breaker
    # 3 + 1 model decisions (the last refused), 3 + 4 tool decisions (the 4th repeat refused)
    assert otel.total(CALLS) == 11
    assert otel.total(CALLS, **{"loopguard.kind": "model"}) == 4
    assert otel.total(CALLS, **{"loopguard.kind": "tool", "gen_ai.tool.name": "search"}) == 7
    assert otel.total(CALLS, **{"loopguard.verdict": "admitted"}) == 9
    assert otel.total(CALLS, **{"loopguard.verdict": "refused", "loopguard.reason": "loop"}) == 1
    assert otel.total(CALLS, **{"loopguard.verdict": "refused", "loopguard.reason": "open"}) == 1
    assert otel.total(TRIPS) == 2
    assert otel.total(TRIPS, **{"loopguard.reason": "loop", "loopguard.rule": "repeat"}) == 1
    assert otel.total(TRIPS, **{"loopguard.reason": "open", "gen_ai.request.model": "gpt-test"}) == 1
    # spend: the cost counter is what the breaker counted; tokens split by gen_ai.token.type
    assert otel.total(COST) == pytest.approx(spent.cost_usd)
    assert otel.total(COST, **{"gen_ai.request.model": "gpt-test", "gen_ai.agent.name": "writer"}) == pytest.approx(
        spent.cost_usd
    )
    assert otel.total(TOKENS, **{"gen_ai.token.type": "input"}) == 480 + 481 + 482
    assert otel.total(TOKENS, **{"gen_ai.token.type": "output"}) == 3 * 60
    assert otel.total(TOKENS) == spent.tokens
    assert (otel.unit(CALLS), otel.unit(COST), otel.unit(TOKENS), otel.unit(TRIPS)) == (
        "{call}",
        "{USD}",
        "{token}",
        "{trip}",
    )
    # cardinality: no run ids or scopes on metrics
    keys = {k for metric in (CALLS, TRIPS, COST, TOKENS) for attrs, _ in otel.points(metric) for k in attrs}
    assert keys <= {
        "loopguard.kind",
        "loopguard.verdict",
        "loopguard.reason",
        "loopguard.rule",
        "gen_ai.tool.name",
        "gen_ai.request.model",
        "gen_ai.agent.name",
        "gen_ai.token.type",
    }


def test_spans_mode_makes_a_short_child_span_per_step(otel: Otel) -> None:
    breaker = Breaker(prices=PRICES)
    telemetry(otel, spans="spans").attach(breaker)
    with otel.tracer.start_as_current_span("invoke_agent writer") as parent, breaker.run():
        trip = run_agent(breaker, turns=1)
        parent_id = parent.get_span_context().span_id

    assert trip is not None
    children = [s for s in otel.spans() if s.name.startswith("loopguard ")]
    assert [s.name for s in children[:4]] == [
        "loopguard model gpt-test",
        "loopguard model gpt-test",
        "loopguard tool search",
        "loopguard tool search",
    ]
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in children)
    assert all(s.kind.name == "INTERNAL" for s in children)
    record = dict(children[1].attributes or {})
    assert record["loopguard.verdict"] == "recorded"
    assert (record["loopguard.input_tokens"], record["loopguard.output_tokens"]) == (480, 60)
    # not a second chat or tool execution for backends that type spans or add up usage over spans
    assert not any("gen_ai.operation.name" in (s.attributes or {}) for s in children)
    assert not any(k.startswith("gen_ai.usage.") for s in children for k in (s.attributes or {}))
    refused = children[-1]
    assert refused.name == "loopguard tool search"
    assert (refused.attributes or {})["loopguard.verdict"] == "refused"
    assert (refused.attributes or {})["loopguard.rule"] == "repeat"
    # the trip event lands on the span that was current (the framework's), as in events mode
    parent_span = otel.span("invoke_agent writer")
    assert [e.name for e in parent_span.events] == [TRIP_EVENT]
    assert (parent_span.events[0].attributes or {})["loopguard.reason"] == "loop"


def test_spans_mode_without_a_current_span_keeps_the_trip_on_its_own_span(otel: Otel) -> None:
    breaker = Breaker(max_tool_calls=1)
    breaker.add_listener(on_event=telemetry(otel, spans="spans", error_on_refusal=True))
    breaker.before_tool("search", {"q": "a"})
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "b"})
    first, refused = otel.spans()
    assert first.parent is None and first.status.status_code.name == "UNSET"
    assert [e.name for e in refused.events] == [TRIP_EVENT]
    assert refused.status.status_code.name == "ERROR"
    assert refused.status.description == "loopguard refused the call: tool_ceiling"


def test_error_on_refusal_marks_the_current_span(otel: Otel) -> None:
    breaker = Breaker(max_tool_calls=1)
    telemetry(otel, error_on_refusal=True).attach(breaker)
    with otel.tracer.start_as_current_span("tool span"):
        breaker.before_tool("search", {"q": "a"})
        with pytest.raises(LoopGuardTripped):
            breaker.before_tool("search", {"q": "b"})
    span = otel.span("tool span")
    assert span.status.status_code.name == "ERROR"
    assert span.events[-1].name == TRIP_EVENT


def test_without_a_current_span_events_mode_only_counts(otel: Otel) -> None:
    breaker = Breaker()
    telemetry(otel).attach(breaker)
    breaker.before_tool("search", {"q": "a"})
    breaker.after_tool("search", {"q": "a"}, result="r")
    assert otel.spans() == []
    assert otel.total(CALLS, **{"loopguard.verdict": "admitted"}) == 1


def test_observe_mode_is_a_verdict_and_a_would_be_trip_not_a_refusal(otel: Otel) -> None:
    breaker = Breaker(mode="observe", max_tool_calls=1)
    telemetry(otel).attach(breaker)
    with otel.tracer.start_as_current_span("run"):
        for q in ("a", "b"):
            breaker.before_tool("search", {"q": q})
            breaker.after_tool("search", {"q": q}, result=q)
    verdicts = [(e.attributes or {}).get("loopguard.verdict") for e in otel.span("run").events]
    assert verdicts == ["admitted", "recorded", "observed", "admitted", "recorded"]
    assert TRIP_EVENT not in [e.name for e in otel.span("run").events]
    assert otel.total(CALLS) == 2 and otel.total(CALLS, **{"loopguard.verdict": "admitted"}) == 2
    assert otel.total(TRIPS, **{"loopguard.verdict": "observed", "loopguard.reason": "tool_ceiling"}) == 1
    assert otel.total(TRIPS, **{"loopguard.verdict": "refused"}) == 0


def test_an_approval_request_is_a_verdict_with_its_request_id(otel: Otel) -> None:
    breaker = Breaker(tools={"refund": ToolPolicy(irreversible=True)}, approvals=MemoryApprovals())
    telemetry(otel).attach(breaker)
    with otel.tracer.start_as_current_span("run"), pytest.raises(ApprovalRequired) as waiting:
        breaker.before_tool("refund", {"order": ARG_MARKER, "amount_eur": 30})
    (event,) = otel.span("run").events
    attrs = dict(event.attributes or {})
    assert attrs["loopguard.verdict"] == "approval_requested"
    assert attrs["loopguard.approval.request_id"] == waiting.value.request_id
    assert otel.total(CALLS, **{"loopguard.verdict": "approval_requested", "gen_ai.tool.name": "refund"}) == 1
    assert ARG_MARKER not in otel.everything()


def test_the_budget_gauge_reports_what_the_registered_callables_say(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    tel = telemetry(otel)
    left = {"usd": 12.5}
    tel.watch_budget("tenant-42/day", lambda: left["usd"])
    tel.watch_budget("tenant-42/day", lambda: 90_000, unit="{token}")
    tel.watch_budget("not-yet-known", lambda: None)

    def broken() -> float:
        raise RuntimeError("budget store down")

    tel.watch_budget("broken", broken)
    points = {(a["loopguard.budget"], a["loopguard.budget.unit"]): v for a, v in otel.points(BUDGET_REMAINING)}
    assert points == {("tenant-42/day", "{USD}"): 12.5, ("tenant-42/day", "{token}"): 90_000}
    assert "budget store down" in caplog.text

    left["usd"] = 3.25
    tel.unwatch_budget("tenant-42/day", unit="{token}")
    points = {(a["loopguard.budget"], a["loopguard.budget.unit"]): v for a, v in otel.points(BUDGET_REMAINING)}
    assert points == {("tenant-42/day", "{USD}"): 3.25}


def test_metric_names_beyond_the_bound_are_other(otel: Otel) -> None:
    breaker = Breaker(loop_detection=False)
    telemetry(otel, max_metric_names=2).attach(breaker)
    for name in ("a", "b", "c", "d", "a"):
        breaker.before_tool(name, {})
    counts = {a.get("gen_ai.tool.name"): v for a, v in otel.points(CALLS)}
    assert counts == {"a": 2, "b": 1, "_OTHER": 2}


def test_telemetry_is_a_listener_and_bad_options_are_refused(otel: Otel) -> None:
    tel = telemetry(otel)
    breaker = Breaker(on_event=tel)
    breaker.before_tool("search", {"q": "x"})
    assert otel.total(CALLS) == 1
    with pytest.raises(ValueError, match="spans must be"):
        telemetry(otel, spans="both")
    with pytest.raises(TypeError, match="Breaker"):
        tel.attach(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        tel.watch_budget("", lambda: 1.0)


def test_default_providers_are_the_global_ones() -> None:
    # With no SDK configured globally, the API's no-op providers: nothing is exported, nothing fails.
    breaker = Breaker(max_tool_calls=1)
    Telemetry().attach(breaker)
    breaker.before_tool("search", {"q": "x"})
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "y"})


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if opentelemetry-api were not installed
    with pytest.raises(MissingExtra) as missing:
        Telemetry()
    assert missing.value.extra == "otel"
    assert 'pip install "loopguard-core[otel]"' in str(missing.value)


def test_facts_an_event_carries_become_attributes(otel: Otel) -> None:
    from loopguard_core.events import GuardEvent

    tel = telemetry(otel)
    trip = LoopGuardTripped("cost_ceiling", budget="tenant-acme", limit=50.0, observed=50.4, terminal=True)
    with otel.tracer.start_as_current_span("run"):
        tel.on_event(GuardEvent("tool", "admitted", "refund", "run-1", "s", facts={"call_id": "call_7"}))
        tel.on_event(GuardEvent("model", "refused", "gpt-test", "run-1", "s", reason="cost_ceiling", trip=trip))
    admitted, refused, tripped = (dict(e.attributes or {}) for e in otel.span("run").events)
    assert admitted["gen_ai.tool.call.id"] == "call_7"
    assert refused["loopguard.budget"] == "tenant-acme" and refused["loopguard.terminal"] is True
    assert (tripped["loopguard.limit"], tripped["loopguard.observed"]) == (50.0, 50.4)
    assert otel.total(TRIPS, **{"loopguard.reason": "cost_ceiling", "loopguard.kind": "model"}) == 1


def test_the_documented_setup_runs() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "telemetry.md").read_text(encoding="utf-8")
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/telemetry.md", "exec"), namespace)
    assert isinstance(namespace["telemetry"], Telemetry)


def test_budgets_are_watched_process_wide(otel: Otel) -> None:
    # two Telemetry on one meter provider share its instruments: budgets watched through either are reported
    first, second = telemetry(otel), telemetry(otel)
    second.watch_budget("app/month", lambda: 420.0)
    watch_budget("tenant-acme", lambda: 7, unit="{turn}")  # what a budgets module calls: no Telemetry needed
    assert first is not second
    points = {(a["loopguard.budget"], a["loopguard.budget.unit"]): v for a, v in otel.points(BUDGET_REMAINING)}
    assert points == {("app/month", "{USD}"): 420.0, ("tenant-acme", "{turn}"): 7}
    unwatch_budget("tenant-acme", unit="{turn}")
    first.unwatch_budget("app/month")
    assert otel.points(BUDGET_REMAINING) == []


def test_the_breakers_budgets_feed_the_gauge(otel: Otel) -> None:
    from loopguard_core.budgets import Budget, MemoryBudgets

    daily = Budget("tenant-acme", period="day", max_cost_usd=1.0, max_turns=10)
    breaker = Breaker(budgets=[daily], budget_store=MemoryBudgets(), prices=StaticPrices({"m": (1.0, 1.0)}))
    telemetry(otel).attach(breaker)
    breaker.before_model(model="m", estimated_input_tokens=100_000, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=100_000, output_tokens=0)
    points = {(a["loopguard.budget"], a["loopguard.budget.unit"]): v for a, v in otel.points(BUDGET_REMAINING)}
    assert points == {("tenant-acme", "{USD}"): pytest.approx(0.9), ("tenant-acme", "{turn}"): 9}
