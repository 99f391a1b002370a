"""Every store judges a batch's siblings on the window as the model saw it (the rule lives in Python)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.stores import SQLiteStore, store_from_url

from .conftest import patient

SAME = ("lookup", {"q": "same"})


def run_batch(breaker: Breaker) -> None:
    for n in range(3):
        breaker.before_tool(*SAME, call_id=f"s{n}", batch=f"m{n}")
        breaker.after_tool(*SAME, result="nothing new", call_id=f"s{n}")
    breaker.before_tool("fetch_page", {"page": 1}, call_id="p", batch="m3")
    breaker.after_tool("fetch_page", {"page": 1}, result="page 1: fresh text", call_id="p")
    with pytest.raises(LoopGuardTripped) as refused:
        breaker.before_tool(*SAME, call_id="s3", batch="m3")
    assert refused.value.reason == "loop"


def run_twins(breaker: Breaker) -> None:
    # One answer repeats the call twice after two identical calls; the first twin reports before the second
    # is checked, and still counts.
    for n in range(2):
        breaker.before_tool(*SAME, call_id=f"s{n}", batch=f"m{n}")
        breaker.after_tool(*SAME, result="nothing new", call_id=f"s{n}")
    breaker.before_tool(*SAME, call_id="t1", batch="m2")
    breaker.after_tool(*SAME, result="nothing new", call_id="t1")
    with pytest.raises(LoopGuardTripped) as refused:
        breaker.before_tool(*SAME, call_id="t2", batch="m2")
    assert refused.value.reason == "loop"


@pytest.mark.parametrize("scenario", [run_batch, run_twins])
def test_sqlite(tmp_path: Path, scenario: Callable[[Breaker], None]) -> None:
    scenario(Breaker(store=SQLiteStore(tmp_path / "runs.db"), scope=uuid.uuid4().hex))


@pytest.mark.redis
@pytest.mark.parametrize("scenario", [run_batch, run_twins])
def test_redis(redis_url: str, scenario: Callable[[Breaker], None]) -> None:
    breaker = Breaker(store=store_from_url(patient(redis_url)), scope=f"lg-test-{uuid.uuid4().hex}")
    scenario(breaker)


@pytest.mark.redis
@pytest.mark.parametrize("scenario", [run_batch, run_twins])
def test_redis_with_deferred_outcomes(redis_url: str, scenario: Callable[[Breaker], None]) -> None:
    # A sibling's outcome may wait in this process (defer_seconds): it rides with the next step of the run, which
    # applies it before reading the window, so the batch is judged the same.
    store = store_from_url(patient(redis_url) + "&defer_seconds=0.1")
    try:
        scenario(Breaker(store=store, scope=f"lg-test-{uuid.uuid4().hex}"))
    finally:
        store.close()  # type: ignore[attr-defined]
