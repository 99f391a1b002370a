"""What guard_node and guarded_tool_node hand each other per call (``loopguard_langgraph._handoff``)."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from loopguard_core import Breaker
from loopguard_langgraph._handoff import Admitted, Handoff


def _call(args: object, *, checked: bool = True, agent: str | None = None) -> Admitted:
    return Admitted("search", args, agent, checked)


def _taken(calls: Handoff, *ids: str, run: str = "r") -> list[str]:
    return [call_id for call_id, _ in calls.take(run, list(ids))]


def test_a_call_admitted_as_it_is_is_claimed_once_and_only_as_it_was_admitted_in_its_own_run() -> None:
    calls = Handoff()
    calls.admit("run-1", "c1", _call({"q": "a"}))
    assert not calls.claim("run-1", "c1", "search", {"q": "edited"})  # other arguments: not the call admitted
    assert not calls.claim("run-1", "c1", "search", {"q": "a"})  # a failed claim leaves it to be checked as always
    assert _taken(calls, "c1", run="run-1") == ["c1"]  # ... and reported by whoever reports it
    calls.admit("run-1", "c2", _call({"q": "a"}))
    assert not calls.claim("run-2", "c2", "search", {"q": "a"})  # the same id in another run is another call
    assert not calls.claim("run-1", "c2", "fetch", {"q": "a"})  # another tool under the same id
    calls.admit("run-1", "c3", _call({"q": "a"}))
    assert calls.claim("run-1", "c3", "search", {"q": "a"})
    assert not calls.claim("run-1", "c3", "search", {"q": "a"})  # once
    assert _taken(calls, "c3", run="run-1") == []  # the claimer reports it: the guard does not


def test_a_call_admitted_in_an_earlier_run_is_still_answered_in_a_later_one() -> None:
    """A graph resumed after an interrupt out of a tool body runs as a new invocation: the answer it gives the call
    admitted before reports that call there (it is not claimed there: the tool node checks it again)."""
    calls = Handoff()
    calls.admit("run-1", "c1", _call({"q": "a"}, agent="writer"))
    assert not calls.claim("run-2", "c1", "search", {"q": "a"})
    assert calls.take("run-2", ["c1"]) == [("c1", Admitted("search", {"q": "a"}, "writer", True))]
    calls.admit("run-1", "c2", _call({"q": "a"}, checked=False))
    calls.reported("run-2", "c2")  # the tool node of the resumed run reported it there: the guard does not again
    assert _taken(calls, "c2", run="run-2") == [] and not calls


def test_a_call_a_tool_node_reported_in_another_run_is_reported_by_the_guard_in_its_own() -> None:
    """guard_node(on_trip="interrupt") counts in the thread's run, a tool node in the invocation's: each run gets
    the call's outcome."""
    calls = Handoff()
    calls.admit("langgraph-thread-t1", "c1", _call({"q": "a"}))
    assert not calls.claim("invocation-run", "c1", "search", {"q": "a"})
    calls.reported("invocation-run", "c1")
    assert _taken(calls, "c1", run="langgraph-thread-t1") == ["c1"]
    calls.admit("r1", "c2", _call({"q": "a"}, checked=False))
    calls.reported("r1", "c2")
    calls.reported("r2", "c2")  # reported in two runs: neither gets it again from the guard
    assert _taken(calls, "c2", run="r1") == []


def test_a_call_admitted_with_a_persons_approval_is_never_claimed_and_leaves_once_reported() -> None:
    calls = Handoff()
    calls.admit("r", "c1", _call({"q": "a"}, checked=False))
    assert not calls.claim("r", "c1", "search", {"q": "a"})  # the tool node checks it itself
    calls.reported("r", "c1")
    assert _taken(calls, "c1") == [] and not calls
    calls.admit("r", "c2", _call({"q": "a"}, checked=False, agent="writer"))  # a plain ToolNode: the guard reports
    assert calls.take("r", ["c0", "c2"]) == [("c2", Admitted("search", {"q": "a"}, "writer", False))]


def test_calls_without_an_id_are_never_claimed_but_an_answer_to_no_id_reports_them() -> None:
    calls = Handoff()
    calls.admit("r", None, _call("x"))
    assert not calls.claim("r", None, "search", "x") and not calls.claim("r", "", "search", "x")
    calls.reported("r", None)
    assert _taken(calls, "") == [""]


def test_a_call_admitted_again_while_one_is_claimed_is_not_claimed_for_it() -> None:
    """The arguments are compared outside the lock: a newer admission under the id meanwhile is left as it is."""
    calls = Handoff()

    class Slow:
        def __eq__(self, other: object) -> bool:
            calls.admit("r", "c1", _call({"q": "newer"}))  # another thread admits the id again meanwhile
            return True

        __hash__ = object.__hash__

    calls.admit("r", "c1", _call(Slow()))
    assert not calls.claim("r", "c1", "search", Slow())
    assert calls.take("r", ["c1"]) == [("c1", _call({"q": "newer"}))]


def test_the_memory_is_bounded_oldest_first_and_shared_per_breaker() -> None:
    calls = Handoff(capacity=3)
    for n in range(5):
        calls.admit("r", f"c{n}", _call(n))
    assert _taken(calls, *(f"c{n}" for n in range(5))) == ["c2", "c3", "c4"]
    breaker = Breaker()
    assert Handoff.of(breaker) is Handoff.of(breaker)
    assert Handoff.of(breaker) is not Handoff.of(Breaker())


def test_arguments_whose_comparison_raises_are_not_claimed_and_stay_to_be_reported() -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    calls = Handoff()
    calls.admit("r", "c1", _call(Hostile()))
    assert not calls.claim("r", "c1", "search", Hostile())
    assert _taken(calls, "c1") == ["c1"]


def test_the_run_a_call_was_admitted_in_as_it_is_and_the_threads_run() -> None:
    from loopguard_langgraph._handoff import thread_run

    calls = Handoff()
    calls.admit("langgraph-thread-t1", "c1", _call({"q": "a"}))
    calls.admit("run-1", "c2", _call({"q": "a"}, checked=False))  # approved or edited: the tool node checks it
    assert calls.run_of("c1") == "langgraph-thread-t1"
    assert calls.run_of("c2") is None and calls.run_of("c3") is None and calls.run_of(None) is None
    assert thread_run({"configurable": {"thread_id": "t1"}}) == ("thread:t1", "langgraph-thread-t1")
    assert thread_run({"configurable": {}}) is None and thread_run(None) is None
