"""A trip is loud: logged, handed to callbacks (a failing callback never hides it), and raised."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped


def trip(breaker: Breaker) -> LoopGuardTripped:
    breaker.before_model()
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model(agent="planner")
    return info.value


def test_trip_is_logged_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="loopguard"):
        trip(Breaker(max_turns=1))
    assert any(r.levelno == logging.WARNING and "turn_ceiling" in r.getMessage() for r in caplog.records)
    assert caplog.records[-1].loopguard_reason == "turn_ceiling"  # type: ignore[attr-defined]


def test_callbacks_get_the_trip_and_a_failing_one_does_not_hide_it(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[LoopGuardTripped] = []

    def broken(_: LoopGuardTripped) -> None:
        raise ValueError("callback bug")

    breaker = Breaker(max_turns=1, on_trip=[broken, seen.append])
    error = trip(breaker)
    assert seen == [error]
    assert "callback bug" in caplog.text


def test_callbacks_run_without_the_store_lock_held() -> None:
    # A callback that uses the breaker would deadlock if the lock were held while user code runs.
    observed: list[Any] = []
    holder: list[Breaker] = []
    breaker = Breaker(max_turns=1, on_trip=lambda e: observed.append(holder[0].usage().turns))
    holder.append(breaker)
    trip(breaker)
    assert observed == [1]


def test_trip_carries_facts_and_survives_pickling() -> None:
    error = trip(Breaker(max_turns=1, session_id="sess-1"))
    assert error.session_id == "sess-1"
    assert error.agent == "planner"
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, LoopGuardTripped)
    assert clone.reason == "turn_ceiling"
    assert clone.facts["limit"] == 1
    assert str(clone) == str(error)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.fail = fail

    def record(self, **row: Any) -> int:
        if self.fail:
            raise OSError("database is locked")
        self.rows.append(row)
        return len(self.rows)


def test_rows_for_turns_tools_and_trips_never_hold_raw_inputs() -> None:
    ledger = Recorder()
    breaker = Breaker(max_turns=1, ledger=ledger, session_id="s1")
    breaker.before_model(agent="a")
    breaker.after_model(input_tokens=10, output_tokens=5, agent="a", input=[{"role": "user", "content": "secret"}])
    breaker.before_tool("search", {"q": "secret query"}, agent="a")
    breaker.after_tool("search", {"q": "secret query"}, result="r", agent="a")
    with pytest.raises(LoopGuardTripped):
        breaker.before_model(agent="a")
    assert [r["origin"] for r in ledger.rows] == ["model", "tool", "breaker"]
    assert ledger.rows[0]["input_tokens"] == 10 and ledger.rows[0]["agent"] == "a"
    assert ledger.rows[1]["tool"] == "search" and ledger.rows[1]["passed"] is True
    assert ledger.rows[2]["breach_reason"] == "turn_ceiling" and ledger.rows[2]["passed"] is False
    assert all(r["session_id"] == "s1" for r in ledger.rows)
    # The breaker hands the ledger text to hash; the ledger (not this recorder) must never store it.
    assert "secret query" in ledger.rows[1]["input_text"]


def test_a_failing_ledger_never_hides_a_trip() -> None:
    breaker = Breaker(max_turns=1, ledger=Recorder(fail=True), ledger_failure="log")
    breaker.before_model()
    with pytest.raises(LoopGuardTripped) as info:
        breaker.before_model()
    assert any("could not write" in note for note in getattr(info.value, "__notes__", []))


def test_ledger_failure_raise_is_the_default_for_ordinary_rows() -> None:
    breaker = Breaker(ledger=Recorder(fail=True))
    breaker.before_tool("t", {})
    with pytest.raises(OSError, match="locked"):
        breaker.after_tool("t", {}, result=1)


def test_ledger_failure_log_keeps_a_tool_call_going_and_says_which_row(caplog: pytest.LogCaptureFixture) -> None:
    breaker = Breaker(ledger=Recorder(fail=True), ledger_failure="log")
    breaker.before_tool("t", {"q": 1})
    with caplog.at_level(logging.ERROR, logger="loopguard"):
        breaker.after_tool("t", {"q": 1}, result=1)  # does not raise
    assert [r.getMessage() for r in caplog.records] == ["loopguard could not write a tool row to the ledger"]
    assert caplog.records[0].exc_info is not None and "locked" in str(caplog.records[0].exc_info[1])
