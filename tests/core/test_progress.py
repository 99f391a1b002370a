"""Stall detection by a progress probe: artifacts decide, never the agent's own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.progress import Progress, files_digest
from loopguard_core.testing import FakeClock


class Artifact:
    def __init__(self) -> None:
        self.rows = 0

    def __call__(self) -> int:
        return self.rows


def model_turn(breaker: Breaker, text: str = "I'm making great progress!") -> None:
    breaker.before_model(model="m", estimated_input_tokens=10, max_output_tokens=10)
    breaker.after_model(input_tokens=10, output_tokens=10, model="m")


def test_turns_without_a_changed_artifact_stall_the_run_whatever_the_agent_says() -> None:
    rows = Artifact()
    breaker = Breaker(progress=Progress(rows, max_stall_turns=3), allow_unpriced=True)
    with breaker.run():
        model_turn(breaker)  # baseline
        rows.rows += 1
        model_turn(breaker)  # progress: the count starts again
        for _ in range(2):  # these turns, and the one before them, change nothing
            model_turn(breaker, "Almost done, making progress")
        with pytest.raises(LoopGuardTripped) as stalled:
            model_turn(breaker)
    trip = stalled.value
    assert (trip.reason, trip.facts["rule"], trip.facts["turns"]) == ("stall", "no_progress", 3)
    assert "max_stall_turns=3" in str(trip) and "Artifact" in str(trip)
    assert "changed nothing" in trip.for_model()


def test_seconds_without_a_change_stall_the_run_at_the_next_tool_call() -> None:
    rows, clock = Artifact(), FakeClock()
    breaker = Breaker(progress=Progress(rows, max_stall_seconds=60), clock=clock, allow_unpriced=True)
    model_turn(breaker)
    clock.advance(30)
    breaker.before_tool("search", {"q": "a"})
    breaker.after_tool("search", {"q": "a"}, result="x")
    clock.advance(31)
    with pytest.raises(LoopGuardTripped, match="max_stall_seconds=60"):
        breaker.before_tool("search", {"q": "b"})
    rows.rows += 1  # something changed: the run goes on
    breaker.before_tool("search", {"q": "b"})


def test_a_failing_probe_is_never_progress(caplog: pytest.LogCaptureFixture) -> None:
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk gone")
        return 1

    breaker = Breaker(progress=Progress(flaky, max_stall_turns=2), allow_unpriced=True)
    model_turn(breaker)
    model_turn(breaker)
    with pytest.raises(LoopGuardTripped, match=r"no_progress|nothing the run"):
        model_turn(breaker)
    assert "progress probe" in caplog.text


def test_files_digest_sees_new_and_rewritten_files(tmp_path: Path) -> None:
    probe = files_digest(tmp_path)
    empty = probe()
    (tmp_path / "out.csv").write_text("a\n")
    first = probe()
    assert first != empty
    (tmp_path / "out.csv").write_text("a\nb\n")
    assert probe() != first
    assert files_digest(tmp_path / "missing")() == files_digest(tmp_path / "missing2")()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "max_stall_turns, max_stall_seconds"),
        ({"max_stall_turns": 0}, "max_stall_turns"),
        ({"max_stall_seconds": -1}, "max_stall_seconds"),
        ({"max_stall_seconds": float("inf")}, "max_stall_seconds"),
    ],
)
def test_bad_settings_say_what_to_fix(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Progress(lambda: 1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="probe"):
        Progress("not callable", max_stall_turns=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress must be"):
        Breaker(progress=lambda: 1)  # type: ignore[arg-type]
