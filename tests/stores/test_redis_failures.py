"""When Redis is unreachable or restarts: refuse fast (fail-closed) or admit with a warning (fail-open),
never hang, never run a guarded call unchecked by accident, and work again once Redis is back."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.errors import StoreError
from loopguard_core.limits import Limits
from loopguard_core.stores.base import ModelRequest, ModelUsage, RunKey, ToolOutcome, ToolRequest

from .conftest import PrivateRedis

pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore

pytestmark = pytest.mark.redis

REFUSED_PORT_URL = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
LIMITS = Limits(max_turns=100)


def tool(sig: str = "s") -> ToolRequest:
    return ToolRequest("search", sig, 0.0, None, None)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def test_fail_closed_refuses_within_a_second() -> None:
    store = RedisStore(REFUSED_PORT_URL, outage_backoff_seconds=0)
    run = RunKey("s", "r")
    for step in (
        lambda: store.admit_tool(run, tool(), LIMITS),
        lambda: store.admit_model(run, ModelRequest(1, 1, 0.0), LIMITS),
    ):
        verdict, seconds = timed(step)
        assert seconds < 1.0
        assert (verdict.admitted, verdict.reason, verdict.terminal) == (False, "store_unavailable", False)
        assert verdict.facts["policy"] == "closed"
        assert verdict.facts["error"]
        assert "hunter2" not in verdict.facts["url"]
        assert verdict.facts["url"].startswith("redis://")


def test_the_breaker_raises_a_clear_trip_and_the_tool_never_runs() -> None:
    breaker = Breaker(store=RedisStore(REFUSED_PORT_URL), scope="crew-1")
    ran = []

    def guarded_search() -> None:
        breaker.before_tool("search", {"q": "x"})
        ran.append(True)  # the tool body

    with pytest.raises(LoopGuardTripped) as caught:
        guarded_search()
    assert not ran
    error = caught.value
    assert error.reason == "store_unavailable"
    assert error.facts["policy"] == "closed"
    assert "127.0.0.1:1" in str(error)
    assert "failure policy is closed" in str(error)
    assert "hunter2" not in str(error)
    with pytest.raises(LoopGuardTripped, match="store_unavailable"):
        breaker.before_model(max_output_tokens=10)


def test_fail_open_admits_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(REFUSED_PORT_URL, failure_policy="open")
    run = RunKey("s", "r")
    with caplog.at_level(logging.WARNING, logger="loopguard.stores.redis"):
        verdicts = [store.admit_tool(run, tool(f"q{i}"), LIMITS) for i in range(20)]
    assert all(v.admitted for v in verdicts)
    warnings = [r for r in caplog.records if "failure_policy='open'" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "127.0.0.1:1" in warnings[0].getMessage()
    assert "hunter2" not in warnings[0].getMessage()


def test_a_lost_record_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(REFUSED_PORT_URL)
    run = RunKey("s", "r")
    with caplog.at_level(logging.ERROR, logger="loopguard.stores.redis"):
        store.record_tool(run, ToolOutcome("search", "s", "o", False, 0.0), LIMITS)
        store.record_model(run, ModelUsage(10, 10, 0.0), LIMITS)
    assert any("not counted" in r.getMessage() for r in caplog.records)


def test_reading_state_from_an_unreachable_store_is_a_clear_error() -> None:
    store = RedisStore(REFUSED_PORT_URL)
    with pytest.raises(StoreError, match=r"redis://:\*\*\*@127\.0\.0\.1:1/0.*failure_policy='closed'"):
        store.snapshot(RunKey("s", "r"))
    with pytest.raises(StoreError, match="reset"):
        store.reset(RunKey("s", "r"))
    with pytest.raises(StoreError, match="reach"):
        store.ping()
    store.drop(RunKey("s", "r"))  # forgetting a run never fails: its keys expire anyway


def test_a_frozen_redis_costs_one_socket_timeout(private_redis: PrivateRedis) -> None:
    """Redis accepts connections but never answers (SIGSTOP): the socket timeout bounds the wait."""
    store = RedisStore(private_redis.url, outage_backoff_seconds=0, socket_timeout=0.25)
    run = RunKey("crew", "run")
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).admitted
    private_redis.freeze()
    try:
        verdict, seconds = timed(store.admit_model, run, ModelRequest(0, 0, 0.0), LIMITS)
        assert seconds < 1.0
        assert verdict.reason == "store_unavailable"
        assert "Timeout" in verdict.facts["error"]
        fresh = RedisStore(private_redis.url)  # a new connection: it is accepted, then nothing
        verdict, seconds = timed(fresh.admit_tool, run, tool(), LIMITS)
        assert (verdict.reason, seconds < 1.0) == ("store_unavailable", True)
    finally:
        private_redis.thaw()
    store.close()


async def test_async_fail_closed_refuses_within_a_second(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, outage_backoff_seconds=0)
    run = RunKey("crew", "run")
    assert (await store.aadmit_model(run, ModelRequest(0, 0, 0.0), LIMITS)).admitted
    private_redis.freeze()
    try:
        started = time.perf_counter()
        verdict = await store.aadmit_model(run, ModelRequest(0, 0, 0.0), LIMITS)
        assert time.perf_counter() - started < 1.0
        assert verdict.reason == "store_unavailable"
    finally:
        private_redis.thaw()
    refused = await RedisStore(REFUSED_PORT_URL).aadmit_tool(run, tool(), LIMITS)
    assert refused.reason == "store_unavailable"
    await store.aclose()


def test_redis_stopped_mid_run_then_restarted(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, outage_backoff_seconds=0)
    run = RunKey("crew", "run")
    for _ in range(3):
        assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).admitted
    private_redis.stop()
    for _ in range(3):
        verdict, seconds = timed(store.admit_model, run, ModelRequest(0, 0, 0.0), LIMITS)
        assert seconds < 1.0
        assert verdict.reason == "store_unavailable"
    private_redis.start()
    # The new server has an empty script cache: the scripts load again on first use. Without
    # persistence (--save "" --appendonly no) the run's counts were lost with the old process.
    verdict = store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS)
    assert (verdict.admitted, verdict.turn) == (True, 1)
    assert store.admit_tool(run, tool(), LIMITS).admitted
    store.close()


def test_after_a_failure_the_store_backs_off_instead_of_waiting_again(private_redis: PrivateRedis) -> None:
    store = RedisStore(private_redis.url, outage_backoff_seconds=60)
    run = RunKey("crew", "run")
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).admitted
    private_redis.stop()
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).reason == "store_unavailable"
    private_redis.start()
    # Within the back-off window the store answers by its policy without trying Redis again...
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).reason == "store_unavailable"
    # ...until a successful ping (or the window's end) shows Redis is back.
    store.ping()
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS).admitted
    store.close()


def test_a_run_that_ends_while_redis_is_down_reports_a_trip_never_a_store_error(private_redis: PrivateRedis) -> None:
    closed = Breaker(store=RedisStore(private_redis.url, outage_backoff_seconds=0), scope="ending")
    run = closed.run().open()
    closed.before_tool("search", {"q": "x"})
    closed.after_tool("search", {"q": "x"}, result="r")
    private_redis.stop()
    with pytest.raises(LoopGuardTripped) as caught:
        run.close()
    assert (caught.value.reason, caught.value.facts["step"]) == ("store_unavailable", "close")
    assert not isinstance(caught.value, StoreError)
    # A run already failing with its own error ends quietly: the store's trouble never hides that error.
    assert closed.run().open().close(ValueError("the run's own error")) is None
    opened = Breaker(store=RedisStore(private_redis.url, failure_policy="open", outage_backoff_seconds=0), scope="o")
    with opened.run() as run:  # fail-open: the run just ends
        pass
    assert run.result is None
