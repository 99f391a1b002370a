"""The SQLite store: the contract, a faithful codec, runs that survive a restart, several processes on one
file, and failures that say what to fix.

The contract suite of test_store_contract.py runs here three times: on a SQLiteStore, on a SQLiteStore with a
``digest_key``, and on a store reopened from the file before every single step (as if the process restarted
between any two calls). Random call sequences give the same verdicts and snapshots as the MemoryStore at every
step, and the codec round trip is a hypothesis property: a state decoded from its encoding decides every later
step exactly as the original does.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
import sqlite3
import stat
import string
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices, StoreError
from loopguard_core.detection import EMPTY, SIMILAR, WAITING
from loopguard_core.limits import Limits, LoopDetection
from loopguard_core.signatures import call_signature
from loopguard_core.state import BreakerState
from loopguard_core.stores import MemoryStore, SQLiteStore, store_from_url
from loopguard_core.stores import _run_state as run_state_module
from loopguard_core.stores import _run_state_codec as codec
from loopguard_core.stores import sqlite as sqlite_module
from loopguard_core.stores._run_state import RunState
from loopguard_core.stores.base import (
    ModelRequest,
    ModelUsage,
    RunKey,
    RunSnapshot,
    ToolOutcome,
    ToolRequest,
    Transition,
    Verdict,
)
from loopguard_core.testing import FakeClock

from .._build import declared_fields
from . import test_store_contract as contract
from .test_store_contract import Run

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
LONE = json.loads('"\\ud800"')  # a lone surrogate: valid JSON, not encodable as UTF-8


class Unreadable(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items() raised")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ raised")

    def __len__(self) -> int:
        raise RuntimeError("__len__ raised")


HOSTILE: list[Any] = [
    {"q": LONE},
    {"n": 10**5000},
    Unreadable(a=1),
    {"deep": [[[[[[[[[[["x"]]]]]]]]]]]},
    "x" * 3_000_000,
]
FORK = multiprocessing.get_context("fork") if sys.platform != "win32" else None


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + str(path)  # an absolute path: sqlite:////tmp/...


class Reopening:
    """A SQLiteStore opened afresh from the file for every step: as if the process restarted between any two
    calls (no connection, no cache, nothing in memory carries over)."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path, self.options, self.opened = path, options, 0

    def _call(self, name: str, *args: Any) -> Any:
        store = SQLiteStore(self.path, **self.options)
        self.opened += 1
        try:
            return getattr(store, name)(*args)
        finally:
            store.close()

    def admit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict:
        return self._call("admit_tool", run, request, limits)

    def record_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict:
        return self._call("record_tool", run, outcome, limits)

    def admit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict:
        return self._call("admit_model", run, request, limits)

    def record_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict:
        return self._call("record_model", run, usage, limits)

    def steer(self, run: RunKey, limits: Limits, now: float) -> Verdict:
        return self._call("steer", run, limits, now)

    def snapshot(self, run: RunKey) -> RunSnapshot:
        return self._call("snapshot", run)

    def reset(self, run: RunKey) -> Verdict:
        return self._call("reset", run)

    def drop(self, run: RunKey) -> None:
        self._call("drop", run)


# -- the contract suite, on three SQLite flavours ------------------------------------------------------
@pytest.fixture(params=["sqlite", "sqlite-keyed", "sqlite-reopened"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "runs.db"
    if request.param == "sqlite-reopened":
        reopening = Reopening(path)
        yield reopening
        assert reopening.opened > 0
        return
    sqlite_store = SQLiteStore(path, digest_key="k" if request.param == "sqlite-keyed" else None)
    yield sqlite_store
    sqlite_store.close()


# Every contract test that needs no Redis server runs here on the `store` fixture above.
for _name, _test in vars(contract).items():
    if _name.startswith("test_") and callable(_test) and "random_sequences" not in _name:
        globals()[_name] = _test
del _name, _test


# -- the same verdicts as the memory store, step by step -------------------------------------------------
def _random_limits(rng: random.Random) -> Limits:
    return Limits(
        max_turns=rng.choice([None, None, 40]),
        max_tokens=rng.choice([None, None, 4_000]),
        max_cost_usd=rng.choice([None, None, 0.05]),
        max_tool_calls=rng.choice([None, None, 100]),
        max_calls_per_tool=rng.choice([{}, {"fetch": 25}]),
        max_seconds=rng.choice([None, None, 500.0]),
        max_consecutive_failures=rng.choice([None, 2, 3]),
        recovery_seconds=rng.choice([5.0, 20.0]),
        max_refusals=rng.choice([None, 2]),
        mode=rng.choice(["enforce", "enforce", "observe"]),
        loop=LoopDetection(
            max_repeats=rng.choice([1, 2, 3]),
            memory=rng.choice([4, 100]),
            max_empty_results=rng.choice([None, 2, 3]),
            similarity=rng.choice([None, 0.5, 0.8]),
            poll_max_repeats=rng.choice([3, 5]),
            window=rng.choice([5, 48]),
        ),
    )


def _random_step(rng: random.Random, runs: list[Run]) -> list[Any]:
    tools, args, outcomes = ["search", "fetch", "db", "job_status"], ["a", "b", "c", "d", "e"], ["x", "y", "[]"]
    questions = [frozenset(), frozenset(), frozenset({2, 4, 6}), frozenset({2, 4, 6, 8}), frozenset({3, 4, 6})]
    op = rng.random()
    tool, sig = rng.choice(tools), rng.choice(args)
    call_id = rng.choice([None, None, f"id{rng.randrange(40)}"])
    words = rng.choice(questions)
    if op < 0.42:
        shape = rng.choice(["", tool + "p#"])
        return [run.tool(tool, tool + sig, call_id=call_id, words=words, shape=shape) for run in runs]
    if op < 0.72:
        outcome, failed = rng.choice(outcomes), rng.random() < 0.3
        flags = (EMPTY if outcome == "[]" else 0) | (WAITING if rng.random() < 0.2 else 0)
        flags |= rng.choice([0, 0, 1, 2, 4, SIMILAR, SIMILAR])
        extra: dict[str, Any] = {"flags": flags, "words": words, "shape": tool + rng.choice(["p#", "q#"])}
        return [run.done(tool, tool + sig, outcome, failed=failed, call_id=call_id, **extra) for run in runs]
    if op < 0.84:
        tokens, micros = rng.randrange(0, 300), rng.randrange(0, 3_000)
        return [run.model(tokens, micros, call_id=call_id) for run in runs]
    if op < 0.94:
        tokens, micros, failed = rng.randrange(0, 300), rng.randrange(0, 3_000), rng.random() < 0.2
        usage = [ModelUsage(tokens, micros, run.now, call_id, failed) for run in runs]
        return [run.store.record_model(run.key, u, run.limits) for run, u in zip(runs, usage)]
    if op < 0.97:
        return [run.store.steer(run.key, run.limits, run.now) for run in runs]  # type: ignore[attr-defined]
    return [run.store.reset(run.key) for run in runs]


@pytest.mark.parametrize("seed", range(8))
def test_random_sequences_give_the_memory_stores_verdicts(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    limits = _random_limits(rng)
    reservation = rng.choice([None, 30.0, 600.0])
    sqlite_store = SQLiteStore(tmp_path / "runs.db", reservation_seconds=reservation)
    reopened = Reopening(tmp_path / "runs.db", reservation_seconds=reservation)
    memory = MemoryStore(reservation_seconds=reservation)
    runs = [Run(memory, "s", limits), Run(sqlite_store, "s", limits), Run(reopened, "s2", limits)]
    for step in range(300 if seed < 2 else 150):
        got = _random_step(rng, runs)
        if step % 7 == 3:  # another store on the same file writes: the next step cannot use its cache
            other = SQLiteStore(tmp_path / "runs.db", reservation_seconds=reservation)
            other.reset(RunKey("s", "other"))
            other.close()
        assert got[1] == got[0], f"seed {seed} step {step}"
        assert got[2] == got[0], f"seed {seed} step {step} (reopened)"
        snaps = [run.snap() for run in runs]
        assert snaps[1] == snaps[0] == snaps[2], f"seed {seed} step {step}"
        step_seconds = rng.choice([0.0, 0.5, 1.0, 3.0])
        for run in runs:
            run.later(step_seconds)
    sqlite_store.close()


def test_the_call_id_memory_forgets_the_oldest_ids_first_like_the_memory_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_state_module, "_IDEMPOTENCY_MEMORY", 5)
    sqlite_store = SQLiteStore(tmp_path / "runs.db")
    runs = [Run(MemoryStore(), "s", Limits()), Run(sqlite_store, "s", Limits())]
    for i in range(12):  # 12 ids, 5 remembered: the oldest are admitted again, the newest are duplicates
        for run in runs:
            run.tool("t", f"a{i}", call_id=f"c{i}")
    for i in range(12):
        got = [run.tool("t", f"a{i}", call_id=f"c{i}") for run in runs]
        assert got[0] == got[1], i
    assert runs[0].snap() == runs[1].snap()
    count = sqlite3.connect(tmp_path / "runs.db").execute("SELECT COUNT(*) FROM loopguard_breaker_seen").fetchone()[0]
    assert count == 5


# -- the codec ---------------------------------------------------------------------------------------
def test_a_run_state_has_exactly_the_fields_the_codec_writes() -> None:
    # The round trip below proves the codec writes and reads every one of them.
    assert declared_fields(RunState) == set(run_state_module.FIELDS)
    assert Verdict._fields == codec._VERDICT_FIELDS


def test_a_run_state_takes_no_field_the_codec_would_drop() -> None:
    state = RunState()
    with pytest.raises(AttributeError):
        state.new_field = 1  # type: ignore[attr-defined]


def test_a_state_from_a_newer_version_is_refused_with_what_to_do() -> None:
    data = codec.state_to_dict(RunState())
    data["schema_version"] = codec.SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="newer loopguard-core; upgrade"):
        codec.decode(json.dumps(data))


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"schema_version": 1}',
        json.dumps({**codec.state_to_dict(RunState()), "turns": "7"}),
        json.dumps({**codec.state_to_dict(RunState()), "state": "exploded"}),
        json.dumps({**codec.state_to_dict(RunState()), "window": [[1, "t", "a", "o", 0, "", ["x"]]]}),
        json.dumps({**codec.state_to_dict(RunState()), "seen": [["t:c", [True]]]}),
        json.dumps({**codec.state_to_dict(RunState()), "trip_facts": {"$python": "os.system('x')"}}),
        "[" * 100_000,
    ],
)
def test_a_malformed_state_is_a_store_error_never_a_half_built_state(text: str) -> None:
    with pytest.raises(StoreError, match=r"malformed|not valid JSON"):
        codec.decode(text)


FACTS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.sampled_from(list(BreakerState)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        | st.dictionaries(st.integers() | st.sampled_from(["$tuple", "$x"]), inner, max_size=2)
    ),
    max_leaves=12,
)


def _typed(value: Any) -> Any:
    """``value`` with the type of every part spelled out, so 1 == 1.0 == True and [] == () do not pass."""
    if isinstance(value, dict):
        return ("dict", sorted(((repr(_typed(k)), _typed(v)) for k, v in value.items()), key=repr))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(repr(_typed(v)) for v in value))
    return (type(value).__name__, value)


@given(FACTS)
def test_facts_keep_their_values_and_types(value: Any) -> None:
    facts = {"x": value}
    back = codec._unvalue(json.loads(json.dumps(codec._value(facts))))
    assert _typed(back) == _typed(facts)


def test_facts_of_other_types_are_kept_as_their_repr_and_never_rebuilt() -> None:
    class Exotic:
        def __repr__(self) -> str:
            return "<exotic>"

    assert codec._unvalue(codec._value({"d": Exotic()})) == {"d": "<exotic>"}


LIMITS = [
    Limits(),
    Limits(max_turns=6, max_tokens=900, max_cost_usd=0.004, max_tool_calls=9, max_seconds=40.0),
    Limits(max_calls_per_tool={"fetch": 3}, max_consecutive_failures=2, recovery_seconds=5.0, max_refusals=2),
    Limits(mode="observe", max_tool_calls=4, max_tokens=300),
    Limits(loop=LoopDetection(max_repeats=1, window=4, memory=3, max_empty_results=2, similarity=0.5)),
]
TOOLS = st.sampled_from(["search", "fetch", "db", "job_status"])
SIGS = st.sampled_from(["a", "b", "c"])
IDS = st.none() | st.sampled_from([f"id{i}" for i in range(5)])
WORDS = st.sampled_from([frozenset(), frozenset({2, 4, 6}), frozenset({2, 4, 6, 8})])
OPS = st.one_of(
    st.tuples(st.just("tool"), TOOLS, SIGS, IDS, WORDS, st.sampled_from(["", "p#"]), st.booleans()),
    st.tuples(
        st.just("done"), TOOLS, SIGS, st.sampled_from(["x", "y", "[]"]), st.booleans(), IDS, st.integers(0, 127), WORDS
    ),
    st.tuples(st.just("model"), st.integers(0, 400), st.integers(0, 3_000), IDS),
    st.tuples(st.just("used"), st.integers(0, 400), st.integers(0, 3_000), IDS, st.booleans()),
    st.tuples(st.just("steer")),
    st.tuples(st.just("reset")),
)


def _fields(state: RunState) -> dict[str, Any]:
    return {
        name: (type(value).__name__, list(value.items()) if isinstance(value, dict) else value)
        for name, value in ((name, getattr(state, name)) for name in run_state_module.FIELDS)
    }


def _apply(state: RunState, op: tuple[Any, ...], now: float, limits: Limits, reserve: float | None) -> Any:
    kind = op[0]
    if kind == "tool":
        _, tool, sig, call_id, words, shape, poll = op
        return state.admit_tool(
            ToolRequest(tool, tool + sig, now, call_id, "a", shape and tool + shape, words, poll), limits
        )
    if kind == "done":
        _, tool, sig, outcome, failed, call_id, flags, words = op
        return state.record_tool(ToolOutcome(tool, tool + sig, outcome, failed, now, call_id, flags, "", words), limits)
    if kind == "model":
        return state.admit_model(ModelRequest(op[1], op[2], now, op[3]), limits, reserve)
    if kind == "used":
        return state.record_model(ModelUsage(op[1], op[2], now, op[3], op[4]), limits)
    if kind == "steer":
        return state.steer(limits, now)
    return state.reset()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.sampled_from(LIMITS),
    reserve=st.sampled_from([None, 20.0, 600.0]),
    before=st.lists(st.tuples(OPS, st.sampled_from([0.0, 0.5, 3.0, 30.0])), max_size=60),
    after=st.lists(st.tuples(OPS, st.sampled_from([0.0, 0.5, 3.0, 30.0])), min_size=1, max_size=40),
)
def test_a_decoded_state_decides_every_later_step_as_the_original(
    limits: Limits, reserve: float | None, before: list[Any], after: list[Any]
) -> None:
    original, now = RunState(), 1_000.0
    for op, seconds in before:
        _apply(original, op, now, limits, reserve)
        now += seconds
    text = codec.encode(original)
    copy = codec.decode(text)
    assert _fields(copy) == _fields(original)  # every field, in order (dict order decides ties)
    assert codec.encode(copy) == text  # the encoding is stable
    assert copy.snapshot() == original.snapshot()
    for op, seconds in after:
        assert _apply(copy, op, now, limits, reserve) == _apply(original, op, now, limits, reserve), op
        assert copy.snapshot() == original.snapshot()
        now += seconds
    assert codec.encode(copy) == codec.encode(original)
    assert list(copy.seen.items()) == list(original.seen.items())


def test_a_verdict_round_trips_with_its_facts_and_transitions() -> None:
    verdict = Verdict(
        False,
        "loop",
        False,
        {"rule": "cycle", "positions": [1, 3], "period": 2, "signature": "ab" * 16, "tool": LONE},
        (Transition(OPEN, HALF_OPEN, "recovery window elapsed"), Transition(HALF_OPEN, OPEN, "loop")),
        7,
        False,
        False,
        (("stall", {"observed": 3, "limit": 3}),),
    )
    assert codec.decode_verdict(json.loads(json.dumps(codec.encode_verdict(verdict)))) == verdict


# -- a run that survives a restart ----------------------------------------------------------------
def test_a_new_store_on_the_file_continues_counts_loop_window_and_reservations(tmp_path: Path) -> None:
    path, limits = tmp_path / "runs.db", Limits(max_tokens=100, max_tool_calls=10)
    looping, spending, expiring = RunKey("o", "looping"), RunKey("o", "spending"), RunKey("o", "expiring")
    first = SQLiteStore(path)
    for _ in range(3):  # a loop begins before the restart
        first.admit_tool(looping, ToolRequest("search", "q=x", 1_000.0), limits)
        first.record_tool(looping, ToolOutcome("search", "q=x", "nothing", False, 1_000.0), limits)
    for run in (spending, expiring):  # model calls in flight when the process dies: they never report
        assert first.admit_model(run, ModelRequest(60, 0, 1_000.0, "m1"), limits).admitted
    del first  # no close(): the process died

    second = SQLiteStore(path)
    snap = second.snapshot(looping)
    assert (snap.tool_calls, snap.turns, snap.calls_per_tool, snap.started_at) == (3, 0, {"search": 3}, 1_000.0)
    refused = second.admit_tool(looping, ToolRequest("search", "q=x", 1_001.0), limits)
    assert (refused.reason, refused.facts["rule"], refused.facts["positions"]) == ("loop", "repeat", [1, 2, 3])
    held = second.admit_model(spending, ModelRequest(41, 0, 1_001.0, "m2"), limits)  # 60 still reserved
    assert (held.reason, held.facts["in_flight"], held.facts["observed"]) == ("token_ceiling", 60, 101)
    assert second.admit_model(expiring, ModelRequest(60, 0, 1_599.0, "m1"), limits).duplicate  # call ids survive
    later = second.admit_model(expiring, ModelRequest(100, 0, 1_600.0, "m2"), limits)  # the reservation expired
    assert later.admitted, later
    assert second.snapshot(expiring).turns == 2


def test_a_breaker_resumes_its_run_by_id_after_a_restart(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    prices = StaticPrices({"m": (1.0, 2.0)})

    def breaker() -> Breaker:
        return Breaker(store=url, scope="orders", max_tool_calls=5, max_cost_usd=0.01, prices=prices)

    first = breaker()
    with first.run("order-42"):
        first.before_model(model="m", estimated_input_tokens=100, max_output_tokens=50, call_id="m1")
        first.after_model(input_tokens=100, output_tokens=40, model="m", call_id="m1")
        for i in range(3):
            first.before_tool("fetch", {"page": i}, call_id=f"t{i}")
            first.after_tool("fetch", {"page": i}, result=f"page {i}", call_id=f"t{i}")
    second = breaker()  # another process, after a crash
    with second.run("order-42"):
        usage = second.usage()
        assert (usage.turns, usage.tokens, usage.cost_micros, usage.tool_calls) == (1, 140, 180, 3)
        second.before_tool("fetch", {"page": 2}, call_id="t2")  # a retried call: never counted twice
        assert second.usage().tool_calls == 3
        for i in (3, 4):
            second.before_tool("fetch", {"page": i})
        with pytest.raises(LoopGuardTripped) as caught:
            second.before_tool("fetch", {"page": 5})
    assert (caught.value.reason, caught.value.facts["observed"], caught.value.facts["limit"]) == ("tool_ceiling", 6, 5)
    third = breaker()
    with third.run("order-42"), pytest.raises(LoopGuardTripped) as again:  # a terminal trip survives too
        third.before_model(model="m", max_output_tokens=1)
    assert (again.value.reason, again.value.facts["tripped_by"], again.value.terminal) == ("open", "tool_ceiling", True)


def test_a_run_resumed_by_id_refuses_the_loop_begun_before_the_crash(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    first = Breaker(store=url, scope="jobs")
    with first.run("job-7"):
        for _ in range(3):
            first.before_tool("lookup", {"sku": "A-1"})
            first.after_tool("lookup", {"sku": "A-1"}, result="out of stock, check again later")
    second = Breaker(store=url, scope="jobs")
    with second.run("job-7"), pytest.raises(LoopGuardTripped) as caught:
        second.before_tool("lookup", {"sku": "A-1"})
    assert (caught.value.reason, caught.value.facts["rule"]) == ("loop", "repeat")


def test_store_urls_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///runs.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == str(tmp_path / "runs.db")
    assert relative.url == "sqlite:///runs.db"
    absolute = SQLiteStore.from_url(
        sqlite_url(tmp_path / "abs.db")
        + "?busy_timeout=2.5&synchronous=full&failure_policy=open&reservation_seconds=none"
    )
    assert (absolute.path, absolute._busy, absolute._sync) == (str(tmp_path / "abs.db"), 2.5, "FULL")
    assert (absolute.failure_policy, absolute._reservation_seconds) == ("open", None)
    assert SQLiteStore.from_url("sqlite:///runs.db?busy_timeout=1", busy_timeout=3)._busy == 3  # keywords win
    breaker = Breaker(store="sqlite:///runs.db", scope="x")
    assert isinstance(breaker._store, SQLiteStore)
    assert SQLiteStore(sqlite_url(tmp_path / "c.db")).path == str(tmp_path / "c.db")
    for bad, message in [
        ("sqlite://runs.db", "three slashes"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///runs.db?colour=blue", "unknown option 'colour'"),
        ("sqlite:///runs.db?busy_timeout=soon", "busy_timeout='soon'"),
        ("sqlite:///runs.db?busy_timeout=0", "busy_timeout must be > 0"),
        ("sqlite:///runs.db?synchronous=off", "synchronous must be one of"),
        ("sqlite:///runs.db?failure_policy=maybe", "failure_policy"),
    ]:
        with pytest.raises(ValueError, match=message):
            store_from_url(bad)
    with pytest.raises(ValueError, match="from_url"):
        SQLiteStore("sqlite:///runs.db?busy_timeout=1")
    with pytest.raises(ValueError, match="reservation_seconds"):
        SQLiteStore(tmp_path / "d.db", reservation_seconds=0)


def test_drop_and_purge_remove_rows_and_their_call_id_memory(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    for run_id in ("a", "b", "c"):
        run = Run(store, "s", Limits(), run_id)
        run.tool("t", "x", call_id="c1")
    store.drop(RunKey("s", "a"))
    assert store.runs() == [RunKey("s", "b"), RunKey("s", "c")]
    assert store.snapshot(RunKey("s", "a")).tool_calls == 0
    assert store.purge(3_600) == 0  # written just now
    assert store.purge(0) == 2
    assert store.runs() == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM loopguard_breaker_seen").fetchone()[0] == 0
    with pytest.raises(ValueError, match="older_than_seconds"):
        store.purge(-1)


def test_many_threads_share_a_ceiling_exactly(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    breaker = Breaker(store=store, scope="crew", max_tool_calls=150, loop_detection=False)
    admitted: list[int] = []
    barrier = threading.Barrier(12)

    def worker(index: int) -> None:
        barrier.wait()
        count = 0
        for i in range(100):
            try:
                breaker.before_tool("fetch", {"w": index, "i": i})
            except LoopGuardTripped as trip:
                assert trip.reason in ("tool_ceiling", "open"), trip
                break
            count += 1
        admitted.append(count)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 150
    assert breaker.usage().tool_calls == 150


def _race_tool_calls(path: str, scope: str, barrier: Any, results: Any, index: int) -> None:
    try:
        breaker = Breaker(store=sqlite_url(Path(path)), scope=scope, max_tool_calls=100, loop_detection=False)
        counts: list[int] = []
        start = threading.Barrier(8)

        def thread(t: int) -> None:
            start.wait()
            count = 0
            for i in range(1_000):
                try:
                    breaker.before_tool("fetch", {"p": index, "t": t, "i": i})
                except LoopGuardTripped as trip:
                    assert trip.reason in ("tool_ceiling", "open"), trip
                    break
                count += 1
            counts.append(count)

        barrier.wait()
        threads = [threading.Thread(target=thread, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.put((index, sum(counts), len(counts)))
    except BaseException as exc:
        results.put((index, f"failed: {type(exc).__name__}: {exc}", 0))
        raise


@pytest.mark.skipif(FORK is None, reason="fork")
def test_four_processes_of_eight_threads_admit_exactly_the_ceiling(tmp_path: Path) -> None:
    assert FORK is not None
    path = str(tmp_path / "runs.db")
    SQLiteStore(path).close()  # the file exists (WAL) before the race
    barrier, results = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_race_tool_calls, args=(path, "shared", barrier, results, i)) for i in range(4)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert all(isinstance(count, int) and threads == 8 for _, count, threads in got), got
    assert sum(count for _, count, _ in got) == 100, got
    assert SQLiteStore(path).snapshot(RunKey("shared", "shared")).tool_calls == 100


def _spend(path: str, barrier: Any, results: Any, index: int) -> None:
    try:
        prices = StaticPrices({"m": (1.0, 10.0)})
        breaker = Breaker(store=sqlite_url(Path(path)), scope="spend", max_cost_usd=0.05, prices=prices)
        rng = random.Random(index)
        barrier.wait()
        spent = 0
        for i in range(10_000):
            tokens_in, tokens_out = rng.randrange(10, 200), rng.randrange(10, 100)
            try:
                breaker.before_model(model="m", estimated_input_tokens=tokens_in, max_output_tokens=tokens_out)
            except LoopGuardTripped as trip:
                assert trip.reason in ("cost_ceiling", "open"), trip
                break
            used = rng.randrange(0, tokens_out + 1)
            breaker.after_model(input_tokens=tokens_in, output_tokens=used, model="m", call_id=f"{index}-{i}")
            spent += tokens_in + 10 * used
        results.put((index, spent))
    except BaseException as exc:
        results.put((index, f"failed: {type(exc).__name__}: {exc}"))
        raise


@pytest.mark.skipif(FORK is None, reason="fork")
def test_processes_spending_against_one_usd_ceiling_never_exceed_it(tmp_path: Path) -> None:
    assert FORK is not None
    path = str(tmp_path / "runs.db")
    barrier, results = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=_spend, args=(path, barrier, results, i)) for i in range(4)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert all(isinstance(spent, int) for _, spent in got), got
    total = sum(spent for _, spent in got)
    snap = SQLiteStore(path).snapshot(RunKey("spend", "spend"))
    assert snap.cost_micros == total <= 50_000


def _child_uses_the_parents_store(store: SQLiteStore, results: Any) -> None:
    try:
        run = Run(store, "fork", Limits(max_tool_calls=10), "r")
        results.put([run.tool("t", f"child{i}").admitted for i in range(3)])
    except BaseException as exc:
        results.put(f"failed: {exc}")


@pytest.mark.skipif(FORK is None, reason="fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    assert FORK is not None
    store = SQLiteStore(tmp_path / "runs.db")
    run = Run(store, "fork", Limits(max_tool_calls=10), "r")
    assert run.tool("t", "parent").admitted
    results = FORK.Queue()
    child = FORK.Process(target=_child_uses_the_parents_store, args=(store, results))
    child.start()
    assert results.get(timeout=60) == [True, True, True]
    child.join(timeout=60)
    assert run.tool("t", "parent again").admitted  # the parent's connection still works
    assert run.snap().tool_calls == 5


async def test_async_callers_use_the_store_too(tmp_path: Path) -> None:
    breaker = Breaker(store=sqlite_url(tmp_path / "runs.db"), scope="a", max_tool_calls=2, loop_detection=False)
    await breaker.abefore_tool("t", {"i": 1})
    await breaker.aafter_tool("t", {"i": 1}, result="ok")
    await breaker.abefore_model(max_output_tokens=5)
    await breaker.aafter_model(input_tokens=1, output_tokens=1)
    await breaker.abefore_tool("t", {"i": 2})
    with pytest.raises(LoopGuardTripped):
        await breaker.abefore_tool("t", {"i": 3})
    assert breaker.usage().tool_calls == 2


def test_steer_through_the_breaker_goes_on_after_a_loop_and_survives_a_restart(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    breaker = Breaker(store=url, scope="s", max_refusals=1)
    for _ in range(3):
        breaker.before_tool("search", "same")
        breaker.after_tool("search", "same", result="same answer every time")
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("search", "same")
    assert "Repeating it will not bring" in breaker.steer(caught.value)
    restarted = Breaker(store=url, scope="s", max_refusals=1)
    with pytest.raises(LoopGuardTripped) as again:
        restarted.before_tool("search", "same")  # the window survived: refused again
    with pytest.raises(LoopGuardTripped) as stop:
        restarted.steer(again.value)  # the second refusal is past max_refusals=1, counted across the restart
    assert stop.value.reason == "refusals"


# -- no raw input at rest ---------------------------------------------------------------------------
def secret_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(11)) for _ in range(n)]


def run_session(breaker: Breaker, w: list[str]) -> list[str]:
    """A run that fills every memory a store keeps (a loop and its refusal, reworded questions, paging,
    a failure streak, calls in flight, model calls); returns the signatures of the calls it made."""
    made: list[str] = []

    def call(tool: str, args: Any, result: Any = None, error: Any = None, call_id: str | None = None) -> None:
        made.append(call_signature(tool, args))
        try:
            breaker.before_tool(tool, args, agent="researcher", call_id=call_id)
        except LoopGuardTripped:
            return
        breaker.after_tool(tool, args, result=result, error=error, agent="researcher", call_id=call_id)

    for i in range(5):
        call("search", {"query": f"{w[0]} {w[1]}", "token": w[2]}, result=f"{w[3]} found nothing", call_id=f"s{i}")
    breaker.reset()
    for q in (
        f"what is the {w[4]} of {w[5]} in {w[6]}",
        f"tell me {w[5]} {w[4]} for {w[6]} please",
        f"the {w[6]} {w[4]} of the {w[5]} is what",
        f"{w[4]} {w[5]} {w[6]} what is it",
    ):
        call("ask", {"question": q}, result=f"no idea about {w[7]}")
    breaker.reset()
    for page in range(6):
        call("fetch", {"url": f"https://example.invalid/{w[8]}", "page": page}, result=[])
    breaker.reset()
    for i in range(6):
        call("deploy", {"key": w[9]}, error=RuntimeError(f"{w[10]} rejected {i}"), call_id=f"d{i}")
    breaker.reset()
    call("search", {"query": w[11]}, call_id="in-flight-1")
    breaker.before_tool("lookup", {"id": w[12]}, call_id="in-flight-2")
    for i in range(3):
        breaker.before_model(max_output_tokens=10, call_id=f"m{i}")
        breaker.after_model(input_tokens=5, output_tokens=5, call_id=f"m{i}", input=w[13])
    return made


def assert_absent(haystack: bytes, words: list[str], where: str) -> None:
    lowered = haystack.lower()
    found = [w for w in words if w.lower().encode() in lowered]
    assert not found, f"{where} holds raw input: {found}"


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


@pytest.mark.parametrize("keyed", [False, True])
def test_no_argument_result_or_error_text_reaches_the_file(tmp_path: Path, keyed: bool) -> None:
    words = secret_words(14, seed=11)
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, digest_key="secret key" if keyed else None)
    breaker = Breaker(store=store, scope="s", max_tokens=10_000, mode="enforce")
    made = run_session(breaker, words)
    marker = "MARKER-7f3a9-do-not-store"
    breaker.before_model(model="m", max_output_tokens=10, call_id="mk")
    breaker.after_model(input_tokens=3, output_tokens=3, model="m", call_id="mk", input=marker)
    breaker.reset()
    breaker.before_tool("search", {"q": marker}, call_id="mk-t")
    breaker.after_tool("search", {"q": marker}, result=marker * 3, error=None, call_id="mk-t")
    breaker.before_tool("fail", {"q": marker})
    breaker.after_tool("fail", {"q": marker}, error=RuntimeError(marker))
    assert breaker.usage().tool_calls > 10
    held = _file_bytes(path)
    assert path.with_name("runs.db-wal").exists()
    assert_absent(held, [*words, marker.lower()], "the SQLite store")
    if keyed:  # and no digest a reader could recompute from a guessed argument
        assert_absent(held, [*made, call_signature("search", {"q": marker})], "the keyed store")
        assert b"secret key" not in held


# -- the clock across a reboot ----------------------------------------------------------------------
def test_after_a_reboot_elapsed_time_goes_on_from_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    monkeypatch.setattr(sqlite_module, "_read_boot_id", lambda: "boot-1")
    clock = FakeClock(50_000.0)
    limits: dict[str, Any] = {"max_seconds": 100, "max_tokens": 1_000, "recovery_seconds": 60}
    before = Breaker(store=SQLiteStore(path), scope="s", clock=clock, **limits)
    before.before_tool("read", {"f": 1})
    before.after_tool("read", {"f": 1}, result="one")
    clock.advance(40)
    before.before_model(max_output_tokens=300, call_id="lost")  # in flight when the host goes down
    for _ in range(3):
        before.before_tool("lookup", {"job": 1})
        before.after_tool("lookup", {"job": 1}, result="the same answer as before")
    with pytest.raises(LoopGuardTripped):
        before.before_tool("lookup", {"job": 1})  # a loop: the breaker opens at 50,040

    monkeypatch.setattr(sqlite_module, "_read_boot_id", lambda: "boot-2")
    rebooted = FakeClock(12.0)  # the monotonic clock starts again after a reboot
    store = SQLiteStore(path)
    after = Breaker(store=store, scope="s", clock=rebooted, **limits)
    with pytest.raises(LoopGuardTripped) as still_open:
        after.before_tool("read", {"f": 2})
    assert still_open.value.facts["retry_in_seconds"] == 60.0  # the recovery window goes on, not 50,000 s off
    snap = after.usage()
    assert (snap.started_at, snap.opened_at) == (12.0 - 40, 12.0)  # rebased to the new clock
    assert store._read(RunKey("s", "s")).reservations == {"=lost": (300, 0, 12.0 + 600)}  # still held 600 s
    rebooted.advance(60)
    after.before_tool("read", {"f": 3})  # the probe, once the recovery window has passed: 100 s have elapsed
    after.after_tool("read", {"f": 3}, result="three")
    rebooted.advance(0.5)
    with pytest.raises(LoopGuardTripped) as late:
        after.before_tool("read", {"f": 4})
    assert (late.value.reason, late.value.facts["observed"]) == ("wall_clock", 100.5)


def test_the_same_boot_never_rebases_and_a_host_without_boot_ids_rebases_on_a_clock_gone_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_read_boot_id", lambda: "boot-1")
    run = Run(SQLiteStore(tmp_path / "a.db"), "s", Limits(max_seconds=10))
    run.tool("t", "1")
    run.now -= 0.5  # a thread whose reading was taken a moment earlier commits later
    assert run.tool("t", "2").admitted
    assert run.snap().started_at == 1_000.0

    monkeypatch.setattr(sqlite_module, "_read_boot_id", lambda: None)
    run = Run(SQLiteStore(tmp_path / "b.db"), "s", Limits(max_seconds=10))
    run.tool("t", "1")
    run.later(4)
    run.tool("t", "2")
    run.now = 3.0  # the clock went back by far more than a second: the host restarted
    assert run.tool("t", "3").admitted
    assert run.snap().started_at == 3.0 - 4
    run.later(6.5)
    assert run.tool("t", "4").reason == "wall_clock"


# -- failures ------------------------------------------------------------------------------------------
def test_a_folder_that_does_not_exist_fails_at_construction_saying_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist: create it"):
        SQLiteStore(tmp_path / "missing" / "runs.db")
    with pytest.raises(StoreError, match="does not exist"):
        Breaker(store=sqlite_url(tmp_path / "missing" / "runs.db"))


def test_a_file_that_is_not_a_database_fails_at_construction_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError, match="not a loopguard SQLite store or it is damaged"):
        SQLiteStore(path)
    assert path.read_bytes().startswith(b"these are my notes")  # left as it was


def test_a_file_from_a_newer_loopguard_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE loopguard_breaker_meta SET value = '99' WHERE key = 'layout_version'")
    with pytest.raises(StoreError, match="newer loopguard-core; upgrade"):
        SQLiteStore(path)


def _open_read_only(path: str, results: Any) -> None:
    try:
        if os.geteuid() == 0:  # root writes any file: be nobody, for whom the file and its folder are read-only
            os.setgid(65534)
            os.setuid(65534)
        SQLiteStore(path)
        results.put("opened")
    except StoreError as exc:
        results.put(str(exc))
    except BaseException as exc:
        results.put(f"failed: {type(exc).__name__}: {exc}")


@pytest.mark.skipif(FORK is None, reason="fork")
def test_a_file_this_process_may_not_write_fails_at_construction_saying_so() -> None:
    assert FORK is not None
    folder = tempfile.mkdtemp()  # under /tmp, so that another user may reach it
    try:
        path = os.path.join(folder, "runs.db")
        SQLiteStore(path).close()
        for name in os.listdir(folder):
            os.chmod(os.path.join(folder, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        results = FORK.Queue()
        child = FORK.Process(target=_open_read_only, args=(path, results))
        child.start()
        message = results.get(timeout=60)
        child.join(timeout=60)
        assert "readonly" in message and "may not write the file or its folder" in message, message
        assert "give it write access to both" in message
    finally:
        os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(folder)


def test_a_file_that_turns_read_only_mid_run_refuses_under_the_closed_policy(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    breaker = Breaker(store=store, scope="s", max_tool_calls=10)
    breaker.before_tool("t", {"i": 1})
    # The file can no longer be written (as for a process without write access; root ignores modes).
    store._local.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("t", {"i": 2})
    assert caught.value.reason == "store_unavailable"
    assert "readonly" in caught.value.facts["error"] and "give it write access" in caught.value.facts["error"]
    assert "sqlite:///" in str(caught.value) and "failure policy is closed" in str(caught.value)


def _hold_the_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_locked_file_refuses_under_closed_and_admits_under_open_within_busy_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.db"
    closed = Breaker(store=SQLiteStore(path, busy_timeout=0.2), scope="s", max_tool_calls=10)
    opened = Breaker(store=SQLiteStore(path, busy_timeout=0.2, failure_policy="open"), scope="s2")
    holder = _hold_the_write_lock(path)
    try:
        with pytest.raises(LoopGuardTripped) as caught:
            closed.before_tool("t", {"i": 1})
        assert caught.value.reason == "store_unavailable"
        assert "busy_timeout=0.2" in caught.value.facts["error"] and "another process" in caught.value.facts["error"]
        with caplog.at_level(logging.WARNING, logger="loopguard.stores.sqlite"):
            opened.before_tool("t", {"i": 1})  # admitted unchecked
        assert "admits calls unchecked" in caplog.text
        with pytest.raises(StoreError, match="stayed locked"):
            closed.reset()
        assert closed.usage().tool_calls == 0  # reading needs no lock (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    closed.before_tool("t", {"i": 2})  # the lock is gone: works again
    assert closed.usage().tool_calls == 1


def test_a_report_that_cannot_be_written_is_kept_and_written_with_the_next_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    breaker = Breaker(store=SQLiteStore(path, busy_timeout=0.1), scope="s", max_tokens=1_000)
    breaker.before_model(max_output_tokens=100, call_id="m1")
    breaker.before_tool("t", {"i": 1}, call_id="t1")
    holder = _hold_the_write_lock(path)
    try:
        breaker.after_model(input_tokens=40, output_tokens=60, call_id="m1")  # never raises a trip
        breaker.after_tool("t", {"i": 1}, result="ok", call_id="t1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    snap = breaker.usage()  # the pending reports are written first, in order
    assert (snap.tokens, snap.turns, snap.tool_calls) == (100, 1, 1)
    breaker.after_model(input_tokens=40, output_tokens=60, call_id="m1")  # a retry: still counted once
    assert breaker.usage().tokens == 100


def test_a_step_that_fails_half_way_rolls_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    run = Run(store, "s", Limits(max_tokens=1_000))
    run.model(100, call_id="m1")
    before = (
        run.snap(),
        sqlite3.connect(tmp_path / "runs.db").execute("SELECT * FROM loopguard_breaker_runs").fetchall(),
    )

    def broken(data: Any) -> str:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_module, "_dumps", broken)  # fails after the run's row was updated
    assert run.used(90, call_id="m1").facts["deferred"] is True
    after = (
        run.snap(),
        sqlite3.connect(tmp_path / "runs.db").execute("SELECT * FROM loopguard_breaker_runs").fetchall(),
    )
    assert after == before  # nothing half-written
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM loopguard_breaker_seen").fetchone()[0] == 1  # only m1's admission
    monkeypatch.undo()
    assert run.model(10, call_id="m2").admitted  # the pending report goes first
    assert run.snap().tokens == 90
    assert run.used(90, call_id="m1").duplicate


def test_a_damaged_run_row_refuses_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    breaker = Breaker(store=SQLiteStore(path), scope="s")
    breaker.before_tool("t", {"i": 1})
    with sqlite3.connect(path) as conn:
        conn.execute('UPDATE loopguard_breaker_runs SET state = \'{"schema_version": 1, "turns": -\'')
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("t", {"i": 2})
    assert caught.value.reason == "store_unavailable"
    assert "drop the run" in caught.value.facts["error"]
    with sqlite3.connect(path) as conn:
        data = codec.state_to_dict(RunState())
        data["schema_version"] = 2
        conn.execute("UPDATE loopguard_breaker_runs SET state = ?", (json.dumps(data),))
    with pytest.raises(LoopGuardTripped) as newer:
        breaker.before_tool("t", {"i": 3})
    assert "upgrade" in newer.value.facts["error"]
    for column, value in [("last_now", "yesterday"), ("state", b"{}"), ("seen_count", "many")]:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE loopguard_breaker_runs SET state = ?", (codec.encode(RunState(), seen=False),))
            conn.execute(f"UPDATE loopguard_breaker_runs SET {column} = ?", (value,))
        with pytest.raises(LoopGuardTripped) as wrong_type:
            breaker.before_tool("t", {"i": 3})
        assert "malformed" in wrong_type.value.facts["error"], column
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE loopguard_breaker_runs SET last_now = 1.0, seen_count = 1")
        conn.execute("UPDATE loopguard_breaker_runs SET state = ?", (codec.encode(RunState(), seen=False),))
        run_row = conn.execute("SELECT id FROM loopguard_breaker_runs").fetchone()[0]
        conn.execute("INSERT INTO loopguard_breaker_seen (run, key, verdict) VALUES (?, 't:c9', '[1, 2')", (run_row,))
    with pytest.raises(LoopGuardTripped) as bad_verdict:
        breaker.before_tool("t", {"i": 3}, call_id="c9")
    assert "not valid JSON" in bad_verdict.value.facts["error"]
    run = breaker.run("r2").open()  # a run that ends on a damaged row
    breaker.before_tool("t", {"i": 4})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE loopguard_breaker_runs SET state = 'damaged'")
    with pytest.raises(LoopGuardTripped) as at_close:
        run.close()
    assert (at_close.value.reason, at_close.value.facts["step"]) == ("store_unavailable", "close")


def test_a_digest_key_must_be_the_same_for_every_process_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    keyed = SQLiteStore(path, digest_key="one")
    Run(keyed, "s", Limits()).tool()
    with pytest.raises(StoreError, match="with another digest_key"):
        SQLiteStore(path, digest_key="two")
    with pytest.raises(StoreError, match="written with a digest_key"):
        SQLiteStore(path)
    assert SQLiteStore(path, digest_key="one").digest_key == b"one"
    plain = SQLiteStore(tmp_path / "plain.db")
    assert plain.digest_key is not None and len(plain.digest_key) == 16
    assert SQLiteStore(tmp_path / "plain.db").digest_key == plain.digest_key  # kept in the file


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    store.close()
    assert Run(store, "s", Limits()).tool().reason == "store_unavailable"
    with pytest.raises(StoreError, match="closed"):
        store.snapshot(RunKey("s", "r"))


# -- hostile input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", HOSTILE, ids=lambda a: type(a).__name__)
def test_hostile_arguments_are_checked_and_still_repeat(tmp_path: Path, args: Any) -> None:
    breaker = Breaker(store=SQLiteStore(tmp_path / "runs.db"), scope="s" + LONE, session_id="r" + LONE)
    for _ in range(3):
        breaker.before_tool("search" + LONE, args, agent="agent" + LONE, call_id=None)
        breaker.after_tool("search" + LONE, args, result=args, agent="agent" + LONE)
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("search" + LONE, args, agent="agent" + LONE)
    assert caught.value.reason == "loop"


def test_lone_surrogates_in_keys_names_and_ids(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    run = Run(store, LONE, Limits(), run_id="r" + LONE)
    assert run.tool(LONE, LONE, call_id=LONE).admitted
    assert run.tool(LONE, LONE, call_id=LONE).duplicate
    run.done(LONE, LONE, LONE, call_id=LONE)
    assert run.snap().calls_per_tool == {LONE: 1}
    assert SQLiteStore(tmp_path / "runs.db").snapshot(run.key).tool_calls == 1


def test_store_urls_name_every_store_kind(tmp_path: Path) -> None:
    assert isinstance(store_from_url(f"sqlite:///{tmp_path}/runs.db"), SQLiteStore)
    cluster = store_from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2/0")  # built lazily: no server needed yet
    assert type(cluster).__name__ == "RedisStore"
