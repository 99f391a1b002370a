"""The Breaker end to end on Redis: ``Breaker(store="redis://...", scope=...)`` as a user writes it."""

from __future__ import annotations

from typing import Any

import pytest

from loopguard_core import Breaker, BreakerState, LoopGuardTripped

from .conftest import PATIENT, delete_scope, patient

pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

pytestmark = pytest.mark.redis


def search(breaker: Breaker, query: str, result: str, body_runs: list[str]) -> str:
    """A guarded tool as an adapter wraps it: check, run the body, report."""
    breaker.before_tool("search", {"q": query}, agent="researcher")
    body_runs.append(query)
    breaker.after_tool("search", {"q": query}, result=result, agent="researcher")
    return result


def test_two_breakers_naming_one_scope_are_one_breaker(redis_url: str, scope: str) -> None:
    trips: list[LoopGuardTripped] = []
    worker_a = Breaker(max_turns=3, store=patient(redis_url), scope=scope)
    worker_b = Breaker(max_turns=3, store=patient(redis_url), scope=scope, on_trip=trips.append)
    body_runs: list[str] = []

    search(worker_a, "weather in Paris", "no results", body_runs)
    search(worker_b, "weather in paris", "no results", body_runs)  # the same call, loosely matched
    search(worker_a, "weather  in Paris ", "no results", body_runs)
    with pytest.raises(LoopGuardTripped) as caught:
        search(worker_b, "Weather in Paris", "no results", body_runs)
    assert (caught.value.reason, caught.value.facts["rule"]) == ("loop", "repeat")
    assert caught.value.agent == "researcher"
    assert caught.value.facts["positions"] == [1, 2, 3]
    assert body_runs == ["weather in Paris", "weather in paris", "weather  in Paris "]  # the 4th never ran
    assert trips == [caught.value]
    assert worker_b.state is BreakerState.OPEN  # one state for both

    worker_b.reset()
    assert worker_a.state is BreakerState.CLOSED
    worker_a.before_model(max_output_tokens=100)
    worker_b.before_model(max_output_tokens=100)
    worker_a.after_model(input_tokens=10, output_tokens=20)
    worker_b.before_model(max_output_tokens=100)
    with pytest.raises(LoopGuardTripped) as caught:
        worker_a.before_model(max_output_tokens=100)
    assert (caught.value.reason, caught.value.terminal) == ("turn_ceiling", True)
    usage = worker_b.usage()
    assert (usage.turns, usage.tokens, usage.tool_calls) == (3, 30, 3)
    assert worker_a.usage() == usage


async def test_the_async_path_shares_state_with_the_sync_path(redis_url: str, scope: str) -> None:
    async_worker = Breaker(max_tool_calls=3, store=patient(redis_url), scope=scope)
    sync_worker = Breaker(max_tool_calls=3, store=patient(redis_url), scope=scope)
    await async_worker.abefore_tool("fetch", {"url": "a"})
    await async_worker.aafter_tool("fetch", {"url": "a"}, result="page a")
    sync_worker.before_tool("fetch", {"url": "b"})
    sync_worker.after_tool("fetch", {"url": "b"}, result="page b")
    await async_worker.abefore_model(max_output_tokens=10)
    await async_worker.aafter_model(input_tokens=5, output_tokens=5)
    await async_worker.abefore_tool("fetch", {"url": "c"})
    with pytest.raises(LoopGuardTripped) as caught:
        await async_worker.abefore_tool("fetch", {"url": "d"})
    assert caught.value.reason == "tool_ceiling"
    usage = sync_worker.usage()
    assert (usage.tool_calls, usage.turns, usage.tokens) == (3, 1, 10)


def test_without_a_scope_each_breaker_and_run_is_separate(redis_url: str) -> None:
    one = Breaker(max_turns=1, store=patient(redis_url))
    two = Breaker(max_turns=1, store=patient(redis_url))
    one.before_model()
    two.before_model()  # a different breaker: its own counts
    with pytest.raises(LoopGuardTripped):
        one.before_model()
    with one.run():
        one.before_model()  # a fresh run starts from zero
        assert one.usage().turns == 1
    for breaker in (one, two):
        delete_scope(redis_url, breaker.scope)


def test_store_options_travel_in_the_url(redis_url: str, scope: str) -> None:
    breaker = Breaker(store=patient(redis_url) + "&failure_policy=open&ttl_seconds=120", scope=scope)
    store = breaker._store
    assert getattr(store, "failure_policy", None) == "open"
    breaker.before_tool("search", {"q": "x"})
    unreachable = Breaker(store="redis://127.0.0.1:1/0?failure_policy=open", scope=scope)
    unreachable.before_tool("search", {"q": "x"})  # admitted, with a warning in the log
    closed = Breaker(store="redis://127.0.0.1:1/0", scope=scope)
    with pytest.raises(LoopGuardTripped, match="store_unavailable"):
        closed.before_tool("search", {"q": "x"})


def test_no_argument_word_reaches_redis_and_a_shared_digest_key_joins_processes(
    redis_url: str, scope: str, redis_client: Any
) -> None:
    secret = "lookup account sk-live-abc123 please"
    reworded = ["please lookup account sk-live-abc123", "account sk-live-abc123 lookup please", secret]
    from loopguard_core.stores.redis import RedisStore

    one = Breaker(store=RedisStore(redis_url, digest_key="shared", **PATIENT), scope=scope)
    two = Breaker(store=RedisStore(redis_url, digest_key="shared", **PATIENT), scope=scope)
    answer = "three accounts matched: basic plan, premium plan and the enterprise plan"
    for q in [secret, *reworded[:2]]:
        one.before_tool("web_search", {"q": q})
        one.after_tool("web_search", {"q": q}, result=answer)
    with pytest.raises(LoopGuardTripped) as caught:  # reworded in another process: one key, one question
        two.before_tool("web_search", {"q": "sk-live-abc123 account lookup please"})
    assert caught.value.facts["rule"] == "paraphrase"
    dump = b"".join(redis_client.dump(key) or b"" for key in redis_client.scan_iter(match=f"*{scope}*"))
    for word in ("sk-live-abc123", "lookup", "account", "please", "premium"):
        assert word.encode() not in dump
