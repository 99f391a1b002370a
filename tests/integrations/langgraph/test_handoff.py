"""What guard_node and guarded_tool_node hand each other per call id (``loopguard_langgraph._handoff``)."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from loopguard_core import Breaker
from loopguard_langgraph._handoff import CallIds


def test_a_call_is_taken_once_and_only_as_it_was_added_in_its_own_run() -> None:
    ids = CallIds()
    ids.add("run-1", "c1", ("search", {"q": "a"}))
    assert not ids.take("run-1", "c1", ("search", {"q": "edited"}))  # other arguments: not the call admitted
    assert not ids.take("run-1", "c1", ("search", {"q": "a"}))  # a failed take forgets it: checked as always
    ids.add("run-1", "c2", ("search", {"q": "a"}))
    assert not ids.take("run-2", "c2", ("search", {"q": "a"}))  # the same id in another run is another call
    assert ids.take("run-1", "c2", ("search", {"q": "a"}))
    assert not ids.take("run-1", "c2", ("search", {"q": "a"}))  # once
    ids.add("run-1", None, "x")
    ids.add("run-1", "", "x")
    assert not ids.take("run-1", None, "x") and not ids.take("run-1", "", "x")  # without an id: never skipped


def test_the_memory_is_bounded_oldest_first_and_shared_per_breaker_and_kind() -> None:
    ids = CallIds(capacity=3)
    for n in range(5):
        ids.add("r", f"c{n}")
    assert [ids.take("r", f"c{n}") for n in range(5)] == [False, False, True, True, True]
    breaker = Breaker()
    assert CallIds.of(breaker, "checked") is CallIds.of(breaker, "checked")
    assert CallIds.of(breaker, "checked") is not CallIds.of(breaker, "reported")
    assert CallIds.of(breaker, "checked") is not CallIds.of(Breaker(), "checked")


def test_arguments_whose_comparison_raises_are_not_taken() -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

    ids = CallIds()
    ids.add("r", "c1", ("search", Hostile()))
    assert not ids.take("r", "c1", ("search", Hostile()))
