"""The run's window rides incrementally: an admission sends the window's version this process holds and gets back
only the steps pushed since. Whatever other processes did meanwhile (recorded, reset, dropped the run and began it
again), the detectors must see exactly the window the memory store shows them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from loopguard_core.detection import Repeat, Step, pack_step
from loopguard_core.limits import Limits, LoopDetection
from loopguard_core.stores.base import RunKey, ToolOutcome, ToolRequest
from loopguard_core.stores.memory import MemoryStore

pytest.importorskip("redis")

from loopguard_core.stores.redis import RedisStore

from .conftest import PATIENT


class Witness:
    """A detector of its own: it always gets the window, and writes down what it saw."""

    name, mode = "witness", None

    def __init__(self) -> None:
        self.seen: list[list[tuple[int, str, int, int]]] = []
        self.outcomes: dict[str, int] = {}  # each store digests outcomes its own way: numbered in order of sight

    def check(self, window: Any, call: Any, limits: Any) -> None:
        number = self.outcomes.setdefault
        self.seen.append([(s.seq, s.tool, number(s.outcome, len(self.outcomes)), s.flags) for s in window])


def _limits(witness: Witness, window: int = 5) -> Limits:
    return Limits(loop=LoopDetection(window=window, detectors=(witness,)))


def _admit(store: Any, run: RunKey, limits: Limits, i: int) -> None:
    assert store.admit_tool(run, ToolRequest(f"tool{i % 3}", f"sig{i}", 0.0, None, None), limits).admitted


def _record(store: Any, run: RunKey, limits: Limits, i: int) -> None:
    outcome = ToolOutcome(f"tool{i % 3}", f"sig{i}", f"out{i % 4}", i % 5 == 0, 0.0, None, i % 3)
    store.record_tool(run, outcome, limits)


@pytest.fixture
def stores(redis_url: str) -> Any:
    made = [RedisStore(redis_url, **PATIENT) for _ in range(3)]  # three processes' clients
    yield made
    for store in made:
        store.close()


def test_processes_taking_turns_see_the_window_memory_shows(stores: list[RedisStore], scope: str) -> None:
    rng = random.Random(7)
    plan = [(rng.randrange(3), rng.randrange(3), rng.random()) for _ in range(60)]
    seen = {}
    for kind in ("memory", "redis"):
        witness = Witness()
        limits, run = _limits(witness), RunKey(scope, f"turns-{kind}")
        memory = MemoryStore()
        for i, (admits, records, event) in enumerate(plan):
            by = memory if kind == "memory" else stores[admits]
            _admit(by, run, limits, i)
            _record(memory if kind == "memory" else stores[records], run, limits, i)
            if event < 0.08:  # someone closes the breaker by hand: the window is cleared
                (memory if kind == "memory" else stores[records]).reset(run)
        seen[kind] = witness.seen
    assert seen["redis"] == seen["memory"]
    assert max(len(window) for window in seen["redis"]) == 5


def test_a_version_from_an_earlier_run_under_the_same_keys_is_never_taken_for_this_runs(
    stores: list[RedisStore], scope: str
) -> None:
    # A holds the window of a run; the run is dropped and begun again by B with as many steps: A must get the new
    # run's window whole, not B's newest steps in front of the old run's.
    a, b = stores[0], stores[1]
    witness = Witness()
    limits, run = _limits(witness), RunKey(scope, "again")
    for i in range(3):
        _admit(a, run, limits, i)
        _record(a, run, limits, i)
    b.drop(run)
    for i in range(10, 15):
        _admit(b, run, limits, i)
        _record(b, run, limits, i)
    _admit(a, run, limits, 20)
    assert witness.seen[-1][:-1] == witness.seen[-2]  # B's, and B's newest step
    assert [(seq, tool) for seq, tool, *_ in witness.seen[-1]] == [(i - 9, f"tool{i % 3}") for i in range(10, 15)]


def test_a_window_the_process_does_not_hold_as_it_claims_is_a_store_failure(redis_url: str, scope: str) -> None:
    witness = Witness()
    limits, run = _limits(witness), RunKey(scope, "torn")
    for policy, admitted in (("closed", False), ("open", True)):
        store, other = RedisStore(redis_url, failure_policy=policy, **PATIENT), RedisStore(redis_url, **PATIENT)
        for i in range(4):
            _admit(store, run, limits, i)
            _record(store, run, limits, i)
        held = store._held[run]
        store._held[run] = held._replace(data=held.data[:10])  # torn: the older steps are not there
        _record(other, run, limits, 9)
        verdict = store.admit_tool(run, ToolRequest("tool0", "sig-x", 0.0, None, None), limits)
        assert verdict.admitted is admitted
        assert verdict.facts["error"].startswith("admit_tool answered with a packed window"), verdict.facts
        _admit(store, run, limits, 5)  # the torn window is let go: the next admission gets it whole
        assert len(witness.seen[-1]) == 5
        store.drop(run)
        store.close()
        other.close()


def test_an_admission_gets_only_the_steps_it_lacks(stores: list[RedisStore], scope: str) -> None:
    a, b = stores[0], stores[1]
    witness = Witness()
    limits, run = _limits(witness, window=48), RunKey(scope, "lean")
    sent: list[int] = []
    window = a._window

    def spy(*args: Any) -> bytes:
        sent.append(len(args[3][1]))  # the packed steps in the reply
        return window(*args)

    a._window = spy  # type: ignore[method-assign]
    for i in range(30):
        _admit(a, run, limits, i)
        _record(a if i % 10 else b, run, limits, i)
    assert sent[0] == 0 and len(witness.seen[-1]) == 29
    assert max(sent[1:]) < 2 * 80  # a step or two (about 53 bytes each), never the 29 steps held


def test_a_step_pushed_without_being_counted_sends_the_whole_window(
    stores: list[RedisStore], scope: str, redis_client: Any
) -> None:
    # An older release pushes steps without counting them in the version: the version alone would not tell, so
    # Redis checks that the steps it sends follow the newest step the process holds.
    a = stores[0]
    witness = Witness()
    limits, run = _limits(witness), RunKey(scope, "uncounted")
    for i in range(4):
        _admit(a, run, limits, i)
        if i < 3:
            _record(a, run, limits, i)
    redis_client.rpush(a.keys(run)[4], pack_step(Step(99, "older", "ab" * 16, "cd" * 8)))
    _record(a, run, limits, 3)  # counted: the version moves on by one, past a step it never counted
    _admit(a, run, limits, 4)
    assert [seq for seq, *_ in witness.seen[-1]] == [1, 2, 3, 99, 4]
    assert witness.seen[-1][3][1] == "older"


def test_a_step_pushed_without_being_counted_is_seen_when_outcomes_ride_with_the_admission(
    redis_url: str, scope: str, redis_client: Any
) -> None:
    # With deferred outcomes the steps pushed since the process's version are usually its own outcomes, which the
    # admission pushes itself and hands back as they are: an uncounted step before them must still be noticed.
    a = RedisStore(redis_url, defer_seconds=60.0, **PATIENT)
    witness = Witness()
    limits, run = _limits(witness), RunKey(scope, "uncounted-deferred")
    for i in range(4):
        _admit(a, run, limits, i)
        if i < 3:
            _record(a, run, limits, i)  # waits, and rides with the next admission
    redis_client.rpush(a.keys(run)[4], pack_step(Step(99, "older", "ab" * 16, "cd" * 8)))
    _record(a, run, limits, 3)
    _admit(a, run, limits, 4)
    a.close()
    assert [seq for seq, *_ in witness.seen[-1]] == [1, 2, 3, 99, 4]


@pytest.mark.parametrize("window", [5, 48])
def test_one_process_with_deferred_outcomes_sees_the_windows_and_verdicts_memory_gives(
    redis_url: str, scope: str, window: int
) -> None:
    # Each outcome waits and is applied by the next admission, in the same script that judges it: the window it
    # hands back, the failure streaks it counts (the same tool's and another's) and the trips must be the memory
    # store's, call after call, with the window trimmed as it goes (several times its length in calls).
    rng = random.Random(window)
    plan = [(rng.randrange(2), rng.random() < 0.5) for _ in range(max(60, 4 * window))]
    seen: dict[str, Any] = {}
    for kind in ("memory", "redis"):
        witness = Witness()
        limits = Limits(max_consecutive_failures=3, loop=LoopDetection(window=window, detectors=(witness,)))
        store: Any = MemoryStore() if kind == "memory" else RedisStore(redis_url, defer_seconds=60.0, **PATIENT)
        run, verdicts = RunKey(scope, f"deferred-{kind}-{window}"), []
        for i, (which, failed) in enumerate(plan):
            verdict = store.admit_tool(run, ToolRequest(f"tool{which}", f"sig{i}", 0.0, None, None), limits)
            verdicts.append((verdict.admitted, verdict.reason))
            if verdict.admitted:
                answer = "boom" if failed else f"out{i % 4}"  # a streak counts the same error again
                store.record_tool(run, ToolOutcome(f"tool{which}", f"sig{i}", answer, failed, 0.0), limits)
            else:  # closed by hand (the window and the streaks start over) and the plan goes on
                store.reset(run)
        if kind == "redis":
            store.close()
        seen[kind] = (witness.seen, verdicts)
    assert seen["redis"] == seen["memory"]
    assert any(reason == "failures" for _, reason in seen["memory"][1])  # streaks of one tool tripped the run


@pytest.mark.parametrize("defer", [None, 60.0])
def test_a_wider_window_never_sees_steps_a_narrower_one_let_go(redis_url: str, scope: str, defer: Any) -> None:
    seen = {}
    for kind in ("memory", "redis"):
        narrow, wide = Witness(), Witness()
        a_limits = Limits(loop=LoopDetection(window=2, detectors=(narrow,)))
        b_limits = Limits(loop=LoopDetection(window=6, detectors=(wide, Repeat(max_repeats=4))))
        run = RunKey(scope, f"mixed-{kind}")
        if kind == "memory":
            a = b = MemoryStore()
        else:
            a, b = (RedisStore(redis_url, defer_seconds=defer, **PATIENT) for _ in range(2))
        for _ in range(4):  # A keeps 2 steps: the memory store lets the older ones go
            assert a.admit_tool(run, ToolRequest("search", "search(x)", 0.0), a_limits).admitted
            a.record_tool(run, ToolOutcome("search", "search(x)", "same", False, 0.0), a_limits)
        if kind == "redis":
            a.flush()
        assert b.admit_tool(run, ToolRequest("search", "search(x)", 0.0), b_limits).admitted
        b.record_tool(run, ToolOutcome("search", "search(x)", "same", False, 0.0), b_limits)
        verdict = b.admit_tool(run, ToolRequest("search", "search(x)", 0.0), b_limits)
        seen[kind] = ([s[0] for s in wide.seen[-1]], verdict.admitted, verdict.reason)
        if kind == "redis":
            a.drop(run)
            a.close()
            b.close()
    assert seen["redis"] == seen["memory"] == ([3, 4, 5], True, None)
