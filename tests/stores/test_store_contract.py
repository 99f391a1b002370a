"""The store contract: every rule behaves the same in every store.

Each test runs against MemoryStore (the reference) and RedisStore (the Lua scripts for ceilings and state,
the same Python detectors over the window Redis keeps, on a real server): on the shared Redis server, on a
Valkey server, and on a Redis Cluster of three masters with a replica each (both started by the tests).
The Redis store uses the request's clock here (``clock="request"``) so recovery windows and wall-clock
limits are driven by hand, never by sleeping; test_redis_store.py covers Redis TIME.
A final test replays long random call sequences through both stores and requires identical verdicts
and snapshots at every step.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.detection import EMPTY, SIMILAR, WAITING
from loopguard_core.limits import Limits, LoopDetection
from loopguard_core.state import BreakerState
from loopguard_core.stores import MemoryStore, Store
from loopguard_core.stores.base import ModelRequest, ModelUsage, RunKey, ToolOutcome, ToolRequest, Verdict

from .conftest import PATIENT, delete_cluster_scope, delete_scope

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SERVERS = [pytest.param(name, marks=pytest.mark.redis) for name in ("redis", "valkey", "cluster")]


@pytest.fixture(params=["memory", *SERVERS])
def store(request: pytest.FixtureRequest, scope: str) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from loopguard_core.stores.redis import RedisStore

    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster_store = RedisStore(cluster.url, clock="request", **PATIENT)
        yield cluster_store
        cluster_store.close()
        delete_cluster_scope(cluster, scope)
        return
    url = request.getfixturevalue("redis_url") if request.param == "redis" else request.getfixturevalue("valkey").url
    redis_store = RedisStore(url, clock="request", **PATIENT)
    yield redis_store
    redis_store.close()
    delete_scope(url, scope)


class Run:
    """One run driven by hand: the clock moves only when told to."""

    def __init__(self, store: Store, scope: str, limits: Limits, run_id: str = "run-1") -> None:
        self.store, self.limits, self.key = store, limits, RunKey(scope, run_id)
        self.now = 1_000.0

    def later(self, seconds: float) -> None:
        self.now += seconds

    def tool(
        self,
        tool: str = "search",
        sig: str | None = None,
        *,
        call_id: str | None = None,
        words: frozenset[int] = frozenset(),
        shape: str = "",
        poll: bool = False,
    ) -> Verdict:
        request = ToolRequest(tool, sig or f"{tool}()", self.now, call_id, "agent-a", shape, words, poll)
        return self.store.admit_tool(self.key, request, self.limits)

    def done(
        self,
        tool: str = "search",
        sig: str | None = None,
        outcome: str = "same",
        *,
        failed: bool = False,
        call_id: str | None = None,
        flags: int = 0,
        words: frozenset[int] = frozenset(),
        shape: str = "",
    ) -> Verdict:
        out = ToolOutcome(tool, sig or f"{tool}()", outcome, failed, self.now, call_id, flags, shape, words)
        return self.store.record_tool(self.key, out, self.limits)

    def call(
        self, tool: str = "search", sig: str | None = None, outcome: str = "same", *, failed: bool = False
    ) -> Verdict:
        """Admit, and when admitted, record the outcome (what an adapter does)."""
        verdict = self.tool(tool, sig)
        if verdict.admitted:
            self.done(tool, sig, outcome, failed=failed)
        return verdict

    def model(self, tokens: int = 0, micros: int = 0, *, call_id: str | None = None) -> Verdict:
        return self.store.admit_model(self.key, ModelRequest(tokens, micros, self.now, call_id), self.limits)

    def used(self, tokens: int = 0, micros: int = 0, *, call_id: str | None = None) -> Verdict:
        return self.store.record_model(self.key, ModelUsage(tokens, micros, self.now, call_id), self.limits)

    def snap(self) -> Any:
        return self.store.snapshot(self.key)


def moves(verdict: Verdict) -> list[tuple[BreakerState, BreakerState]]:
    return [(t.source, t.target) for t in verdict.transitions]


# -- budget ceilings ---------------------------------------------------------------------------------
def test_tool_ceiling_allows_the_limit_exactly_then_trips_for_good(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tool_calls=3, loop=LoopDetection(enabled=False)))
    assert [run.call("search", f"q{i}").admitted for i in range(3)] == [True, True, True]
    refused = run.tool("search", "q3")
    assert (refused.admitted, refused.reason, refused.terminal) == (False, "tool_ceiling", True)
    assert refused.facts["observed"] == 4
    assert refused.facts["limit"] == 3
    assert refused.facts["tool"] == "search"
    assert moves(refused) == [(CLOSED, OPEN)]
    run.later(86_400)  # budget trips never half-open
    again = run.tool("search", "q4")
    assert (again.reason, again.terminal, again.facts["retry_in_seconds"]) == ("open", True, None)
    assert again.facts["tripped_by"] == "tool_ceiling"
    snap = run.snap()
    assert (snap.state, snap.terminal, snap.tool_calls, snap.trips) == (OPEN, True, 3, 1)


def test_per_tool_ceiling_counts_each_tool_separately(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_calls_per_tool={"fetch": 2}, loop=LoopDetection(enabled=False)))
    assert run.call("fetch", "a").admitted
    assert run.call("fetch", "b").admitted
    assert run.call("search", "c").admitted
    refused = run.tool("fetch", "d")
    assert (refused.reason, refused.facts["observed"], refused.facts["limit"]) == ("tool_ceiling", 3, 2)
    assert run.snap().calls_per_tool == {"fetch": 2, "search": 1}


def test_turn_ceiling_is_strict(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_turns=2))
    assert [run.model().admitted, run.model().admitted] == [True, True]
    refused = run.model()
    assert (refused.reason, refused.terminal, refused.facts) == ("turn_ceiling", True, {"observed": 3, "limit": 2})
    assert run.snap().turns == 2


def test_token_ceiling_projects_before_the_call(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tokens=100))
    assert run.model(60).admitted
    run.used(60)
    assert run.model(40).admitted  # 60 + 40 reaches the ceiling exactly: allowed
    run.used(40)
    refused = run.model(0)  # every call spends at least one token
    assert (refused.reason, refused.facts) == ("token_ceiling", {"observed": 101, "limit": 100, "spent": 100})
    run2 = Run(store, scope, Limits(max_tokens=100), run_id="run-2")
    refused = run2.model(101)
    assert (refused.reason, refused.facts["observed"]) == ("token_ceiling", 101)
    assert run2.snap().turns == 0


def test_overspend_is_recorded_and_refuses_the_next_call(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tokens=100))
    assert run.model(10).admitted
    run.used(150)
    assert run.snap().tokens == 150
    assert run.model(1).reason == "token_ceiling"


def test_cost_ceiling_in_micro_usd(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_cost_usd=0.01))
    assert run.model(micros=6_000).admitted
    run.used(micros=6_000)
    assert run.model(micros=4_000).admitted  # exactly 10,000 micro-USD
    run.used(micros=4_000)
    refused = run.model(micros=0)
    assert (refused.reason, refused.terminal) == ("cost_ceiling", True)
    assert refused.facts == {"observed": 0.010001, "limit": 0.01, "spent": 0.01}
    assert run.snap().cost_micros == 10_000


def test_wall_clock_allows_the_limit_exactly(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_seconds=30))
    assert run.call("a", "1").admitted
    run.later(30)
    assert run.call("a", "2").admitted
    run.later(0.5)
    refused = run.tool("a", "3")
    assert (refused.reason, refused.terminal) == ("wall_clock", True)
    assert (refused.facts["observed"], refused.facts["limit"]) == (30.5, 30.0)
    assert run.model().facts["tripped_by"] == "wall_clock"


def test_wall_clock_refuses_a_model_call_under_no_other_ceiling(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_seconds=30))
    assert run.model().admitted
    run.later(30)
    assert run.model().admitted  # exactly at the limit
    run.later(0.5)
    refused = run.model()
    assert (refused.reason, refused.terminal) == ("wall_clock", True)
    assert (refused.facts["observed"], refused.facts["limit"]) == (30.5, 30.0)
    assert run.snap().turns == 2


# -- loops -------------------------------------------------------------------------------------------
def test_same_call_same_result_is_refused_on_the_fourth_try(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for _ in range(3):
        assert run.call("search", "q=x", "nothing").admitted
    refused = run.tool("search", "q=x")
    assert (refused.reason, refused.terminal) == ("loop", False)
    assert refused.facts == {
        "tool": "search",
        "agent": "agent-a",
        "rule": "repeat",
        "repeats": 3,
        "limit": 3,
        "positions": [1, 2, 3],
        "call": 4,
        "signature": "q=x",
    }


def test_a_repeat_that_returns_something_new_is_progress(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for i in range(12):
        assert run.call("run_tests", "pytest", f"{12 - i} failed").admitted


def test_a_call_repeated_with_work_in_between_is_not_a_loop(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for i in range(8):  # rerun, then a new edit that went through: the rerun's answer may stay the same
        assert run.call("run", "reproduce.py", "Traceback: KeyError").admitted
        assert run.call("edit", f"fix {i}", "File updated").admitted


def test_a_block_that_comes_round_with_the_same_answers_is_a_cycle(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for _ in range(3):
        assert run.call("read", "a.py", "A").admitted
        assert run.call("read", "b.py", "B").admitted
    assert run.call("read", "a.py", "A").admitted
    refused = run.tool("read", "b.py")
    assert (refused.reason, refused.facts["rule"], refused.facts["period"]) == ("loop", "cycle", 2)
    assert (refused.facts["positions"], refused.facts["call"]) == ([1, 3, 5], 8)


def test_the_same_call_between_failed_calls_is_a_loop(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for i in range(3):
        assert run.call("edit", "same fix", "rejected: syntax error").admitted
        run.tool("edit", f"variant {i}")
        run.done("edit", f"variant {i}", f"rejected {i}", flags=1)  # FAILED: changes nothing
    refused = run.tool("edit", "same fix")
    assert (refused.reason, refused.facts["rule"], refused.facts["positions"]) == ("loop", "interleaved", [1, 3, 5])


def test_pre_flight_only_callers_still_catch_loops(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    assert [run.tool("x", "s").admitted for _ in range(3)] == [True, True, True]
    assert run.tool("x", "s").reason == "loop"


def test_parallel_identical_calls_cannot_slip_past_the_limit_together(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    assert run.call("x", "s", "same").admitted
    assert [run.tool("x", "s").admitted, run.tool("x", "s").admitted] == [True, True]  # both in flight
    assert run.tool("x", "s").reason == "loop"
    run.done("x", "s", "same")
    run.done("x", "s", "same")
    assert run.tool("x", "s").reason == "open"


def test_paging_into_empty_answers_stalls(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(loop=LoopDetection(max_empty_results=3)))
    for page in range(3):
        assert run.tool("list", f"page={page}", shape="list page=#").admitted
        run.done("list", f"page={page}", "[]", flags=EMPTY, shape="list page=#")
    refused = run.tool("list", "page=3", shape="list page=#")
    assert (refused.reason, refused.terminal, refused.facts["rule"]) == ("stall", False, "empty_pages")
    assert (refused.facts["observed"], refused.facts["limit"], refused.facts["positions"]) == (3, 3, [1, 2, 3])


def test_the_same_question_in_other_words_with_the_same_answer_is_a_loop(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    asks = [("q1", frozenset(), 0), ("q2", frozenset({2, 4, 6, 10}), SIMILAR), ("q3", frozenset({2, 4, 6}), SIMILAR)]
    for sig, words, flags in asks:  # the caller marks each reworded question SIMILAR to the one before
        assert run.tool("search", sig).admitted
        run.done("search", sig, "the same ten results", words=words, flags=flags)
    refused = run.tool("search", "q4", words=frozenset({2, 4, 6, 12}))
    assert (refused.reason, refused.facts["rule"]) == ("loop", "paraphrase")
    assert run.tool("search", "q5", words=frozenset({20, 40, 60})).reason == "open"


def test_an_answer_saying_still_running_earns_poll_patience(store: Store, scope: str) -> None:
    loop = LoopDetection(max_repeats=2, poll_max_repeats=5)
    run = Run(store, scope, Limits(loop=loop))
    for _ in range(5):
        assert run.tool("fetch_report", "r1").admitted
        run.done("fetch_report", "r1", "still running", flags=WAITING)
    assert run.tool("fetch_report", "r1").reason == "loop"


def test_a_poll_tool_gets_poll_patience(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(loop=LoopDetection(poll_max_repeats=6)))
    for _ in range(6):
        assert run.tool("job", "j1", poll=True).admitted
        run.done("job", "j1", "42% done")
    assert run.tool("job", "j1", poll=True).reason == "loop"


def test_observe_mode_admits_and_notes_what_it_would_refuse(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tool_calls=4, mode="observe"))
    for _ in range(3):
        assert run.call("search", "q=x", "nothing").admitted
    noted = run.tool("search", "q=x")
    assert noted.admitted
    assert [(reason, facts["rule"]) for reason, facts in noted.observed] == [("loop", "repeat")]
    run.done("search", "q=x", "nothing")
    over = run.tool("search", "q=y")
    assert over.admitted
    assert [reason for reason, _ in over.observed] == ["tool_ceiling"]
    assert run.snap().state is CLOSED
    assert run.snap().tool_calls == 5


def test_concurrent_model_calls_cannot_overshoot_together(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tokens=100))
    assert run.model(60, call_id="a").admitted  # in flight: holds 60
    refused = run.model(60, call_id="b")
    assert refused.facts == {"observed": 120, "limit": 100, "spent": 0, "in_flight": 60}


def test_a_failed_model_call_releases_its_reservation_and_a_retry_under_its_id_still_counts(
    store: Store, scope: str
) -> None:
    run = Run(store, scope, Limits(max_tokens=100))
    assert run.model(60, call_id="a").admitted
    failure = ModelUsage(0, 0, run.now, "a", True)
    assert store.record_model(run.key, failure, run.limits).admitted
    assert run.model(90, call_id="a-retry").admitted  # nothing is held for the failed call any more
    assert not run.used(40, call_id="a").duplicate  # a success reported under the failed call's id counts
    assert run.snap().tokens == 40


def test_a_failure_reported_twice_never_releases_another_calls_reservation(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tokens=100))
    assert run.model(30, call_id="a").admitted
    assert run.model(60, call_id="b").admitted
    for _ in range(2):  # e.g. an SDK retry that failed twice under one idempotency key
        assert store.record_model(run.key, ModelUsage(0, 0, run.now, "a", True), run.limits).admitted
    refused = run.model(50, call_id="c")  # b still holds 60: 60 + 50 > 100
    assert not refused.admitted
    assert refused.facts["in_flight"] == 60


def test_exempt_tools_and_per_tool_repeats(store: Store, scope: str) -> None:
    loop = LoopDetection(exempt_tools={"wait"}, max_repeats_per_tool={"status": 4})
    run = Run(store, scope, Limits(loop=loop))
    for _ in range(10):
        assert run.call("wait", "5s", "ok").admitted
    for _ in range(4):
        assert run.call("status", "job-1", "running").admitted
    assert run.tool("status", "job-1").reason == "loop"


def test_loop_detection_off(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(loop=LoopDetection(enabled=False)))
    for _ in range(10):
        assert run.call("x", "s", "same").admitted


def test_the_window_bounds_what_loop_detection_remembers(store: Store, scope: str) -> None:
    short = Run(store, scope, Limits(loop=LoopDetection(window=6)), run_id="short")
    full = Run(store, scope, Limits(), run_id="full")
    for run in (short, full):
        for _ in range(3):
            run.call("read", "a.py", "A")
            run.call("read", "b.py", "B")
        run.call("read", "a.py", "A")
    assert short.tool("read", "b.py").admitted  # seven calls make the pattern: six are remembered
    assert full.tool("read", "b.py").reason == "loop"


class WindowWitness:
    """A detector of its own: notes the window it is shown before each call (never fires)."""

    name, mode = "witness", None

    def __init__(self) -> None:
        self.seen: list[list[tuple[int, str, int]]] = []

    def check(self, window: Any, call: Any, limits: Any) -> None:
        self.seen.append([(step.seq, step.tool, step.flags) for step in window])


def test_every_store_shows_a_detector_of_its_own_the_same_window(store: Store, scope: str) -> None:
    # Whether any detector can fire is decided once, in Python (LoopDetection.may_fire): a detector that is not
    # built in always gets the window, and Redis hands back the same steps in the same order as memory.
    witness = WindowWitness()
    run = Run(store, scope, Limits(loop=LoopDetection(window=5, detectors=(witness,))))
    for i in range(8):
        tool = f"tool{i % 3}"
        assert run.tool(tool, f"arg{i}").admitted
        run.done(tool, f"arg{i}", "ok" if i % 2 else "", failed=i == 4, flags=i % 3)
    assert [len(w) for w in witness.seen] == [0, 1, 2, 3, 4, 5, 5, 5]
    assert witness.seen[-1] == [(3, "tool2", 2), (4, "tool0", 0), (5, "tool1", 1), (6, "tool2", 2), (7, "tool0", 0)]


def test_in_flight_memory_is_bounded(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(loop=LoopDetection(memory=2)))
    assert [run.tool("s", "a").admitted for _ in range(3)] == [True, True, True]  # never reported
    assert run.tool("s", "b").admitted
    assert run.tool("s", "c").admitted  # a third distinct call in flight: the memory starts over
    assert run.tool("s", "a").admitted


# -- failures and recovery ---------------------------------------------------------------------------
def test_failure_streak_trips_and_a_success_resets_it(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_consecutive_failures=3))
    for i in range(2):
        assert run.call("db", f"q{i}", "err", failed=True).admitted
    assert run.call("db", "ok", "rows").admitted  # a success resets the streak
    for i in range(4):  # different errors: the agent is trying things, not a broken tool
        assert run.call("db", f"p{i}", f"error {i}", failed=True).admitted
    for i in range(3):
        assert run.call("db", f"r{i}", "403 forbidden", failed=True).admitted
    refused = run.tool("db", "r9")
    assert (refused.reason, refused.terminal) == ("failures", False)
    assert (refused.facts["observed"], refused.facts["limit"]) == (3, 3)
    assert run.snap().trip_reason == "failures"


def _trip_on_failures(run: Run) -> None:
    for i in range(2):
        run.call("db", f"q{i}", "connection refused", failed=True)
    assert run.tool("db", "q9").reason == "failures"


def test_half_open_admits_exactly_one_probe_and_success_closes(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_consecutive_failures=2, recovery_seconds=60))
    _trip_on_failures(run)
    run.later(59)
    early = run.tool("db", "q9")
    assert (early.reason, early.facts["retry_in_seconds"], early.facts["tripped_by"]) == ("open", 1.0, "failures")
    run.later(1)
    probe = run.tool("db", "probe", call_id="p1")
    assert (probe.admitted, probe.probe, moves(probe)) == (True, True, [(OPEN, HALF_OPEN)])
    other = run.tool("search", "meanwhile")
    assert (other.reason, other.facts["probe_in_flight"]) == ("open", True)
    settled = run.done("db", "probe", "rows", call_id="p1")
    assert (settled.probe, moves(settled)) == (True, [(HALF_OPEN, CLOSED)])
    assert run.snap().state is CLOSED
    assert run.call("search", "after").admitted


def test_half_open_admits_model_calls_while_the_probe_is_in_flight_as_the_docs_say(store: Store, scope: str) -> None:
    """The model must run to choose the probe (and to read its answer), so HALF_OPEN gates tool calls only:
    one tool call probes, other tool calls are refused until it reports, model calls pass."""
    run = Run(store, scope, Limits(max_consecutive_failures=2, recovery_seconds=60))
    _trip_on_failures(run)
    assert run.model().reason == "open"  # OPEN refuses model calls too, until the recovery window has passed
    run.later(60)
    chooses = run.model()  # the model call that chooses the probe half-opens the breaker; it is no probe
    assert (chooses.admitted, chooses.probe, moves(chooses)) == (True, False, [(OPEN, HALF_OPEN)])
    probe = run.tool("db", "probe", call_id="p1")
    assert (probe.admitted, probe.probe, moves(probe)) == (True, True, [])
    assert run.model().admitted  # in flight: model calls still pass...
    other = run.tool("search", "meanwhile")  # ...other tool calls do not
    assert (other.reason, other.facts["probe_in_flight"]) == ("open", True)
    assert run.snap().state is HALF_OPEN
    assert moves(run.done("db", "probe", "rows", call_id="p1")) == [(HALF_OPEN, CLOSED)]
    # docs/deployment.md says the same (it said "everyone else is refused until it reports").
    deployment = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text(encoding="utf-8")
    recovery = re.split(r"\n(?:- |\n)", deployment[deployment.index("- **Recovery**") :], maxsplit=1)[0]
    assert "everyone else is refused" not in recovery
    assert "model calls are admitted" in " ".join(recovery.split()).lower()
    assert "other tool calls are refused" in " ".join(recovery.split()).lower()


def test_a_failed_probe_reopens(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_consecutive_failures=2, recovery_seconds=10))
    _trip_on_failures(run)
    run.later(10)
    assert run.tool("db", "probe").probe
    settled = run.done("db", "probe", "boom", failed=True)
    assert moves(settled) == [(HALF_OPEN, OPEN)]
    snap = run.snap()
    assert (snap.state, snap.trip_reason, snap.trips, snap.opened_at) == (OPEN, "failures", 2, run.now)
    assert run.tool("db", "x").reason == "open"
    run.later(10)
    assert run.tool("db", "probe2").probe


def test_a_lost_probe_expires_and_another_caller_probes(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_consecutive_failures=2, recovery_seconds=30))
    _trip_on_failures(run)
    run.later(30)
    assert run.tool("db", "p1").probe  # never reports back
    run.later(29)
    assert run.tool("db", "p2").facts.get("probe_in_flight") is True
    run.later(1)
    assert run.tool("db", "p3").probe


def test_a_repeat_as_probe_reopens_via_loop(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(recovery_seconds=5))
    for _ in range(3):
        run.call("s", "a")
    assert run.tool("s", "a").reason == "loop"
    run.later(5)
    refused = run.tool("s", "a")
    assert (refused.reason, moves(refused)) == ("loop", [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)])
    assert run.snap().trips == 2


# -- idempotency -------------------------------------------------------------------------------------
def test_a_retried_tool_request_never_counts_twice(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_tool_calls=2, loop=LoopDetection(enabled=False)))
    first = run.tool("a", "1", call_id="c1")
    again = run.tool("a", "1", call_id="c1")
    assert (first.duplicate, again.duplicate, again.admitted) == (False, True, True)
    assert run.snap().tool_calls == 1
    assert run.tool("a", "2", call_id="c2").admitted
    refused = run.tool("a", "3", call_id="c3")
    retried = run.tool("a", "3", call_id="c3")
    assert (refused.reason, retried.reason, retried.duplicate) == ("tool_ceiling", "tool_ceiling", True)
    assert retried.facts == refused.facts
    assert retried.transitions == ()
    assert run.snap().trips == 1


def test_a_retried_outcome_never_counts_twice(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_consecutive_failures=2))
    run.tool("db", "q", call_id="c1")
    run.done("db", "q", "err", failed=True, call_id="c1")
    assert run.done("db", "q", "err", failed=True, call_id="c1").duplicate
    assert run.tool("db", "q2").admitted  # one failure counted, not two


def test_a_retried_model_call_never_counts_twice(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_turns=5, max_tokens=1_000))
    assert run.model(100, call_id="m1").turn == 1
    assert run.model(100, call_id="m1").duplicate
    run.used(100, 5, call_id="m1")
    assert run.used(100, 5, call_id="m1").duplicate
    snap = run.snap()
    assert (snap.turns, snap.tokens, snap.cost_micros) == (1, 100, 5)


def test_a_call_id_seen_in_an_earlier_model_turn_names_a_new_call(store: Store, scope: str) -> None:
    # Servers that number calls per answer (Kimi K2/K3: "list_dir:0" every turn) or send one id for all
    # (llama.cpp): the id again after the model answered again is another call, judged and counted.
    run = Run(store, scope, Limits(max_tool_calls=3, loop=LoopDetection(enabled=False)))
    run.model()
    assert not run.tool("ls", "a", call_id="list_dir:0").duplicate
    assert run.tool("ls", "a", call_id="list_dir:0").duplicate  # a retry within the turn: the same call
    run.done("ls", "a", "x", call_id="list_dir:0")
    assert run.done("ls", "a", "x", call_id="list_dir:0").duplicate
    run.model()
    second = run.tool("ls", "b", call_id="list_dir:0")
    assert (second.admitted, second.duplicate, second.turn) == (True, False, 2)
    assert run.tool("ls", "b", call_id="list_dir:0").duplicate
    assert not run.done("ls", "b", "y", call_id="list_dir:0").duplicate  # its own outcome counts
    assert run.done("ls", "b", "y", call_id="list_dir:0").duplicate
    run.model()
    assert run.tool("ls", "c", call_id="list_dir:0").admitted
    run.done("ls", "c", "z", call_id="list_dir:0")
    run.model()
    refused = run.tool("ls", "d", call_id="list_dir:0")
    assert (refused.reason, refused.duplicate, refused.facts["observed"]) == ("tool_ceiling", False, 4)
    again = run.tool("ls", "d", call_id="list_dir:0")
    assert (again.reason, again.duplicate) == ("tool_ceiling", True)
    assert run.snap().tool_calls == 3


def test_a_call_checked_again_after_another_model_call_is_still_one_call(store: Store, scope: str) -> None:
    # Before its outcome, the id is the same call whatever model calls came between (an LLM check in a tool
    # wrapper, a nested agent): checked twice, counted once. Once reported, the id in a later turn is a new call.
    run = Run(store, scope, Limits(max_calls_per_tool={"charge": 1}, loop=LoopDetection(enabled=False)))
    run.model()
    assert run.tool("charge", "order 7", call_id="c1").admitted
    run.model()
    again = run.tool("charge", "order 7", call_id="c1")
    assert (again.admitted, again.duplicate) == (True, True)
    run.done("charge", "order 7", "charged", call_id="c1")
    run.model()
    other = run.tool("charge", "order 8", call_id="c1")
    assert (other.reason, other.duplicate) == ("tool_ceiling", False)
    assert run.snap().tool_calls == 1


def test_a_loop_under_one_reused_call_id_is_refused(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    verdicts = []
    for _ in range(4):
        run.model()
        verdicts.append(run.tool("search", "same", call_id="call_0"))
        if verdicts[-1].admitted:
            run.done("search", "same", "nothing", call_id="call_0")
    assert [v.admitted for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].reason == "loop"


# -- control and views -------------------------------------------------------------------------------
def test_reset_closes_keeps_counts_and_clears_loop_memory(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_turns=10))
    run.model()
    for _ in range(3):
        run.call("s", "a")
    assert run.tool("s", "a").reason == "loop"
    verdict = store.reset(run.key)
    assert moves(verdict) == [(OPEN, CLOSED)]
    snap = run.snap()
    assert (snap.state, snap.terminal, snap.trip_reason, snap.turns, snap.tool_calls) == (CLOSED, False, None, 1, 3)
    assert run.tool("s", "a").admitted  # loop memory cleared
    assert store.reset(run.key).transitions == ()


def test_reset_forgets_refusals_so_an_approved_call_can_be_retried(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits())
    for call_id in ("c1", "c2", "c3"):
        run.tool("s", "a", call_id=call_id)
        run.done("s", "a", call_id=call_id)
    refused = run.tool("s", "a", call_id="c4")
    assert refused.reason == "loop"
    again = run.tool("s", "a", call_id="c4")
    assert (again.reason, again.duplicate, again.facts) == ("loop", True, refused.facts)
    store.reset(run.key)  # a person looked and approved the call
    retried = run.tool("s", "a", call_id="c4")
    assert (retried.admitted, retried.duplicate) == (True, False)
    assert run.tool("s", "a", call_id="c1").duplicate  # admitted calls stay remembered
    assert run.snap().tool_calls == 4


def test_reset_lifts_a_budget_trip(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_turns=1))
    run.model()
    assert run.model().terminal
    store.reset(run.key)
    assert run.model().reason == "turn_ceiling"  # counts stay: the next turn is still over
    assert run.snap().trips == 2


def test_snapshot_of_a_new_run_is_empty(store: Store, scope: str) -> None:
    snap = store.snapshot(RunKey(scope, "never-used"))
    assert (snap.state, snap.terminal, snap.trip_reason, snap.turns, snap.tokens) == (CLOSED, False, None, 0, 0)
    assert (snap.cost_micros, snap.tool_calls, snap.calls_per_tool, snap.trips) == (0, 0, {}, 0)
    assert (snap.started_at, snap.opened_at) == (None, None)


def test_snapshot_reports_counts_and_times(store: Store, scope: str) -> None:
    run = Run(store, scope, Limits(max_cost_usd=5.0))
    run.call("a", "1")
    run.later(2)
    run.call("b", "2")
    run.model(10, 50)
    run.used(12, 42)
    snap = run.snap()
    assert (snap.turns, snap.tokens, snap.cost_micros, snap.cost_usd) == (1, 12, 42, 0.000042)
    assert (snap.tool_calls, snap.calls_per_tool) == (2, {"a": 1, "b": 1})
    assert (snap.started_at, snap.opened_at) == (1000.0, None)


def test_runs_and_scopes_are_isolated(store: Store, scope: str) -> None:
    limits = Limits(max_turns=1)
    one, two = Run(store, scope, limits, "r1"), Run(store, scope, limits, "r2")
    assert one.model().admitted and two.model().admitted
    assert not one.model().admitted
    other = Run(store, scope + "-other", limits, "r1")
    assert other.model().admitted
    store.drop(other.key)
    store.drop(one.key)
    assert one.snap().turns == 0
    assert two.snap().turns == 1


# -- the same verdicts, step by step, for long random sequences ----------------------------------------
@pytest.mark.redis
@pytest.mark.parametrize("seed", range(16))
def test_random_sequences_give_identical_verdicts(redis_url: str, scope: str, seed: int) -> None:
    random_sequences(redis_url, scope, seed, None)


def random_sequences(redis_url: str, scope: str, seed: int, defer: float | None) -> None:
    from loopguard_core.stores.redis import RedisStore

    rng = random.Random(seed)
    limits = Limits(
        max_turns=rng.choice([None, None, 40]),
        max_tokens=rng.choice([None, None, 4_000]),
        max_cost_usd=rng.choice([None, None, 0.05]),
        max_tool_calls=rng.choice([None, None, 100]),
        max_calls_per_tool=rng.choice([{}, {"fetch": 25}]),
        max_seconds=rng.choice([None, None, 500.0]),
        max_consecutive_failures=rng.choice([None, 2, 3]),
        recovery_seconds=rng.choice([5.0, 20.0]),
        loop=LoopDetection(
            max_repeats=rng.choice([1, 2, 3]),
            memory=rng.choice([4, 100]),
            max_empty_results=rng.choice([None, 2, 3]),
            similarity=rng.choice([None, 0.5, 0.8]),
            poll_max_repeats=rng.choice([3, 5]),
            window=rng.choice([5, 48]),
        ),
    )
    reservation = rng.choice([None, 30.0, 600.0])
    redis_store = RedisStore(
        redis_url, clock="request", reservation_seconds=reservation, defer_seconds=defer, **PATIENT
    )
    memory = MemoryStore(reservation_seconds=reservation)
    runs = [Run(memory, scope, limits), Run(redis_store, scope, limits)]
    tools, args, outcomes = ["search", "fetch", "db", "job_status"], ["a", "b", "c", "d", "e"], ["x", "y", "[]"]
    questions = [frozenset(), frozenset(), frozenset({2, 4, 6}), frozenset({2, 4, 6, 8}), frozenset({3, 4, 6})]
    for step in range(300):
        op = rng.random()
        tool, sig = rng.choice(tools), rng.choice(args)
        call_id = rng.choice([None, None, f"id{rng.randrange(40)}"])
        words = rng.choice(questions)
        if op < 0.45:
            shape = rng.choice(["", tool + "p#"])
            got = [run.tool(tool, tool + sig, call_id=call_id, words=words, shape=shape) for run in runs]
        elif op < 0.75:
            outcome, failed = rng.choice(outcomes), rng.random() < 0.3
            flags = (EMPTY if outcome == "[]" else 0) | (WAITING if rng.random() < 0.2 else 0)
            flags |= rng.choice([0, 0, 1, 2, 4, SIMILAR, SIMILAR])
            extra: dict[str, Any] = {"flags": flags, "words": words, "shape": tool + rng.choice(["p#", "q#"])}
            got = [run.done(tool, tool + sig, outcome, failed=failed, call_id=call_id, **extra) for run in runs]
        elif op < 0.87:
            tokens, micros = rng.randrange(0, 300), rng.randrange(0, 3_000)
            got = [run.model(tokens, micros, call_id=call_id) for run in runs]
        elif op < 0.98:
            tokens, micros = rng.randrange(0, 300), rng.randrange(0, 3_000)
            got = [run.used(tokens, micros, call_id=call_id) for run in runs]
        else:
            got = [run.store.reset(run.key) for run in runs]
        assert got[1] == got[0], f"seed {seed} step {step}"
        if defer is None or step % 7 == 0:  # a snapshot sends deferred outcomes: let some ride with a step
            assert runs[1].snap() == runs[0].snap(), f"seed {seed} step {step}"
        step_seconds = rng.choice([0.0, 0.5, 1.0, 3.0])
        for run in runs:
            run.later(step_seconds)
    redis_store.close()


@pytest.mark.redis
@pytest.mark.parametrize("seed", range(100, 110))
def test_random_sequences_give_identical_verdicts_with_deferred_outcomes(redis_url: str, scope: str, seed: int) -> None:
    """defer_seconds: a tool outcome rides with the run's next step; within one process every verdict (turns,
    transitions, duplicates, loop findings, failure streaks, ceilings) is what the memory store gives."""
    random_sequences(redis_url, scope, seed, 60.0)


@pytest.mark.redis
@pytest.mark.parametrize("server", ["valkey", "cluster"])
@pytest.mark.parametrize("seed", range(4))
def test_random_sequences_give_identical_verdicts_on_valkey_and_a_cluster(
    request: pytest.FixtureRequest, scope: str, seed: int, server: str
) -> None:
    if server == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        try:
            test_random_sequences_give_identical_verdicts(cluster.url, scope, seed)
        finally:
            delete_cluster_scope(cluster, scope)
        return
    url = request.getfixturevalue("valkey").url
    try:
        test_random_sequences_give_identical_verdicts(url, scope, seed)
    finally:
        delete_scope(url, scope)


@pytest.mark.redis
@pytest.mark.parametrize(("memory", "defer"), [(8, None), (4_096, None), (4_096, 60.0)])
@pytest.mark.parametrize("seed", range(6))
def test_reused_call_ids_give_identical_verdicts(
    redis_url: str, scope: str, seed: int, memory: int, defer: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few call ids reused across many model turns (servers that number calls per answer), with refusals,
    resets, probes and a call-id memory small enough to forget: Redis (and deferred outcomes) as the memory store."""
    import loopguard_core.stores._run_state as run_state
    import loopguard_core.stores.redis as redis_module

    if memory != run_state._IDEMPOTENCY_MEMORY:
        original, line = redis_module._lua, "local SEEN_MAX, RES_MAX = "
        monkeypatch.setattr(run_state, "_IDEMPOTENCY_MEMORY", memory)
        monkeypatch.setattr(redis_module, "_lua", lambda name: original(name).replace(line + "4096", f"{line}{memory}"))
    rng = random.Random(seed)
    limits = Limits(
        max_consecutive_failures=rng.choice([None, 2]),
        recovery_seconds=5.0,
        max_tool_calls=rng.choice([None, 200]),
        loop=LoopDetection(max_repeats=rng.choice([2, 3]), window=rng.choice([5, 20])),
    )
    redis_store = redis_module.RedisStore(redis_url, clock="request", defer_seconds=defer, **PATIENT)
    runs = [Run(MemoryStore(), scope, limits), Run(redis_store, scope, limits)]
    ids = ["list_dir:0", "read:0", "call_0", None]
    for step in range(400):
        op, call_id = rng.random(), rng.choice(ids)
        tool = rng.choice(["ls", "read"])
        sig = tool + rng.choice("ab")
        if op < 0.35:
            got = [run.tool(tool, sig, call_id=call_id) for run in runs]
        elif op < 0.65:
            outcome, failed = rng.choice(["x", "y"]), rng.random() < 0.3
            got = [run.done(tool, sig, outcome, failed=failed, call_id=call_id) for run in runs]
        elif op < 0.85:
            model_id = rng.choice([None, f"m{rng.randrange(1000)}"])
            got = [run.model(call_id=model_id) for run in runs]
        elif op < 0.9:
            got = [run.store.reset(run.key) for run in runs]
        else:
            got, seconds = [], rng.choice([1.0, 6.0])
            for run in runs:
                run.later(seconds)
        if got:
            assert got[1] == got[0], f"seed {seed} step {step}"
            if defer is None or step % 7 == 0:
                assert runs[1].snap() == runs[0].snap(), f"seed {seed} step {step}"
    redis_store.close()


# -- steer: the run goes on after a refused call --------------------------------------------------------
def test_steer_closes_a_health_trip_keeps_the_window_and_stops_for_good_past_the_limit(
    store: Store, scope: str
) -> None:
    run = Run(store, scope, Limits(max_refusals=2))
    for _ in range(3):
        run.call("s", "a")
    assert run.tool("s", "a").reason == "loop"
    steered = store.steer(run.key, run.limits, run.now)  # type: ignore[attr-defined]
    assert (steered.admitted, moves(steered)) == (True, [(OPEN, CLOSED)])
    assert run.tool("s", "a").reason == "loop"  # the window was kept: the same call is refused again
    assert store.steer(run.key, run.limits, run.now).admitted  # type: ignore[attr-defined]
    assert run.snap().refusals == 2
    stop = store.steer(run.key, run.limits, run.now)  # type: ignore[attr-defined]
    assert (stop.admitted, stop.reason, stop.terminal, stop.facts) == (
        False,
        "refusals",
        True,
        {"observed": 3, "limit": 2},
    )
    refused = run.tool("s", "other")
    assert (refused.reason, refused.terminal, refused.facts["tripped_by"]) == ("open", True, "refusals")
    store.reset(run.key)
    assert run.snap().refusals == 0
