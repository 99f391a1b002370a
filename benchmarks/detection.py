"""Detection quality: does a guard refuse the runaway in time, and leave legitimate work alone?

``python -m benchmarks.detection`` runs the public corpus through ``loopguard_core.Breaker()`` defaults
and prints, per scenario, where the run was refused and how many tool calls were wasted before that
(definitions in :mod:`benchmarks._corpus` and ``docs/benchmarks.md``).

Options: ``--corpus PATH`` (or ``$LOOPGUARD_SCENARIOS``) for another public corpus; ``--own`` to add the
project's larger corpus (``benchmarks/corpus/*.json``); ``--detectors all`` (or a comma list of keys) to
compare the peers; ``--json PATH`` for machine-readable results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ._corpus import Case, CorpusError, default_public_corpus, load_cases, own_corpus_files
from ._cost import MODEL, TOKENS_IN, TOKENS_OUT, usd_per_turn
from .detectors import Detector, Outcome, all_detectors, loopguard_default

__all__ = ["Score", "Summary", "evaluate", "load_all", "main", "score", "summarize"]


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
    refused_at: int | None  # first call refused (its tool body never ran)
    stopped_at: int | None  # call at which the run ended (None: ran to the end of the trace)
    executed: int
    turns: int
    useful: int
    wasted: int  # runaway: tool bodies run beyond the useful prefix; legit: 0
    wasted_turns: int  # runaway: model turns spent beyond the useful prefix; legit: 0
    lost: int  # legit: calls refused or never reached because of the detector; runaway: 0
    caught_in_time: bool  # runaway: first refusal at or before trip_by
    stopped: bool  # runaway: the run was ended within the trace (not only a call refused)
    false_stop: bool  # legit: any call refused
    reason: str


def score(detector: Detector, case: Case, outcome: Outcome) -> Score:
    scenario = case.scenario
    refused = outcome.refused_at is not None
    if case.runaway:
        deadline = scenario.trip_by or 0
        in_time = refused and outcome.refused_at is not None and outcome.refused_at <= deadline
        wasted = max(0, outcome.executed - case.useful)
        wasted_turns = max(0, outcome.turns - case.useful)
        lost = 0
    else:
        in_time, wasted, wasted_turns = False, 0, 0
        lost = len(scenario.calls) - outcome.executed
    return Score(
        detector=detector.key,
        scenario=scenario.name,
        source=case.source,
        family=case.family,
        kind=scenario.kind,
        calls=len(scenario.calls),
        trip_by=scenario.trip_by,
        refused_at=outcome.refused_at,
        stopped_at=outcome.stopped_at,
        executed=outcome.executed,
        turns=outcome.turns,
        useful=case.useful,
        wasted=wasted,
        wasted_turns=wasted_turns,
        lost=lost,
        caught_in_time=bool(in_time),
        stopped=case.runaway and outcome.stopped_at is not None,
        false_stop=(not case.runaway) and refused,
        reason=outcome.reason if refused else "",
    )


@dataclass(frozen=True)
class Summary:
    detector: str
    label: str
    config: str
    runaways: int
    caught_in_time: int
    stopped: int
    legit: int
    false_stops: int
    wasted: int  # tool calls wasted over all runaways
    wasted_turns: int
    wasted_tokens: int
    wasted_usd: float | None
    lost: int  # legitimate calls prevented over all false stops


def summarize(detector: Detector, scores: Sequence[Score]) -> Summary:
    mine = [s for s in scores if s.detector == detector.key]
    run = [s for s in mine if s.kind == "runaway"]
    legit = [s for s in mine if s.kind == "legit"]
    turns = sum(s.wasted_turns for s in run)
    per_turn = usd_per_turn()
    return Summary(
        detector=detector.key,
        label=detector.label,
        config=detector.config,
        runaways=len(run),
        caught_in_time=sum(s.caught_in_time for s in run),
        stopped=sum(s.stopped for s in run),
        legit=len(legit),
        false_stops=sum(s.false_stop for s in legit),
        wasted=sum(s.wasted for s in run),
        wasted_turns=turns,
        wasted_tokens=turns * (TOKENS_IN + TOKENS_OUT),
        wasted_usd=None if per_turn is None else round(turns * per_turn, 4),
        lost=sum(s.lost for s in legit),
    )


def evaluate(detectors: Sequence[Detector], cases: Sequence[Case]) -> list[Score]:
    return [score(d, case, d.run(case)) for d in detectors if not d.unavailable for case in cases]


def load_all(corpus: str | None = None, *, own: bool = True) -> tuple[Path, list[Case]]:
    path = default_public_corpus(corpus)
    cases = load_cases(path, source="public")
    if own:
        for extra in own_corpus_files():
            cases += load_cases(extra, source=extra.stem)
    return path, cases


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def verdict(s: Score) -> str:
    if s.kind == "runaway":
        if s.caught_in_time:
            ended = s.stopped_at is not None and s.trip_by is not None and s.stopped_at <= s.trip_by
            return "caught in time" if ended else "refused in time, run went on"
        if s.refused_at is not None:
            return "caught LATE" if s.stopped else "refused LATE, run went on"
        return "MISSED"
    return "FALSE STOP" if s.false_stop else "ran to the end"


def render_scores(scores: Sequence[Score]) -> str:
    header = ("scenario", "kind", "calls", "trip_by", "refused at", "reason", "executed", "useful", "wasted", "verdict")
    rows = [
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
            verdict(s),
        )
        for s in scores
    ]
    return _table(header, rows)


def render_summary(summary: Summary) -> str:
    usd = "n/a (genai-prices not installed)" if summary.wasted_usd is None else f"{summary.wasted_usd:.4f} USD"
    return "\n".join(
        (
            f"runaway refused by deadline: {summary.caught_in_time}/{summary.runaways}"
            f"  (run ended within the trace: {summary.stopped}/{summary.runaways})",
            f"legit refused:               {summary.false_stops}/{summary.legit}",
            f"wasted tool calls (total):   {summary.wasted}",
            f"wasted model turns (total):  {summary.wasted_turns} = {summary.wasted_tokens:,} tokens = {usd}",
        )
    )


def render_comparison(summaries: Sequence[Summary]) -> str:
    header = ("detector", "runaway caught by deadline", "runs ended", "legit falsely stopped", "wasted calls", "USD")
    rows = [
        (
            s.label,
            f"{s.caught_in_time}/{s.runaways}",
            f"{s.stopped}/{s.runaways}",
            f"{s.false_stops}/{s.legit}",
            str(s.wasted),
            "n/a" if s.wasted_usd is None else f"{s.wasted_usd:.2f}",
        )
        for s in summaries
    ]
    return _table(header, rows)


def _select(spec: str) -> list[Detector]:
    if spec == "loopguard":
        return [loopguard_default()]
    detectors = all_detectors()
    if spec == "all":
        return detectors
    wanted = [k.strip() for k in spec.split(",") if k.strip()]
    known = {d.key: d for d in detectors}
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise CorpusError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(known)} or 'all'")
    return [known[k] for k in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        help="synthetic scenario corpus (default: $LOOPGUARD_SCENARIOS or tests/data/tool_call_scenarios.json)",
    )
    parser.add_argument("--own", action="store_true", help="add the project's corpus in benchmarks/corpus/")
    parser.add_argument("--detectors", default="loopguard", help="'loopguard' (default), 'all', or keys a,b,c")
    parser.add_argument("--json", dest="json_path", help="also write the scores to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print only the summaries")
    args = parser.parse_args(argv)
    try:
        path, cases = load_all(args.corpus, own=args.own)
        detectors = _select(args.detectors)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"corpus: {path}" + (f" + {len(own_corpus_files())} file(s) in benchmarks/corpus" if args.own else ""))
    scores = evaluate(detectors, cases)
    summaries = []
    for detector in detectors:
        if detector.unavailable:
            print(f"\n== {detector.label}: not installed here ({detector.unavailable})")
            continue
        summary = summarize(detector, scores)
        summaries.append(summary)
        print(f"\n== {detector.label} ({detector.config})")
        if not args.quiet:
            print(render_scores([s for s in scores if s.detector == detector.key]))
            print()
        print(render_summary(summary))
    if len(summaries) > 1:
        print("\n" + render_comparison(summaries))
    print(
        "\nwasted = tool calls executed in a runaway beyond its useful prefix (the calls before the first one whose"
        f"\ntool repeats an answer it already gave); a turn = {TOKENS_IN:,} + {TOKENS_OUT} tokens of {MODEL}."
        " See docs/benchmarks.md."
    )
    if args.json_path:
        payload = {
            "corpus": str(path),
            "summaries": [asdict(s) for s in summaries],
            "scores": [asdict(s) for s in scores],
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
