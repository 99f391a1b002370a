"""Every store judges a batch's siblings on the window as the model saw it (the rule lives in Python)."""

from __future__ import annotations

import uuid
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


def test_sqlite(tmp_path: Path) -> None:
    run_batch(Breaker(store=SQLiteStore(tmp_path / "runs.db"), scope=uuid.uuid4().hex))


@pytest.mark.redis
def test_redis(redis_url: str) -> None:
    run_batch(Breaker(store=store_from_url(patient(redis_url)), scope=f"lg-test-{uuid.uuid4().hex}"))
