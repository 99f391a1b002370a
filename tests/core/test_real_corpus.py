"""Real agent trajectories (benchmarks/corpus/real/real_public.json, labelled before any detector ran):
under Breaker() defaults, at least 85% of runaways are refused by their deadline and at most 1% of the
legitimate runs are refused at all. This guards the numbers docs/benchmarks.md reports."""

from __future__ import annotations

from pathlib import Path

from loopguard_core import Breaker
from loopguard_core.replay import load_traces, replay, summarize

CORPUS = Path(__file__).resolve().parents[2] / "benchmarks" / "corpus" / "real" / "real_public.json"


def test_real_runaways_are_caught_by_their_deadline_and_legit_runs_are_left_alone() -> None:
    results = [replay(trace, Breaker) for trace in load_traces(CORPUS, "corpus")]
    summary = summarize(results)
    assert (summary.runaway, summary.legit) == (60, 147)
    assert summary.caught >= 51, [r.trace.name for r in results if r.verdict != "caught" and r.trace.label == "runaway"]
    assert summary.false_refusals <= 1, [r.trace.name for r in results if r.verdict == "false refusal"]
    assert summary.early == 0


def test_every_refusal_on_real_traces_names_its_rule_and_earlier_calls() -> None:
    traces = [t for t in load_traces(CORPUS, "corpus") if t.label == "runaway"][:20]
    for result in (replay(trace, Breaker) for trace in traces):
        assert result.first is not None
        assert result.first.rule in {"repeat", "cycle", "interleaved"}
        assert "call #" in result.first.message and "To continue" in result.first.message
