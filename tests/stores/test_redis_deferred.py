"""``RedisStore(defer_seconds=...)``: a tool outcome rides with the run's next step (one round trip per guarded
call in the steady state). What waits, what does not, when it is sent, and that ceilings stay exact across
processes. (The contract suite checks, on random sequences, that one process sees the memory store's verdicts.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.limits import Limits
from loopguard_core.stores.base import ModelRequest, ModelUsage, RunKey, ToolOutcome, ToolRequest

pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore

from .conftest import PATIENT, patient
from .test_redis_processes import run_workers

pytestmark = pytest.mark.redis

LIMITS = Limits()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    made = RedisStore(redis_url, defer_seconds=60.0, **PATIENT)
    yield made
    made.close()


def window(client: Any, store: RedisStore, run: RunKey) -> int:
    return int(client.llen(store.keys(run)[4]))


def in_flight(client: Any, store: RedisStore, run: RunKey) -> int:
    """Signatures in flight (the hash's '' field only keeps it alive)."""
    return sum(1 for field in client.hkeys(store.keys(run)[5]) if field)


def call(store: RedisStore, run: RunKey, sig: str, call_id: str | None = None, failed: bool = False) -> None:
    assert store.admit_tool(run, ToolRequest("search", sig, 0.0, call_id), LIMITS).admitted
    store.record_tool(run, ToolOutcome("search", sig, "out", failed, 0.0, call_id), LIMITS)


def test_an_outcome_waits_for_the_runs_next_step_and_rides_with_it(
    store: RedisStore, scope: str, redis_client: Any
) -> None:
    run = RunKey(scope, "r")
    call(store, run, "a")
    assert (window(redis_client, store, run), in_flight(redis_client, store, run)) == (0, 1)  # waiting here
    call(store, run, "b")  # its admission carried a's outcome
    assert (window(redis_client, store, run), in_flight(redis_client, store, run)) == (1, 1)
    store.admit_model(run, ModelRequest(1, 0, 0.0), LIMITS)  # any step of the run carries them
    assert (window(redis_client, store, run), in_flight(redis_client, store, run)) == (2, 0)


def test_a_read_close_and_flush_send_what_waits_and_drop_discards_it(
    store: RedisStore, scope: str, redis_client: Any, redis_url: str
) -> None:
    run, other, dropped = RunKey(scope, "r"), RunKey(scope, "o"), RunKey(scope, "d")
    call(store, run, "a")
    store.snapshot(run)
    assert window(redis_client, store, run) == 1
    call(store, other, "a")
    store.flush()
    assert window(redis_client, store, other) == 1
    call(store, dropped, "a")
    store.drop(dropped)
    assert window(redis_client, store, dropped) == 0 and not store._pending
    closing = RedisStore(redis_url, defer_seconds=60.0, **PATIENT)
    call(closing, run, "b")
    closing.close()
    assert window(redis_client, store, run) == 2


@pytest.mark.parametrize("other_waits", [False, True])
def test_an_outcome_older_than_defer_seconds_goes_with_any_step_of_the_store(
    redis_url: str, scope: str, redis_client: Any, other_waits: bool
) -> None:
    # Whether or not the other run has an outcome of its own waiting (which rides with its step), run's goes first.
    store = RedisStore(redis_url, defer_seconds=0.05, **PATIENT)
    run, other = RunKey(scope, "r"), RunKey(scope, "o")
    call(store, run, "a")
    if other_waits:
        call(store, other, "b")  # its admission is too early for run's, its outcome waits too
    else:
        store.admit_model(other, ModelRequest(1, 0, 0.0), LIMITS)  # too early: still waits
    assert window(redis_client, store, run) == 0
    time.sleep(0.06)
    store.admit_model(other, ModelRequest(1, 0, 0.0), LIMITS)
    assert (window(redis_client, store, run), window(redis_client, store, other)) == (1, int(other_waits))
    store.close()


def test_what_never_waits(store: RedisStore, scope: str, redis_client: Any, redis_url: str) -> None:
    run = RunKey(scope, "r")
    call(store, run, "a", call_id="c1")  # a call id with no outcome in Redis yet: it waits
    assert window(redis_client, store, run) == 0
    store.snapshot(run)
    other = RedisStore(redis_url, **PATIENT)  # admitted by another process
    assert other.admit_tool(run, ToolRequest("search", "b", 0.0), LIMITS).admitted
    store.record_tool(run, ToolOutcome("search", "b", "out", False, 0.0), LIMITS)
    assert window(redis_client, store, run) == 2
    # An outcome already recorded under the id (another process reported it): a report here is a retry.
    other.record_tool(run, ToolOutcome("search", "c", "out", False, 0.0, "c2"), LIMITS)
    assert store.admit_tool(run, ToolRequest("search", "c", 0.0, "c2"), LIMITS).admitted
    again = store.record_tool(run, ToolOutcome("search", "c", "out", False, 0.0, "c2"), LIMITS)
    assert again.duplicate and window(redis_client, store, run) == 3
    other.close()
    # A probe's outcome closes (or reopens) the breaker at once.
    limits = Limits(max_consecutive_failures=1, recovery_seconds=0.05)
    tripped = RunKey(scope, "t")
    call(store, tripped, "x", failed=True)
    refused = store.admit_tool(tripped, ToolRequest("search", "y", 0.0), limits)
    assert refused.reason == "failures"  # the failure rode with this admission and tripped it
    time.sleep(0.06)
    probe = store.admit_tool(tripped, ToolRequest("search", "y", 0.0), limits)
    assert probe.admitted and probe.probe
    closed = store.record_tool(tripped, ToolOutcome("search", "y", "out", False, 0.0), limits)
    assert [(m.source.value, m.target.value) for m in closed.transitions] == [("half_open", "closed")]


def test_a_waiting_outcome_is_a_call_in_flight_for_another_process(
    store: RedisStore, scope: str, redis_url: str
) -> None:
    run, limits = RunKey(scope, "r"), Limits()
    other = RedisStore(redis_url, **PATIENT)
    for _ in range(2):
        call(store, run, "same")
    store.snapshot(run)  # both recorded
    call(store, run, "same")  # the third waits here
    refused = other.admit_tool(run, ToolRequest("search", "same", 0.0), limits)
    assert refused.reason == "loop"  # still refused: the waiting copy counts as in flight
    assert refused.facts["positions"] == [1, 2]
    other.close()


def test_the_async_twins_carry_and_send_outcomes_the_same_way(store: RedisStore, scope: str, redis_client: Any) -> None:
    run = RunKey(scope, "r")

    async def main() -> None:
        assert (await store.aadmit_tool(run, ToolRequest("search", "a", 0.0), LIMITS)).admitted
        await store.arecord_tool(run, ToolOutcome("search", "a", "out", False, 0.0), LIMITS)
        assert window(redis_client, store, run) == 0
        await store.aadmit_model(run, ModelRequest(1, 0, 0.0), LIMITS)
        assert window(redis_client, store, run) == 1
        assert (await store.aadmit_tool(run, ToolRequest("search", "b", 0.0), LIMITS)).admitted
        await store.arecord_tool(run, ToolOutcome("search", "b", "out", False, 0.0), LIMITS)
        await store.asnapshot(run)
        assert window(redis_client, store, run) == 2
        await store.aclose()

    asyncio.run(main())


def test_a_forked_child_does_not_send_its_parents_outcomes(store: RedisStore, scope: str, redis_client: Any) -> None:
    run = RunKey(scope, "r")
    call(store, run, "a")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store.admit_model(run, ModelRequest(1, 0, 0.0), LIMITS)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert window(redis_client, store, run) == 0  # the child sent nothing of it
    store.snapshot(run)
    assert window(redis_client, store, run) == 1  # sent once, by the parent


def _tools_and_turns(barrier: Any, index: int, url: str, scope: str) -> tuple[int, int]:
    store = RedisStore.from_url(url, defer_seconds=0.05)
    breaker = Breaker(max_tool_calls=600, max_turns=10_000, store=store, scope=scope)
    barrier.wait()
    tools = 0
    try:
        for i in range(10_000):
            if i % 3 == 0:
                breaker.before_model(max_output_tokens=10)
                breaker.after_model(input_tokens=1, output_tokens=1)
            breaker.before_tool("fetch", {"worker": index, "i": i})
            breaker.after_tool("fetch", {"worker": index, "i": i}, result=f"page {i}")
            tools += 1
    except LoopGuardTripped as trip:
        assert trip.reason in ("tool_ceiling", "open"), trip
    store.close()  # a worker process exits without atexit hooks
    return tools, 0


def test_four_processes_with_deferred_outcomes_share_max_tool_calls_exactly(
    redis_url: str, scope: str, redis_client: Any
) -> None:
    results = run_workers(4, _tools_and_turns, patient(redis_url), scope)
    assert sum(tools for tools, _ in results) == 600
    assert all(tools > 0 for tools, _ in results)
    reader = RedisStore(redis_url, **PATIENT)
    runs = {key.decode().split("}")[0] for key in redis_client.scan_iter(match=f"{{lg:{scope}:*", count=1000)}
    assert len(runs) == 1
    run = RunKey(scope, runs.pop().rsplit(":", 1)[1])
    assert reader.snapshot(run).tool_calls == 600
    assert in_flight(redis_client, reader, run) == 0  # every outcome was recorded, none twice
    reader.close()


def test_a_connection_is_asked_for_as_each_redis_py_release_expects() -> None:
    # redis-py 5 requires the command name (a TypeError without it); 6 and later deprecate passing it.
    from loopguard_core.stores.redis import _needs_command_name

    class Py5Pool:
        def get_connection(self, command_name: str, *keys: object, **options: object) -> None: ...

    class Py8Pool:
        def get_connection(self, command_name: str | None = None, *keys: object, **options: object) -> None: ...

    assert _needs_command_name(Py5Pool()) is True
    assert _needs_command_name(Py8Pool()) is False


def counted(client: Any, store: RedisStore, run: RunKey) -> tuple[int, int]:
    """The window's steps and the calls in flight as the run's state counts them (its 23rd and 24th values)."""
    values = client.eval("return {cmsgpack.unpack(redis.call('HGET', KEYS[1], 'S'))}", 1, store.keys(run)[0])
    return int(values[22]), int(values[23])


@pytest.mark.parametrize("retried", ["admit_tool", "admit_model", "record_model", "record_tool"])
def test_outcomes_riding_with_a_retried_step_are_written_with_the_runs_state(
    store: RedisStore, scope: str, redis_client: Any, retried: str
) -> None:
    # A step answers a retried call id without writing anything of its own; the outcomes that rode with it were
    # applied all the same, and the state they left (what it counts of the window and the calls in flight) must
    # be written too.
    run = RunKey(scope, "r")
    steps = {
        "admit_tool": lambda: store.admit_tool(run, ToolRequest("search", "x", 0.0, "c1"), LIMITS),
        "admit_model": lambda: store.admit_model(run, ModelRequest(1, 0, 0.0, "m1"), LIMITS),
        "record_model": lambda: store.record_model(run, ModelUsage(1, 0, 0.0, "m1"), LIMITS),
        "record_tool": lambda: store.record_tool(run, ToolOutcome("search", "x", "out", False, 0.0, "c1"), LIMITS),
    }
    if retried in ("admit_tool", "record_tool"):
        steps["admit_tool"]()
        steps["record_tool"]()  # waits; the next call's admission carries it
    else:
        steps["admit_model"]()
        if retried == "record_model":
            steps["record_model"]()
    call(store, run, "a")  # a's outcome waits
    assert window(redis_client, store, run) == (1 if retried in ("admit_tool", "record_tool") else 0)
    retry = steps[retried]()
    assert retry.duplicate
    assert (window(redis_client, store, run), in_flight(redis_client, store, run)) == (
        2 if retried in ("admit_tool", "record_tool") else 1,
        0,
    )  # a's outcome rode with the retry
    assert counted(redis_client, store, run) == (window(redis_client, store, run), 0)


def test_a_reused_call_id_whose_first_call_another_process_reported_defers_its_own_outcome_once(
    store: RedisStore, scope: str, redis_url: str
) -> None:
    # This process admitted "call_0"; another reported its outcome; the model answered again with a new "call_0"
    # (a server that reuses ids). The new call's outcome reported twice counts once, as in the memory store.
    run = RunKey(scope, "r")
    other = RedisStore(redis_url, **PATIENT)
    try:
        store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS)
        assert store.admit_tool(run, ToolRequest("ls", "ls(a)", 0.0, "call_0"), LIMITS).admitted
        other.record_tool(run, ToolOutcome("ls", "ls(a)", "x", False, 0.0, "call_0"), LIMITS)
        store.admit_model(run, ModelRequest(0, 0, 0.0), LIMITS)
        new = store.admit_tool(run, ToolRequest("ls", "ls(b)", 0.0, "call_0"), LIMITS)
        assert (new.admitted, new.duplicate) == (True, False)
        first = store.record_tool(run, ToolOutcome("ls", "ls(b)", "y", False, 0.0, "call_0"), LIMITS)
        again = store.record_tool(run, ToolOutcome("ls", "ls(b)", "y", False, 0.0, "call_0"), LIMITS)
        assert (first.duplicate, again.duplicate) == (False, True)
        assert store.snapshot(run).tool_calls == 2
    finally:
        other.close()
