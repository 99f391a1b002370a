"""One breaker across processes: real worker processes share budgets, loop memory and the probe.

Every worker builds its own Breaker/RedisStore after the fork, exactly as separate hosts would, and
they start together at a barrier so the races are real.
"""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices
from loopguard_core.limits import Limits
from loopguard_core.stores.base import RunKey, ToolOutcome, ToolRequest

pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore

from .conftest import PATIENT, patient

pytestmark = pytest.mark.redis

FORK = multiprocessing.get_context("fork")


def run_workers(count: int, target: Callable[..., Any], *args: Any) -> list[Any]:
    """Run ``target(barrier, *args)`` in ``count`` processes; return what each put on the queue."""
    barrier, results = FORK.Barrier(count), FORK.Queue()

    def main(index: int) -> None:
        try:
            results.put((index, target(barrier, index, *args)))
        except BaseException as exc:
            results.put((index, f"worker failed: {type(exc).__name__}: {exc}"))
            raise

    workers = [FORK.Process(target=main, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    for _, value in got:
        assert not (isinstance(value, str) and value.startswith("worker failed")), value
    return [value for _, value in sorted(got, key=lambda item: item[0])]


def _spend_turns(barrier: Any, index: int, url: str, scope: str) -> int:
    breaker = Breaker(max_turns=1_000, store=url, scope=scope)
    barrier.wait()
    admitted = 0
    while True:
        try:
            breaker.before_model(max_output_tokens=10)
        except LoopGuardTripped as trip:
            assert trip.reason in ("turn_ceiling", "open"), trip
            return admitted
        admitted += 1


def test_four_processes_share_max_turns_exactly(redis_url: str, scope: str) -> None:
    admitted = run_workers(4, _spend_turns, patient(redis_url), scope)
    assert sum(admitted) == 1_000
    assert all(count > 0 for count in admitted)  # they really raced
    assert Breaker(store=patient(redis_url), scope=scope).usage().turns == 1_000


PRICES = {"model-x": (1.0, 10.0)}  # USD per million tokens: 1 micro-USD per input token, 10 per output


def _spend_usd(barrier: Any, index: int, url: str, scope: str) -> tuple[int, int]:
    rng = random.Random(index)
    breaker = Breaker(max_cost_usd=2.5, prices=StaticPrices(PRICES), store=url, scope=scope)
    barrier.wait()
    calls = 0
    while True:
        cap = rng.randrange(200, 2_000)
        call_id = None if rng.random() < 0.5 else uuid.uuid4().hex  # with and without call ids
        try:
            breaker.before_model(model="model-x", estimated_input_tokens=1_000, max_output_tokens=cap, call_id=call_id)
        except LoopGuardTripped as trip:
            assert trip.reason in ("cost_ceiling", "open"), trip
            return calls, breaker.usage().cost_micros
        used = rng.randrange(0, cap + 1)  # a model never writes more than its own cap
        breaker.after_model(input_tokens=1_000, output_tokens=used, model="model-x", call_id=call_id)
        calls += 1


def test_a_shared_usd_ceiling_is_never_exceeded(redis_url: str, scope: str) -> None:
    results = run_workers(4, _spend_usd, patient(redis_url), scope)
    spent = Breaker(store=patient(redis_url), scope=scope).usage().cost_micros
    assert spent <= 2_500_000
    # The budget was really used, by every worker (it holds a few hundred calls: all of them race).
    assert spent >= 1_250_000
    assert all(calls > 0 for calls, _ in results)


def _loop_step(url: str, scope: str, queue: Any) -> None:
    breaker = Breaker(store=url, scope=scope)
    try:
        breaker.before_tool("search", {"q": "weather in Paris"})
        breaker.after_tool("search", {"q": "weather in Paris"}, result="no results")
        queue.put("ran")
    except LoopGuardTripped as trip:
        queue.put(trip.reason)


def test_a_loop_started_in_one_process_is_refused_in_another(redis_url: str, scope: str) -> None:
    queue = FORK.Queue()
    outcomes = []
    for _ in range(4):  # each call from a fresh process, one after the other
        process = FORK.Process(target=_loop_step, args=(patient(redis_url), scope, queue))
        process.start()
        outcomes.append(queue.get(timeout=30))
        process.join(timeout=30)
    assert outcomes == ["ran", "ran", "ran", "loop"]


PROBE_LIMITS = Limits(max_consecutive_failures=2, recovery_seconds=30)


def _probe(barrier: Any, index: int, url: str, scope: str, now: float) -> tuple[bool, bool, str | None]:
    store = RedisStore(url, clock="request", **PATIENT)
    barrier.wait()
    verdict = store.admit_tool(RunKey(scope, "run"), ToolRequest("db", f"probe-{index}", now), PROBE_LIMITS)
    return verdict.admitted, verdict.probe, verdict.reason


@pytest.mark.parametrize("round_", range(3))
def test_eight_processes_racing_at_half_open_admit_exactly_one_probe(redis_url: str, scope: str, round_: int) -> None:
    # The request clock lets every worker arrive after the recovery window without sleeping.
    store = RedisStore(redis_url, clock="request", **PATIENT)
    run, limits = RunKey(scope, "run"), PROBE_LIMITS
    for i in range(2):
        store.admit_tool(run, ToolRequest("db", f"q{i}", 0.0), limits)
        store.record_tool(run, ToolOutcome("db", f"q{i}", "err", True, 0.0), limits)
    assert store.admit_tool(run, ToolRequest("db", "q", 0.0), limits).reason == "failures"
    results = run_workers(8, _probe, redis_url, scope, 31.0)
    assert sum(admitted for admitted, _, _ in results) == 1
    assert sum(probe for _, probe, _ in results) == 1
    assert sorted(reason or "" for _, _, reason in results) == [""] + ["open"] * 7
    store.close()
