"""Any input a model can produce is checked and never crashes a check, in every store and the ledger alike;
numbers at the edges give a clear error at construction or trip the ceiling they are past."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import Breaker, Ledger, LoopGuardTripped
from loopguard_core.ledger import LedgerError

from .._build import type_error
from .conftest import PATIENT

LONE = json.loads('"\\ud800"')  # a lone surrogate: valid JSON, not encodable as UTF-8


class Unreadable(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items() raised")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ raised")

    def __len__(self) -> int:
        raise RuntimeError("__len__ raised")


class LazyProxy:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"attribute {name} raised")

    def __repr__(self) -> str:
        raise RuntimeError("repr raised")


HOSTILE: list[Any] = [
    {"q": LONE},
    {"n": 10**5000},
    Unreadable(a=1),
    {"proxy": LazyProxy()},
    LazyProxy(),
    {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    "x" * 3_000_000,
]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def breaker(request: pytest.FixtureRequest, scope: str, tmp_path: Path) -> Iterator[Breaker]:
    ledger = Ledger(tmp_path / "ledger.db")
    if request.param == "memory":
        yield Breaker(ledger=ledger, session_id="s" + LONE)
    else:
        from loopguard_core.stores.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        yield Breaker(store=RedisStore(url, **PATIENT), scope=scope, ledger=ledger, session_id="s" + LONE)
    ledger.close()


@pytest.mark.parametrize("args", HOSTILE, ids=lambda a: type(a).__name__)
def test_hostile_arguments_and_results_are_checked_and_still_repeat(breaker: Breaker, args: Any) -> None:
    for _ in range(3):
        breaker.before_tool("search" + LONE, args, agent="agent" + LONE, call_id=None)
        breaker.after_tool("search" + LONE, args, result=args, agent="agent" + LONE)
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("search" + LONE, args, agent="agent" + LONE)
    assert caught.value.reason == "loop"


def test_lone_surrogates_in_names_and_ids_are_treated_alike_by_every_store(breaker: Breaker) -> None:
    breaker.before_tool(LONE, {"a": 1}, agent=LONE, call_id=LONE)
    breaker.after_tool(LONE, {"a": 1}, result="ok", agent=LONE, call_id=LONE)
    breaker.before_model(model="m", agent=LONE, call_id=LONE)
    breaker.after_model(input_tokens=1, output_tokens=1, agent=LONE, call_id=LONE)
    usage = breaker.usage()
    assert usage.tool_calls == 1 and list(usage.calls_per_tool) == ["\\ud800"]


def test_values_past_every_store_s_range_trip_the_ceiling_and_break_nothing(breaker: Breaker) -> None:
    limited = Breaker(max_tokens=1_000, store=breaker._store, scope=breaker.scope + "-tokens")
    with pytest.raises(LoopGuardTripped) as caught:
        limited.before_model(estimated_input_tokens=10**30, max_output_tokens=10)
    assert caught.value.reason == "token_ceiling"
    breaker.after_model(input_tokens=10**40, output_tokens=1, cost_usd=1e300)  # recorded, clamped
    assert breaker.usage().tokens > 10**15


def test_the_ledger_gives_its_own_clear_errors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(LedgerError, match="64 bits"):
        ledger.record(session_id="s", origin="model", turn=1, input_tokens=2**70)
    with pytest.raises(LedgerError, match="busy_timeout"):
        Ledger(tmp_path / "b.db", busy_timeout=float("inf"))
    with pytest.raises(LedgerError, match="synchronous"):
        Ledger(tmp_path / "c.db", synchronous=1)  # type: ignore[arg-type]
    ledger.record(session_id=LONE, origin="tool", turn=1, tool=LONE, agent=LONE, input_text=LONE, breach_reason=LONE)
    assert ledger.verify().ok


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_cost_usd": 1e303}, "max_cost_usd must be at most"),
        ({"max_turns": 2**64}, "max_turns must be at most"),
        ({"max_seconds": 1e300}, "max_seconds must be at most"),
        ({"recovery_seconds": float("inf")}, "recovery_seconds"),
        ({"max_calls_per_tool": {"t": 2**60}}, "at most"),
    ],
)
def test_configurations_no_store_can_hold_are_refused_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Breaker(**kwargs)


def test_reported_numbers_that_are_not_numbers_are_refused_clearly() -> None:
    breaker = Breaker()
    with pytest.raises(ValueError, match="cost_usd must be a finite number"):
        breaker.after_model(input_tokens=1, output_tokens=1, cost_usd=float("inf"))
    with pytest.raises(TypeError, match=type_error("tool must be the tool's name")):
        breaker.before_tool(LazyProxy())  # type: ignore[arg-type]
