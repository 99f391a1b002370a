"""Hypothesis fuzzing of tool names, arguments, results, errors and configurations against every store and
ledger: a check either admits or raises LoopGuardTripped (never anything else), a report never raises
anything else either, the Redis store (on Redis, Valkey and a Redis Cluster) decides exactly as the memory
store does, step by step, the ceilings hold, and the ledgers (SQLite, PostgreSQL) verify after every run.
The ledger itself is fuzzed directly as well: a row is appended or refused with LedgerConfigError, and
nothing it refuses breaks the chain. Budgets are small and fixed (``max_examples``; ``LOOPGUARD_FUZZ_SCALE``
multiplies them), no example database.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.ledger import ORIGINS, Ledger, LedgerConfigError
from loopguard_core.limits import LoopDetection
from loopguard_core.stores import MemoryStore
from loopguard_core.testing import FakeClock

from ..stores.conftest import PATIENT, services_required

pytestmark = pytest.mark.reliability

# The budgets below keep CI bounded; LOOPGUARD_FUZZ_SCALE=20 fuzzes twenty times as long.
SCALE = max(1, int(os.environ.get("LOOPGUARD_FUZZ_SCALE", "1") or 1))
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------------------
ANY_TEXT = st.text(st.characters(codec=None), max_size=40)  # every code point, lone surrogates included
names = st.one_of(st.sampled_from(["search", "fetch", "db", "job_status", "read_file"]), ANY_TEXT)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and infinities included
    ANY_TEXT,
    st.sampled_from(["", "[]", "no results", "Traceback: KeyError", "running", "done", "page 2 of 2"]),
    st.binary(max_size=24),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(ANY_TEXT, inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=10,
)
tool_call = st.tuples(
    st.just("tool"),
    names,
    values,  # arguments
    values,  # result
    st.one_of(st.none(), st.none(), ANY_TEXT.map(RuntimeError), values),  # error
    st.one_of(st.none(), ANY_TEXT),  # agent
    st.one_of(st.none(), st.text(max_size=12)),  # call id
)
repeat = st.tuples(st.just("repeat"), st.integers(1, 5))  # the last tool call again, n times (loops)
model_call = st.tuples(
    st.just("model"),
    st.integers(0, 5_000),
    st.integers(0, 5_000),
    st.one_of(st.none(), st.integers(0, 10**7)),  # reported output tokens (None: the call failed)
)
later = st.tuples(st.just("later"), st.floats(0, 120))
operations = st.lists(st.one_of(tool_call, tool_call, repeat, model_call, later), min_size=1, max_size=25)
configs = st.fixed_dictionaries(
    {
        "max_turns": st.one_of(st.none(), st.integers(1, 20)),
        "max_tokens": st.one_of(st.none(), st.integers(1, 40_000)),
        "max_tool_calls": st.one_of(st.none(), st.integers(1, 30)),
        "max_calls_per_tool": st.dictionaries(st.sampled_from(["search", "fetch"]), st.integers(1, 10), max_size=2),
        "max_consecutive_failures": st.one_of(st.none(), st.integers(1, 4)),
        "recovery_seconds": st.floats(1, 90),
        "mode": st.sampled_from(["enforce", "observe"]),
        "loop_detection": st.one_of(
            st.booleans(),
            st.builds(
                LoopDetection,
                max_repeats=st.integers(1, 4),
                window=st.integers(4, 48),
                memory=st.sampled_from([4, 100]),
                similarity=st.sampled_from([None, 0.5, 0.8]),
                max_empty_results=st.sampled_from([None, 2, 3]),
            ),
        ),
    }
)


# -- the breaker over each store ----------------------------------------------------------------------
class Driver:
    """One breaker, driven op by op; what each op got is its trace."""

    def __init__(self, breaker: Breaker, clock: FakeClock) -> None:
        self.breaker, self.clock = breaker, clock
        self.trace: list[Any] = []
        self.last: Any = None

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "later":
            return  # the clock is shared: the caller moves it once for both drivers
        if kind == "repeat":
            for _ in range(op[1]):
                if self.last is not None:
                    self.apply(self.last)
            return
        if kind == "model":
            _, estimate, cap, reported = op
            self.trace.append(
                self._check(lambda: self.breaker.before_model(estimated_input_tokens=estimate, max_output_tokens=cap))
            )
            if self.trace[-1] == "admitted":
                if reported is None:
                    self.breaker.model_failed()
                else:
                    self._report(lambda: self.breaker.after_model(input_tokens=estimate, output_tokens=reported))
            return
        _, name, args, result, error, agent, call_id = op
        self.last = op
        verdict = self._check(lambda: self.breaker.before_tool(name, args, agent=agent, call_id=call_id))
        self.trace.append(verdict)
        if verdict == "admitted":
            self._report(
                lambda: self.breaker.after_tool(name, args, result=result, error=error, agent=agent, call_id=call_id)
            )

    @staticmethod
    def _check(check: Callable[[], None]) -> Any:
        try:
            check()
        except LoopGuardTripped as exc:
            return (exc.reason, exc.terminal)
        except TypeError as exc:  # the one documented refusal of a malformed call: an empty tool name
            assert str(exc).startswith("tool must be the tool's name"), exc
            return "malformed"
        return "admitted"

    def _report(self, report: Callable[[], None]) -> None:
        try:
            report()
        except LoopGuardTripped as exc:  # a report may end a probe or trip on failures; nothing else
            self.trace.append(("report", exc.reason))


def assert_within(breaker: Breaker, config: dict[str, Any]) -> None:
    usage = breaker.usage()
    if config["max_turns"] is not None and config["mode"] == "enforce":
        assert usage.turns <= config["max_turns"]
    if config["max_tool_calls"] is not None and config["mode"] == "enforce":
        assert usage.tool_calls <= config["max_tool_calls"]


@pytest.mark.redis
@pytest.mark.parametrize(("server", "examples"), [("redis", 40), ("valkey", 15), ("cluster", 15)])
def test_fuzzed_runs_decide_alike_in_every_store_and_keep_the_ledgers_whole(
    request: pytest.FixtureRequest, tmp_path: Path, server: str, examples: int
) -> None:
    if not services_required():
        pytest.importorskip("redis", reason="needs the redis extra")
    from loopguard_core.stores.redis import RedisStore

    if server == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    elif server == "valkey":
        url = request.getfixturevalue("valkey").url
    else:
        url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(url, clock="request", ttl_seconds=600, **PATIENT)
    memory_ledger = Ledger(tmp_path / "memory.db", checkpoint_every=5)
    redis_ledger = Ledger(tmp_path / "redis.db")
    base = f"fuzz-{uuid.uuid4().hex[:8]}"
    counter = [0]

    @settings(FUZZ, max_examples=examples * SCALE)
    @given(config=configs, ops=operations)
    def run(config: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
        counter[0] += 1
        scope = f"{base}-{counter[0]}"
        clock = FakeClock()
        memory = Driver(
            Breaker(**config, store=MemoryStore(), clock=clock, ledger=memory_ledger, session_id=scope), clock
        )
        redis = Driver(
            Breaker(**config, store=redis_store, scope=scope, clock=clock, ledger=redis_ledger, session_id=scope),
            clock,
        )
        for op in ops:
            if op[0] == "later":
                clock.advance(op[1])
                continue
            memory.apply(op)
            redis.apply(op)
            assert redis.trace == memory.trace, op
        assert redis.breaker.usage() == _same_times(memory.breaker.usage(), redis.breaker.usage())
        assert_within(redis.breaker, config)

    run()
    for ledger in (memory_ledger, redis_ledger):
        result = ledger.verify()
        assert result.ok, result.problems
        assert result.rows_checked > 0
        ledger.close()
    redis_store.close()


def _same_times(memory: Any, redis: Any) -> Any:
    """The memory snapshot with Redis's time fields (times are the clock's in both, but kept in micro-seconds
    by Redis)."""
    import dataclasses

    assert (memory.started_at is None) == (redis.started_at is None)
    assert (memory.opened_at is None) == (redis.opened_at is None)
    return dataclasses.replace(memory, started_at=redis.started_at, opened_at=redis.opened_at)


# -- the ledger itself --------------------------------------------------------------------------------
ledger_rows = st.fixed_dictionaries(
    {
        "session_id": st.one_of(st.sampled_from(["s1", "s2"]), ANY_TEXT),
        "origin": st.one_of(st.sampled_from(sorted(ORIGINS)), ANY_TEXT),
        "turn": st.one_of(st.integers(0, 100), st.integers(), st.integers(min_value=2**62, max_value=2**70)),
        "agent": st.one_of(st.none(), ANY_TEXT),
        "tool": st.one_of(st.none(), ANY_TEXT),
        "input_text": st.one_of(ANY_TEXT, st.text(max_size=2_000)),
        "input_tokens": st.one_of(st.integers(0, 10**6), st.integers()),
        "output_tokens": st.integers(0, 10**6),
        "cost_usd": st.one_of(st.floats(0, 100), st.floats(), st.integers(0, 10)),
        "duration_ms": st.integers(0, 10**6),
        "passed": st.booleans(),
        "breach_reason": st.one_of(st.none(), ANY_TEXT),
    }
)


def fuzz_ledger(ledger: Ledger, examples: int) -> None:
    appended = [0]

    @settings(FUZZ, max_examples=examples * SCALE)
    @given(rows=st.lists(ledger_rows, min_size=1, max_size=5))
    def append(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                seq = ledger.record(**row)
            except LedgerConfigError:
                continue  # refused with the ledger's own, explained error: nothing written
            appended[0] += 1
            assert seq == appended[0]
            assert isinstance(row["cost_usd"], int) or math.isfinite(row["cost_usd"])

    append()
    result = ledger.verify()
    assert result.ok, result.problems
    assert result.rows_checked == appended[0] > 0
    stored = list(ledger.rows())
    assert [r.seq for r in stored] == list(range(1, appended[0] + 1))
    assert all(re.fullmatch(r"[0-9a-f]{64}", r.input_hash) for r in stored)  # inputs hashed, never stored


def test_fuzzed_rows_in_the_sqlite_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db", checkpoint_every=3)
    fuzz_ledger(ledger, 80)
    ledger.close()


@pytest.mark.postgres
def test_fuzzed_rows_in_the_postgres_ledger(pg_url: str) -> None:
    ledger = Ledger(pg_url, checkpoint_every=3)
    fuzz_ledger(ledger, 50)
    ledger.close()


def test_a_cost_too_large_for_micro_usd_is_refused_clearly(tmp_path: Path) -> None:
    """Found by the fuzzing above: a finite cost above ~1.8e302 USD overflowed to infinity on its way to micro-USD
    (OverflowError from inside record) instead of being refused with the ledger's own error."""
    ledger = Ledger(tmp_path / "ledger.db")
    with pytest.raises(LedgerConfigError, match="cost_usd"):
        ledger.record(session_id="s", origin="model", turn=1, cost_usd=1.8e303)
    ledger.close()
