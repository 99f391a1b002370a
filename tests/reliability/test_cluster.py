"""The Redis store on a Redis Cluster of three masters, each with a replica, on loopback ports started by the
test: every key of a run shares one hash slot (proved with redis-py's cluster client and the cluster's own
counts), and a failover of the master that holds the slot costs the run a bounded outage, answered by the
failure policy, after which it goes on with its counts on the promoted replica.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.errors import StoreError

from ..stores.conftest import PrivateCluster, services_required, start_cluster

if not services_required():
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from redis.cluster import ClusterNode, RedisCluster

from loopguard_core.stores.redis import RedisStore, key_pattern

pytestmark = [pytest.mark.reliability, pytest.mark.redis]


def cluster_client(cluster: PrivateCluster) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in cluster.live()])


def workload(breaker: Breaker) -> None:
    """Every kind of state a run keeps: counters, the window, calls in flight, call ids, reservations, a trip."""
    for i in range(3):
        breaker.before_tool("search", {"q": "same"}, call_id=f"s{i}")
        breaker.after_tool("search", {"q": "same"}, result="nothing", call_id=f"s{i}")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "same"}, call_id="s3")
    breaker.reset()
    breaker.before_tool("fetch", {"page": 1}, call_id="in-flight")
    breaker.before_model(max_output_tokens=100, call_id="m1")  # reserved until it reports
    breaker.before_model(max_output_tokens=100)


async def aworkload(breaker: Breaker) -> None:
    await breaker.abefore_tool("fetch", {"page": 2})
    await breaker.aafter_tool("fetch", {"page": 2}, result="page 2")
    await breaker.abefore_model(max_output_tokens=10)


def test_every_key_of_a_run_shares_one_slot(redis_cluster: PrivateCluster, scope: str) -> None:
    store = RedisStore(redis_cluster.url, socket_timeout=2, socket_connect_timeout=2)
    breaker = Breaker(max_tokens=10_000, store=store, scope=scope)
    workload(breaker)
    asyncio.run(aworkload(breaker))
    run = breaker._key()
    client = cluster_client(redis_cluster)
    slots = {client.keyslot(key) for key in store.keys(run)}
    assert len(slots) == 1  # as redis-py's cluster client computes it
    (slot,) = slots
    # What is really there: every key of the scope, on every master, is in that slot, on one master.
    found: dict[int, list[bytes]] = {}
    for node in client.get_primaries():
        keys = list(node.redis_connection.scan_iter(match=key_pattern(scope), count=1000))
        if keys:
            found[node.port] = keys
    assert len(found) == 1, found
    ((port, keys),) = found.items()
    assert {client.keyslot(key) for key in keys} == {slot}
    assert sorted(k.decode() for k in keys) == sorted(store.keys(run))  # all six kinds of key were written
    master = redis_cluster.master_of(keys[0])
    assert master.port == port == client.get_node_from_key(keys[0]).port
    assert master.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= len(keys)
    assert breaker.usage().tool_calls == 5 and breaker.usage().turns == 3
    client.close()
    store.close()


def test_a_failover_of_the_master_that_holds_the_slot(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path)  # its own cluster: this test kills a master
    try:
        _failover(cluster)
    finally:
        cluster.stop()


class Run:
    """One breaker (one failure policy) through the failover, its checks timed."""

    def __init__(self, cluster: PrivateCluster, policy: str, scope: str) -> None:
        self.policy = policy
        self.store = RedisStore(cluster.url, failure_policy=policy, outage_backoff_seconds=0.2, socket_timeout=0.5)
        self.breaker = Breaker(max_turns=30, store=self.store, scope=scope)
        self.key = self.store.keys(self.breaker._key())[0]
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0
        self.counted: int | None = None

    def check(self) -> str:
        started = time.monotonic()
        try:
            self.breaker.before_model(max_output_tokens=1)
            outcome = "admitted"
        except LoopGuardTripped as exc:
            outcome = exc.reason
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.outcomes[outcome] += 1
        return outcome

    def answers(self) -> bool:
        """Whether Redis answers for the run's slot again (and with how many turns)."""
        try:
            self.counted = self.breaker.usage().turns
        except StoreError:
            return False
        return True


def _same_master_scope(cluster: PrivateCluster, key: str) -> str:
    """A scope whose run lands on the same master as ``key`` (another slot, same node)."""
    from redis.crc import key_slot

    ranges = [(start, end) for start, end, master, *_ in cluster._cmd(cluster.nodes[0], "CLUSTER", "SLOTS")]
    wanted = next(r for r in ranges if r[0] <= key_slot(key.encode()) <= r[1])
    for i in range(10_000):
        scope = f"failover-open-{i}"
        if wanted[0] <= key_slot(f"{{lg:{scope}:{scope}}}".encode()) <= wanted[1]:
            return scope
    raise AssertionError("no scope on that master")


def _failover(cluster: PrivateCluster) -> None:
    closed = Run(cluster, "closed", "failover-closed")
    opened = Run(cluster, "open", _same_master_scope(cluster, closed.key))
    runs = [closed, opened]
    for run in runs:
        for _ in range(10):
            assert run.check() == "admitted"
    master = cluster.master_of(closed.key)
    assert cluster.master_of(opened.key) is master
    replica = cluster.replica_of(master)
    client = master.client()
    assert client.execute_command("WAIT", 1, 5000) == 1  # the replica has the 10 turns of each run
    client.close()
    for run in runs:
        run.outcomes.clear()

    master.kill()  # kill -9 the master holding both runs' slots
    started = time.monotonic()
    while not all(run.counted is not None for run in runs):  # node timeout 1 s, then the replica's election
        assert time.monotonic() - started < 30, [run.outcomes for run in runs]
        for run in runs:
            if run.counted is None:
                run.check()
                run.answers()
        time.sleep(0.05)
    assert cluster.master_of(closed.key).port == replica.port  # the replica took the slots over
    cluster.wait_until_master(replica)
    for run in runs:
        assert run.slowest < 3.0, run.slowest  # each check during the failover was answered in bounded time
    # Each run goes on on the promoted replica with the counts it had: the 10 replicated turns, and the checks
    # admitted since (under fail-open, the ones admitted unchecked during the outage were not counted).
    assert closed.outcomes["store_unavailable"] > 0, closed.outcomes
    assert set(closed.outcomes) <= {"store_unavailable", "admitted"}, closed.outcomes
    # Nothing the replica had was lost, every admitted check counted (a check that timed out may have been too).
    admitted, unavailable = closed.outcomes["admitted"], closed.outcomes["store_unavailable"]
    assert closed.counted is not None and 10 + admitted <= closed.counted <= 10 + admitted + unavailable
    assert opened.outcomes["store_unavailable"] == 0, opened.outcomes
    assert opened.counted is not None and 10 <= opened.counted <= 10 + opened.outcomes["admitted"]
    for run in runs:  # then exactly the ceiling, on the new master
        assert run.counted is not None
        run.outcomes.clear()
        for _ in range(40):
            run.check()
        left = 30 - run.counted
        assert run.outcomes == Counter({"admitted": left, "turn_ceiling": 1, "open": 40 - left - 1}), run.outcomes
        assert run.breaker.usage().turns == 30

    async def after() -> Any:  # a new async client finds the new topology too
        other = Breaker(max_turns=2, store=closed.store, scope=opened.breaker.scope + "-async")
        await other.abefore_model(max_output_tokens=1)
        await other.abefore_model(max_output_tokens=1)
        with pytest.raises(LoopGuardTripped, match="turn_ceiling"):
            await other.abefore_model(max_output_tokens=1)
        await closed.store.aclose()

    asyncio.run(after())
    for run in runs:
        run.store.close()
