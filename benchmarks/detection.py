"""Detection quality: does a guard refuse the runaway in time, and leave legitimate work alone?

``python -m benchmarks.detection`` runs the public corpus through ``loopguard_core.Breaker()`` defaults
and prints, per scenario, where the run was refused and how many tool calls were wasted before that
(the definition is in :mod:`benchmarks._corpus`). Options: ``--corpus PATH`` (or ``$LOOPGUARD_SCENARIOS``)
for another corpus, ``--json PATH`` for machine-readable results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ._corpus import Case, CorpusError, default_public_corpus, load_cases
from .detectors import Detector, Outcome, loopguard_default

__all__ = ["Score", "Summary", "main", "score", "summarize"]


@dataclass(frozen=True)
class Score:
    """One detector on one scenario."""

    detector: str
    scenario: str
    source: str
    family: str
    kind: str
    calls: int
    trip_by: int | None
    refused_at: int | None
    executed: int
    useful: int
    wasted: int  # runaway: calls executed beyond the useful prefix (see _corpus); legit: 0
    lost: int  # legit: calls the agent could not make because it was stopped; runaway: 0
    caught_in_time: bool  # runaway refused at or before trip_by
    caught: bool  # runaway refused at all within the trace
    false_stop: bool  # legit run refused
    reason: str


def score(detector: Detector, case: Case, outcome: Outcome) -> Score:
    scenario = case.scenario
    refused = outcome.refused_at is not None
    if case.runaway:
        wasted = max(0, outcome.executed - case.useful)
        in_time = refused and scenario.trip_by is not None and outcome.refused_at <= scenario.trip_by  # type: ignore[operator]
        lost = 0
    else:
        wasted, in_time, lost = 0, False, len(scenario.calls) - outcome.executed
    return Score(
        detector=detector.key,
        scenario=scenario.name,
        source=case.source,
        family=case.family,
        kind=scenario.kind,
        calls=len(scenario.calls),
        trip_by=scenario.trip_by,
        refused_at=outcome.refused_at,
        executed=outcome.executed,
        useful=case.useful,
        wasted=wasted,
        lost=lost,
        caught_in_time=bool(in_time),
        caught=case.runaway and refused,
        false_stop=(not case.runaway) and refused,
        reason=outcome.reason,
    )


@dataclass(frozen=True)
class Summary:
    detector: str
    runaways: int
    caught_in_time: int
    caught: int
    legit: int
    false_stops: int
    wasted: int  # tool calls wasted over all runaways
    lost: int  # legitimate calls prevented over all false stops


def summarize(detector: str, scores: Sequence[Score]) -> Summary:
    mine = [s for s in scores if s.detector == detector]
    run = [s for s in mine if s.kind == "runaway"]
    legit = [s for s in mine if s.kind == "legit"]
    return Summary(
        detector=detector,
        runaways=len(run),
        caught_in_time=sum(s.caught_in_time for s in run),
        caught=sum(s.caught for s in run),
        legit=len(legit),
        false_stops=sum(s.false_stop for s in legit),
        wasted=sum(s.wasted for s in run),
        lost=sum(s.lost for s in legit),
    )


def evaluate(detectors: Sequence[Detector], cases: Sequence[Case]) -> list[Score]:
    scores = []
    for detector in detectors:
        if detector.unavailable:
            continue
        for case in cases:
            scores.append(score(detector, case, detector.run(case)))
    return scores


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render_scores(scores: Sequence[Score]) -> str:
    header = ("scenario", "kind", "calls", "trip_by", "refused at", "reason", "executed", "useful", "wasted", "verdict")
    rows = []
    for s in scores:
        if s.kind == "runaway":
            verdict = "caught in time" if s.caught_in_time else ("caught LATE" if s.caught else "MISSED")
        else:
            verdict = "FALSE STOP" if s.false_stop else "ran to the end"
        rows.append(
            (
                s.scenario,
                s.kind,
                str(s.calls),
                _cell(s.trip_by),
                _cell(s.refused_at),
                s.reason or "-",
                str(s.executed),
                str(s.useful) if s.kind == "runaway" else "-",
                str(s.wasted) if s.kind == "runaway" else "-",
                verdict,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def render_summary(summary: Summary) -> str:
    return "\n".join(
        (
            f"runaway refused by deadline: {summary.caught_in_time}/{summary.runaways}"
            f"  (refused at all: {summary.caught}/{summary.runaways})",
            f"legit refused:               {summary.false_stops}/{summary.legit}",
            f"wasted tool calls (total):   {summary.wasted}",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="scenario corpus (default: $LOOPGUARD_SCENARIOS or the public corpus)")
    parser.add_argument("--json", dest="json_path", help="also write the per-scenario scores to this JSON file")
    args = parser.parse_args(argv)
    try:
        path = default_public_corpus(args.corpus)
        cases = load_cases(path, source="public")
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    detector = loopguard_default()
    scores = evaluate([detector], cases)
    summary = summarize(detector.key, scores)
    print(f"corpus: {path}")
    print(f"detector: {detector.label} ({detector.config})\n")
    print(render_scores(scores))
    print()
    print(render_summary(summary))
    print(
        "\nwasted = tool calls executed in a runaway beyond its useful prefix (the calls before the first one"
        "\nwhose tool repeats an answer it already gave); see docs/benchmarks.md"
    )
    if args.json_path:
        payload = {"corpus": str(path), "summary": asdict(summary), "scores": [asdict(s) for s in scores]}
        Path(args.json_path).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
