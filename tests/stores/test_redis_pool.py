"""Connections, cluster URLs and digests of the Redis store: a busy pool is waited for and is never taken for
an outage; ``redis+cluster://`` URLs; with a ``digest_key`` Redis holds only keyed digests."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.limits import Limits
from loopguard_core.signatures import call_signature
from loopguard_core.stores.base import ModelRequest, RunKey

from .conftest import PATIENT, PrivateRedis, services_required

if not services_required():
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

import redis

from loopguard_core.stores.redis import RedisStore

LIMITS = Limits(max_turns=1_000)


def model(store: RedisStore, run: RunKey) -> Any:
    return store.admit_model(run, ModelRequest(1, 0, 0.0), LIMITS)


def test_the_store_pools_max_connections_blocking_connections_without_retries() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", max_connections=7, pool_timeout=3)  # never connects here
    pool = store._pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 3.0)
    assert pool.connection_kwargs["retry"].get_retries() == 0  # a debit is never re-sent blindly
    assert store._gate_size == 7
    from_url = RedisStore.from_url("redis://127.0.0.1:1/0?max_connections=3&pool_timeout=0.5")
    assert (from_url._pool.max_connections, from_url._pool_timeout) == (3, 0.5)
    for bad in ({"max_connections": 0}, {"max_connections": True}, {"pool_timeout": 0}, {"pool_timeout": "1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RedisStore("redis://127.0.0.1:1/0", **bad)


def test_a_full_pool_is_waited_for_and_never_starts_the_outage_backoff(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, max_connections=2, pool_timeout=1.0, outage_backoff_seconds=60, **PATIENT)
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    # Every connection slot is busy (two checks in flight elsewhere in this process) for longer than
    # pool_timeout: this check is answered by the policy...
    store._gate.acquire()
    store._gate.acquire()
    started = time.monotonic()
    busy = model(store, run)
    assert 0.9 < time.monotonic() - started < 5.0
    assert (busy.admitted, busy.reason) == (False, "store_unavailable")
    assert busy.facts["error"].startswith("ConnectionPoolBusy: all 2 connections")
    # ...and a slot freed within pool_timeout is taken: the waiting check goes through.
    threading.Timer(0.1, store._gate.release).start()
    assert model(store, run).admitted
    store._gate.release()
    # Redis itself was never found down: no back-off (60 s here) keeps the next checks from Redis.
    assert [model(store, run).admitted for _ in range(3)] == [True, True, True]
    assert store.snapshot(run).turns == 5
    store.close()


def test_a_users_client_with_a_small_pool_makes_checks_wait_not_fail(redis_url: str, scope: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, max_connections=1, socket_timeout=2)
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(redis_url, client=client, outage_backoff_seconds=60, pool_timeout=1.0)
    assert store._gate_size == 1  # never asks the user's pool for more than it has
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    held = pool.get_connection()  # the user's own code holds the pool's only connection...
    threading.Timer(0.2, pool.release, args=(held,)).start()  # ...for 0.2 s
    started = time.monotonic()
    assert model(store, run).admitted  # redis-py said "Too many connections": never sent, so sent again
    assert time.monotonic() - started >= 0.15
    held = pool.get_connection()  # now for longer than pool_timeout
    busy = model(store, run)
    assert (busy.reason, busy.facts["error"].split(":")[0]) == ("store_unavailable", "ConnectionPoolBusy")
    pool.release(held)
    assert model(store, run).admitted  # no back-off
    assert store.snapshot(run).turns == 3
    client.close()


def test_a_store_built_while_the_cluster_is_down_answers_by_its_policy(scope: str) -> None:
    """A cluster client reaches the cluster when made: the store makes it on first use, so building a
    Breaker never fails because Redis is down, and calls are answered by the failure policy."""
    closed = RedisStore("redis+cluster://127.0.0.1:1,127.0.0.1:2/0", outage_backoff_seconds=0)
    refused = model(closed, RunKey(scope, "r"))
    assert (refused.reason, refused.facts["url"]) == ("store_unavailable", "redis+cluster://127.0.0.1:1,127.0.0.1:2/0")
    breaker = Breaker(store=RedisStore("redis+cluster://127.0.0.1:1/0", failure_policy="open"), scope=scope)
    breaker.before_model(max_output_tokens=1)  # admitted unchecked, with a warning
    with pytest.raises(LoopGuardTripped, match="store_unavailable"):
        Breaker(store=closed, scope=scope).before_tool("search", {"q": "x"})


def test_cluster_urls_name_nodes_credentials_and_refuse_what_a_cluster_cannot_do() -> None:
    from loopguard_core.stores.redis import _cluster_options

    options = _cluster_options("rediss+cluster://alice:s%3Acret@10.0.0.1:7000,[::1]:7001,cache/0")
    assert options == {
        "username": "alice",
        "password": "s:cret",
        "nodes": [("10.0.0.1", 7000), ("::1", 7001), ("cache", 6379)],
        "ssl": True,
    }
    assert _cluster_options("redis+cluster://:pw@h:1")["password"] == "pw"
    with pytest.raises(ValueError, match="only database 0"):
        RedisStore("redis+cluster://h:7000/3")
    with pytest.raises(ValueError, match="not store options"):
        RedisStore.from_url("redis+cluster://h:7000?decode_responses=1&failure_policy=open")
    with pytest.raises(ValueError, match="bad node"):
        RedisStore("redis+cluster://h:7000,h:port")
    store = RedisStore.from_url("redis+cluster://:hunter2@h:7000,h:7001/0?failure_policy=open")
    assert (store.failure_policy, store.url) == ("open", "redis+cluster://:***@h:7000,h:7001/0")


def test_with_a_digest_key_redis_holds_only_keyed_digests(redis_url: str, scope: str, redis_client: Any) -> None:
    """Before: the breaker's call signature (a plain digest of the canonical arguments, which anyone can
    recompute for a guessed argument) was written to Redis as is, in the calls-in-flight hash and with the
    first verdict of each call id."""
    args = {"query": "the quarterly numbers of acme"}
    plain = call_signature("search", args)
    breaker = Breaker(store=RedisStore(redis_url, digest_key=b"k" * 32, **PATIENT), scope=scope)
    for i in range(2):
        breaker.before_tool("search", args, call_id=f"c{i}")
        breaker.after_tool("search", args, result="nothing", call_id=f"c{i}")
    breaker.before_tool("search", args, call_id="c-open")  # in flight
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("search", args, call_id="c-loop")
    assert caught.value.facts["signature"] == plain  # the caller still gets its own signature back
    held = dump(redis_client, scope)
    assert plain.encode() not in held and plain[:16].encode() not in held
    # Without a key the call digests are plain (like the ledger without hmac_key): the signature is there.
    unkeyed = Breaker(store=RedisStore(redis_url, **PATIENT), scope=scope + "-plain")
    unkeyed.before_tool("search", args, call_id="c0")
    assert plain.encode() in dump(redis_client, scope + "-plain")


def dump(client: Any, scope: str) -> bytes:
    """Every key, field, value and member of ``scope``'s keys, as bytes."""
    from loopguard_core.stores.redis import key_pattern

    out: list[bytes] = []
    for key in client.scan_iter(match=key_pattern(scope), count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                out += [field, value]
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"zset":
            out += client.zrange(key, 0, -1)
        else:
            out.append(client.dump(key) or b"")
    return b"\n".join(out)


def test_a_frozen_server_under_load_costs_each_check_about_one_timeout(private_redis: PrivateRedis) -> None:
    """8 threads hold every connection waiting on a frozen server; the other 72 checks, queued for a slot, are
    answered by the policy as soon as the first timeout shows the outage (not one timeout each: 10 rounds of
    0.25 s would be 2.5 s)."""
    store = RedisStore(private_redis.url, socket_timeout=0.25, max_connections=8)
    run = RunKey("crew", "run")
    assert model(store, run).admitted
    private_redis.freeze()
    seconds: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        verdict = model(store, run)
        with lock:
            seconds.append(time.monotonic() - started)
        assert verdict.reason == "store_unavailable"

    try:
        threads = [threading.Thread(target=one) for _ in range(80)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        private_redis.thaw()
    assert len(seconds) == 80
    assert max(seconds) < 2.0, sorted(seconds)[-5:]
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_gets_its_own_connection_slots(redis_url: str, scope: str) -> None:
    """Slots held by the parent's threads at the fork never come back in the child: it starts with all of its own."""
    store = RedisStore(redis_url, max_connections=2, pool_timeout=0.2, **PATIENT)
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    store._gate.acquire()
    store._gate.acquire()  # both slots busy in the parent (as if two threads were mid-check)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_admit_or_fail, args=(store, run))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    store._gate.release()
    store._gate.release()
    assert store.snapshot(run).turns == 2
    store.close()


def _admit_or_fail(store: RedisStore, run: RunKey) -> None:
    os._exit(0 if model(store, run).admitted else 1)
