"""Budgets above the run: many runs draw from one budget, pre-flight, atomically, per period."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices
from loopguard_core.budgets import Budget, MemoryBudgets, RedisBudgets, SQLiteBudgets, budget_store, reports
from loopguard_core.cli import build

from .conftest import WallClock

PRICES = StaticPrices({"m": (1.0, 1.0)})  # 1 USD per million tokens each way: 1 token = 1 micro-USD
REDIS_URL = "redis://127.0.0.1:6379/15"


def turn(breaker: Breaker, tokens: int = 100, **kw: Any) -> None:
    breaker.before_model(
        model="m", estimated_input_tokens=tokens, max_output_tokens=0 if kw.pop("uncapped", False) else 1, **kw
    )
    breaker.after_model(model="m", input_tokens=tokens, output_tokens=0, **kw)


def test_runs_share_a_budget_and_the_call_that_would_exceed_it_is_refused() -> None:
    store = MemoryBudgets()
    tenant = Budget("tenant-acme", period="day", timezone="Europe/Paris", max_cost_usd=0.001)  # 1000 micro-USD
    first = Breaker(budgets=[tenant], budget_store=store, prices=PRICES)
    second = Breaker(budgets=[tenant], budget_store=store, prices=PRICES)
    for _ in range(4):
        turn(first, 100)  # projected 101 micro-USD each: reserve, then settle at 100
    for _ in range(5):
        turn(second, 100)
    assert first.budgets[0].used["cost_micros"] == 900
    with pytest.raises(LoopGuardTripped) as refused:
        turn(second, 100)  # 900 spent + 101 projected > 1000
    trip = refused.value
    assert (trip.reason, trip.facts["budget"], trip.facts["period"], trip.terminal) == (
        "budget",
        "tenant-acme",
        "day",
        True,
    )
    assert trip.facts["ceiling"] == "max_cost_usd" and trip.facts["limit"] == 0.001
    assert "resets" in str(trip) and "Europe/Paris" in str(trip) and not trip.steerable
    assert second.budgets[0].used["cost_micros"] == 900  # nothing reserved by the refused call
    turn(second, 99)  # exactly reaching the ceiling is allowed
    assert second.budgets[0].used["cost_micros"] == 999


def test_every_budget_at_once_or_none() -> None:
    store = MemoryBudgets()
    tenant = Budget("tenant", max_turns=10)
    app = Budget("app", max_turns=2)
    breaker = Breaker(budgets=[tenant, app], budget_store=store, allow_unpriced=True)
    turn(breaker)
    turn(breaker)
    with pytest.raises(LoopGuardTripped, match="'app'"):
        turn(breaker)
    used = {r.name: r.used["turns"] for r in breaker.budgets}
    assert used == {"tenant": 2, "app": 2}  # the tenant did not keep the refused call's turn


def test_a_call_the_run_refuses_gives_its_budget_reservation_back() -> None:
    store, budget = MemoryBudgets(), Budget("b", max_turns=100, max_tool_calls=100)
    models = Breaker(budgets=[budget], budget_store=store, max_turns=1, allow_unpriced=True)
    turn(models)
    with pytest.raises(LoopGuardTripped, match="max_turns"):
        turn(models)
    tools = Breaker(budgets=[budget], budget_store=store, max_tool_calls=1)
    tools.before_tool("search", {"q": "a"})
    with pytest.raises(LoopGuardTripped, match="tool"):
        tools.before_tool("search", {"q": "b"})
    report = tools.budgets[0]
    assert (report.used["turns"], report.used["tool_calls"], report.in_flight["turns"]) == (1, 1, 0)


def test_a_failed_model_call_releases_and_an_unreported_one_expires(wall: WallClock) -> None:
    store = MemoryBudgets(wall_clock=wall)
    breaker = Breaker(budgets=[Budget("b", max_tokens=1_000)], budget_store=store, allow_unpriced=True)
    breaker.before_model(model="m", estimated_input_tokens=600, max_output_tokens=100)
    assert breaker.budgets[0].in_flight["tokens"] == 700
    breaker.model_failed(model="m")
    assert breaker.budgets[0].in_flight["tokens"] == 0
    other = Breaker(budgets=[Budget("b", max_tokens=1_000)], budget_store=store, allow_unpriced=True)
    other.before_model(model="m", estimated_input_tokens=600, max_output_tokens=100)  # never reports
    with pytest.raises(LoopGuardTripped, match="budget"):
        breaker.before_model(model="m", estimated_input_tokens=600, max_output_tokens=100)
    wall.now += 601  # the hold of a call that never reported expires
    breaker.before_model(model="m", estimated_input_tokens=600, max_output_tokens=100)


def test_the_period_rolls_over_at_local_midnight(wall: WallClock) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    wall.now = dt.datetime(2026, 12, 4, 23, 59, tzinfo=paris).timestamp()
    store = MemoryBudgets(wall_clock=wall)
    daily = Budget("daily", period="day", timezone="Europe/Paris", max_turns=2)
    breaker = Breaker(budgets=[daily], budget_store=store, allow_unpriced=True)
    turn(breaker)
    turn(breaker)
    with pytest.raises(LoopGuardTripped) as refused:
        turn(breaker)
    assert refused.value.facts["resets_at"] == "2026-12-05T00:00+01:00"
    wall.now += 120  # 00:01 in Paris: a new day
    turn(breaker)
    assert [(r.window, r.used["turns"]) for r in reports(store)] == [("2026-12-04", 2), ("2026-12-05", 1)]


def test_windows_follow_the_calendar_in_the_time_zone() -> None:
    paris = Budget("x", period="day", timezone="Europe/Paris", max_turns=1)
    # 2026-10-25 is 25 hours long in Paris (DST ends): the day still ends at local midnight
    window = paris.window(dt.datetime(2026, 10, 25, 12, tzinfo=dt.timezone.utc).timestamp())
    assert window.key == "2026-10-25" and window.resets_at is not None
    assert window.resets_at.isoformat() == "2026-10-26T00:00:00+01:00"
    month = Budget("y", period="month", max_cost_usd=1).window(
        dt.datetime(2026, 12, 31, 23, tzinfo=dt.timezone.utc).timestamp()
    )
    assert (month.key, month.resets_at.isoformat() if month.resets_at else None) == (
        "2026-12",
        "2027-01-01T00:00:00+00:00",
    )
    hour = Budget("z", period="hour", max_turns=1).window(
        dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.timezone.utc).timestamp()
    )
    assert hour.key == "2026-03-29T00"
    assert Budget("n", max_turns=1).window(0).resets_at is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, TypeError, "name"),
        ({"name": "x", "period": "week", "max_turns": 1}, ValueError, "period"),
        ({"name": "x", "timezone": "Mars/Olympus", "max_turns": 1}, ValueError, "time zone"),
        ({"name": "x", "max_cost_usd": -1}, ValueError, "max_cost_usd"),
        ({"name": "x", "max_cost_usd": float("nan")}, ValueError, "max_cost_usd"),
        ({"name": "x", "max_turns": True}, TypeError, "max_turns"),
        ({"name": "x"}, ValueError, "no ceiling"),
    ],
)
def test_bad_budgets_say_what_to_fix(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Budget(**kwargs)


def test_bad_breaker_options_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="budgets must"):
        Breaker(budgets=Budget("x", max_turns=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate names"):
        Breaker(budgets=[Budget("x", max_turns=1), Budget("x", max_turns=2)])
    with pytest.raises(ValueError, match="unknown budget store URL"):
        budget_store("ftp://x")
    assert isinstance(budget_store(f"sqlite:///{tmp_path}/b.db"), SQLiteBudgets)


# -- many processes, many threads: one budget never overspent ------------------------------------------
LIMIT = 120


def _draw(url: str, prefix: str | None, threads: int, calls: int, out: Any) -> None:
    store = RedisBudgets(url, prefix=prefix) if prefix else budget_store(url)
    budget = Budget("shared", period="day", max_turns=LIMIT, max_tokens=LIMIT * 100)
    admitted = []

    def worker() -> None:
        breaker = Breaker(budgets=[budget], budget_store=store, allow_unpriced=True)
        ok = 0
        for _ in range(calls):
            try:
                breaker.before_model(model="m", estimated_input_tokens=99, max_output_tokens=1)
            except LoopGuardTripped as trip:
                assert trip.reason == "budget", trip
                continue
            breaker.after_model(model="m", input_tokens=99, output_tokens=1)
            ok += 1
        admitted.append(ok)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(sum(admitted))


def _race(url: str, prefix: str | None = None) -> int:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_draw, args=(url, prefix, 8, 10, out)) for _ in range(4)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return total


def test_four_processes_of_eight_threads_never_overspend_a_sqlite_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/budgets.db"
    assert _race(url) == LIMIT  # 320 attempts, exactly the ceiling admitted
    report = reports(budget_store(url))[0]
    assert report.used["turns"] == LIMIT and report.used["tokens"] == LIMIT * 100


@pytest.mark.redis
def test_four_processes_of_eight_threads_never_overspend_a_redis_budget(redis_budget_prefix: str) -> None:
    assert _race(REDIS_URL, redis_budget_prefix) == LIMIT
    report = reports(RedisBudgets(REDIS_URL, prefix=redis_budget_prefix))[0]
    assert report.used["turns"] == LIMIT


def test_an_unreachable_budget_store_refuses_under_the_closed_policy() -> None:
    breaker = Breaker(
        budgets=[Budget("b", max_turns=5)],
        budget_store=RedisBudgets("redis://127.0.0.1:1/0", socket_timeout=0.2),
        allow_unpriced=True,
    )
    with pytest.raises(LoopGuardTripped) as refused:
        turn(breaker)
    assert refused.value.reason == "store_unavailable" and refused.value.facts["step"] == "budgets"


def test_the_cli_shows_spend_per_budget_and_period(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/budgets.db"
    breaker = Breaker(budgets=[Budget("tenant-acme", period="day", max_cost_usd=0.01)], budget_store=url, prices=PRICES)
    turn(breaker, 500)
    result = CliRunner().invoke(build(), ["budgets", "--store", url])
    assert result.exit_code == 0, result.output
    assert "tenant-acme" in result.output and "0.000500" in result.output and "0.010000" in result.output
    as_json = CliRunner().invoke(build(), ["budgets", "--store", url, "--json"])
    assert '"name": "tenant-acme"' in as_json.output
