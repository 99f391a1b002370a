"""From a breaker's events to alerts: thresholds once per run, trips, observe mode, approvals; never arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, StaticPrices, ToolPolicy
from loopguard_core.alerts import Alert, Alerts, CallbackSink, JSONFormat, PagerDutyFormat, Retry, SlackFormat
from loopguard_core.approvals import MemoryApprovals
from loopguard_core.events import GuardEvent

from .conftest import FAST


@pytest.fixture
def got(opened: list[Alerts]) -> tuple[Alerts, list[Alert]]:
    collected: list[Alert] = []
    alerts = Alerts(CallbackSink(collected.append), thresholds=(0.5, 0.8), retry=FAST, dead_letter=None)
    opened.append(alerts)
    return alerts, collected


def delivered(alerts: Alerts, collected: list[Alert]) -> list[Alert]:
    assert alerts.flush(timeout=5)
    return list(collected)


def loop(step: Callable[[], None], times: int = 6) -> None:
    for _ in range(times):
        step()


def tool(breaker: Breaker, name: str, args: Any, result: Any = "ok") -> None:
    breaker.before_tool(name, args)
    breaker.after_tool(name, args, result=result)


def test_each_threshold_once_per_run_and_again_in_a_new_run(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker(max_tool_calls=10)
    alerts.attach(breaker)
    with breaker.run("first"):
        for n in range(10):  # 50% at call 5, 80% at call 8, then stays above both
            tool(breaker, "search", {"q": n})
    firsts = delivered(alerts, collected)
    assert [(a.kind, a.facts["threshold"], a.facts["used"]) for a in firsts] == [
        ("threshold", 0.5, 5),
        ("threshold", 0.8, 8),
    ]
    assert firsts[0].severity == "warning" and firsts[0].session_id == "first"
    assert firsts[1].dedup_key == ("threshold", breaker.scope, "first", "max_tool_calls", 0.8)
    assert "80% of max_tool_calls" in firsts[1].title and "8 of max_tool_calls=10" in firsts[1].text
    with breaker.run("second"):
        for n in range(8):
            tool(breaker, "search", {"q": n})
    seconds = delivered(alerts, collected)[2:]
    assert [(a.session_id, a.facts["threshold"]) for a in seconds] == [("second", 0.5), ("second", 0.8)]


def test_a_jump_past_several_thresholds_is_one_alert(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker(max_tokens=1_000)
    alerts.attach(breaker)
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=800, output_tokens=100)  # 0% -> 90%
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=10, output_tokens=10)
    (one,) = delivered(alerts, collected)
    assert (one.facts["metric"], one.facts["threshold"], one.facts["used"]) == ("max_tokens", 0.8, 900)


def test_every_ceiling_that_is_set_is_watched(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker(
        max_turns=2,
        max_cost_usd=1.0,
        max_calls_per_tool={"fetch": 2},
        prices=StaticPrices({"m": (1.0, 1.0)}),
    )
    alerts.attach(breaker, thresholds=0.5)
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=400_000, output_tokens=200_000)  # 0.60 USD, 1 of 2 turns
    tool(breaker, "fetch", {"url": 1})
    metrics = {a.facts["metric"]: a for a in delivered(alerts, collected)}
    assert set(metrics) == {"max_turns", "max_cost_usd", "max_calls_per_tool[fetch]"}
    assert metrics["max_cost_usd"].facts["used"] == pytest.approx(0.6)
    assert metrics["max_calls_per_tool[fetch]"].facts["tool"] == "fetch"


def test_no_ceiling_means_no_store_read(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, _ = got
    breaker = Breaker()
    watcher = alerts.attach(breaker)
    reads = {"n": 0}

    def usage() -> Any:
        reads["n"] += 1
        raise AssertionError("must not be read")

    watcher(GuardEvent("tool", "recorded", "search", "run", "scope", usage=usage))
    assert reads["n"] == 0


def test_a_trip_is_one_critical_alert_and_the_open_refusals_after_it_add_none(
    got: tuple[Alerts, list[Alert]],
) -> None:
    alerts, collected = got
    breaker = Breaker(max_tool_calls=1)
    alerts.attach(breaker, thresholds=())
    tool(breaker, "search", {"q": 1})
    for name in ("search", "search", "fetch"):
        with pytest.raises(LoopGuardTripped):
            breaker.before_tool(name, {"q": 2})
    (trip,) = delivered(alerts, collected)
    assert (trip.kind, trip.severity, trip.facts["reason"], trip.facts["tool"]) == (
        "trip",
        "critical",
        "tool_ceiling",
        "search",
    )
    assert trip.text.startswith("loopguard refused the call [tool_ceiling]")


def test_a_loop_trip_names_its_rule(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker()
    alerts.attach(breaker)
    with pytest.raises(LoopGuardTripped):
        loop(lambda: tool(breaker, "search", {"q": "same"}, result="nothing"))
    (trip,) = delivered(alerts, collected)
    assert trip.facts["reason"] == "loop" and trip.title.startswith("loopguard refused tool 'search': loop/")


def test_observe_mode_refusals_are_warnings(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker(mode="observe", max_tool_calls=1)
    alerts.attach(breaker, thresholds=())
    for n in range(3):
        tool(breaker, "search", {"q": n})
    (seen,) = delivered(alerts, collected)
    assert (seen.kind, seen.severity) == ("observed", "warning")
    assert "would have refused" in seen.title


def test_an_approval_request_is_an_alert_with_its_id(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    breaker = Breaker(tools={"refund": ToolPolicy(irreversible=True)}, approvals=MemoryApprovals())
    alerts.attach(breaker)
    for _ in range(2):  # asked twice: still one request, one alert
        with pytest.raises(ApprovalRequired) as asked:
            breaker.before_tool("refund", {"order": "A-17"})
    (waiting,) = delivered(alerts, collected)
    assert (waiting.kind, waiting.facts["request_id"]) == ("approval", asked.value.request_id)
    assert f"loopguard approvals approve {asked.value.request_id}" in waiting.text


def test_submit_from_other_code_with_a_budget_key(got: tuple[Alerts, list[Alert]]) -> None:
    alerts, collected = got
    key = ("budget", "tenant-a daily", "2025-01-01", "max_cost_usd", 0.8)
    budget = Alert.threshold(
        subject="budget 'tenant-a daily'", metric="max_cost_usd", used=41.0, limit=50.0, threshold=0.8, dedup_key=key
    )
    assert alerts.submit(budget)
    assert not alerts.submit(Alert.threshold(subject="x", metric="m", used=1, limit=1, threshold=0.8, dedup_key=key))
    (one,) = delivered(alerts, collected)
    assert one.title == "loopguard: budget 'tenant-a daily' passed 80% of max_cost_usd"


MARKER = "zqxmarkerwk"


def test_no_alert_payload_or_dead_letter_line_holds_arguments_results_or_prompts(
    opened: list[Alerts], tmp_path: Path
) -> None:
    collected: list[Alert] = []
    dead = tmp_path / "dead.jsonl"

    def refuse(alert: Alert) -> None:
        raise ValueError("never delivered")

    alerts = Alerts(
        [CallbackSink(collected.append), CallbackSink(refuse, name="refuse")],
        thresholds=(0.5,),
        retry=Retry(initial=0.01, max_attempts=1),  # the failing sink dead-letters each
        dead_letter=dead,
    )
    opened.append(alerts)
    policy = ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['note']}")  # a preview that shows args
    breaker = Breaker(max_tool_calls=6, max_tokens=10_000, tools={"refund": policy}, approvals=MemoryApprovals())
    alerts.attach(breaker)
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(model="m", input_tokens=9_000, output_tokens=10, input=f"prompt {MARKER}")
    with pytest.raises(ApprovalRequired):
        breaker.before_tool("refund", {"note": MARKER})

    def search() -> None:
        breaker.before_tool("search", {"q": MARKER})
        breaker.after_tool("search", {"q": MARKER}, result=f"{MARKER} nothing", error=f"{MARKER} failed")

    with pytest.raises(LoopGuardTripped):
        loop(search)
    assert alerts.flush(timeout=5)
    kinds = {a.kind for a in collected}
    assert {"threshold", "trip", "approval"} <= kinds
    rendered = [
        json.dumps(fmt.render(a)) for a in collected for fmt in (JSONFormat(), SlackFormat(), PagerDutyFormat("k"))
    ]
    text = "\n".join(rendered) + repr(collected) + dead.read_text()
    assert MARKER not in text
    assert len(dead.read_text().splitlines()) == len(collected)
