"""Detection on real agent trajectories: loopguard and the peers' loop guards, in one run.

``python -m benchmarks.real_traces`` replays the labelled real-trace corpora in ``benchmarks/corpus/real/``
(the public corpus, and our extra set from other sources) through each detector on its defaults, exactly as
the corpus's ``score.py`` does: a fresh detector per trace, ``check`` before each call, outcome after it, the
first refusal ends the trace. Scored: runaways refused by their deadline (at or after ``loop_start``, at or
before ``deadline``), refused before their loop began, legitimate runs refused (all, and without the
``borderline`` tier), and the tool calls that ran in runaway traces.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loopguard_core import Breaker
from loopguard_core.replay import Trace, load_traces

__all__ = ["CORPORA", "detectors", "main", "run", "score"]

REAL = Path(__file__).resolve().parent / "corpus" / "real"
CORPORA = {
    "public": (REAL / "real_public.json", "public real corpus (207 traces, labelled before any detector ran)"),
    "extra": (REAL / "extra.json.gz", "extra real set from other sources (200 traces, labelled the same way)"),
}


class _Refused(Exception):
    pass


def _loopguard() -> Any:
    return Breaker()


class _AgentGuard:
    """agentguard47's guards as its users run them: ``check(tool, args)`` before each call."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.guard = factory()

    def before_tool(self, tool: str, args: Any, agent: str | None = None) -> None:
        try:
            self.guard.check(tool, args if isinstance(args, dict) else {"input": args})
        except Exception as exc:
            raise _Refused(type(exc).__name__) from exc

    def after_tool(self, *args: Any, **kwargs: Any) -> None:
        return None


def detectors() -> list[tuple[str, str, Callable[[], Any] | None, str | None]]:
    """(key, label, factory or None, why unavailable)."""
    found: list[tuple[str, str, Callable[[], Any] | None, str | None]] = [
        ("loopguard", "loopguard Breaker() defaults", _loopguard, None)
    ]
    if importlib.util.find_spec("agentguard") is None:
        why = "pip install agentguard47==2.0.0 (benchmarks/requirements.txt)"
        found += [("agentguard_loop", "agentguard47 LoopGuard()", None, why)]
        found += [("agentguard_fuzzy", "agentguard47 FuzzyLoopGuard()", None, why)]
        return found
    from agentguard import FuzzyLoopGuard, LoopGuard

    found.append(("agentguard_loop", "agentguard47 LoopGuard()", lambda: _AgentGuard(LoopGuard), None))
    found.append(("agentguard_fuzzy", "agentguard47 FuzzyLoopGuard()", lambda: _AgentGuard(FuzzyLoopGuard), None))
    return found


def _replay(trace: Trace, factory: Callable[[], Any]) -> int | None:
    """The index of the first refused call, or None (score.py's replay)."""
    detector = factory()
    for index, call in enumerate(trace.calls):
        args = call.args if isinstance(call.args, dict) else {"input": call.args}
        try:
            detector.before_tool(call.tool, args, agent=call.agent)
        except Exception:
            return index
        error = RuntimeError(str(call.error)) if call.error else None
        detector.after_tool(call.tool, args, result=call.result, error=error, agent=call.agent)
    return None


def score(traces: Sequence[Trace], factory: Callable[[], Any]) -> dict[str, Any]:
    refused = {t.name: _replay(t, factory) for t in traces}
    runaway = [t for t in traces if t.label == "runaway"]
    legit = [t for t in traces if t.label == "legit"]

    def start(t: Trace) -> int:
        return t.loop_start or 0

    def caught(t: Trace) -> bool:
        at = refused[t.name]
        return at is not None and start(t) <= at <= (t.deadline if t.deadline is not None else len(t.calls))

    def early(t: Trace) -> bool:
        at = refused[t.name]
        return at is not None and at < start(t)

    def ran(t: Trace) -> int:
        at = refused[t.name]
        return len(t.calls) if at is None else at

    patterns: dict[str, list[int]] = {}
    for t in runaway:
        pattern = str(t.meta.get("pattern", "?"))
        patterns.setdefault(pattern, [0, 0])
        patterns[pattern][0] += caught(t)
        patterns[pattern][1] += 1
    families: dict[str, list[int]] = {}
    for t in traces:
        family = t.name.split("/")[0]
        row = families.setdefault(family, [0, 0, 0, 0])
        if t.label == "runaway":
            row[0] += caught(t)
            row[1] += 1
        else:
            row[2] += refused[t.name] is not None
            row[3] += 1
    return {
        "runaways": len(runaway),
        "legit": len(legit),
        "legit_clear": sum(t.meta.get("tier") != "borderline" for t in legit),
        "caught_by_deadline": sum(map(caught, runaway)),
        "caught_at_all": sum(refused[t.name] is not None and not early(t) for t in runaway),
        "early": sum(map(early, runaway)),
        "false_refusals": sum(refused[t.name] is not None for t in legit),
        "false_refusals_clear": sum(refused[t.name] is not None and t.meta.get("tier") != "borderline" for t in legit),
        "calls_run_in_runaways": sum(map(ran, runaway)),
        "calls_in_runaways": sum(len(t.calls) for t in runaway),
        "calls_run_inside_loops": sum(max(0, ran(t) - start(t)) for t in runaway),
        "by_pattern": patterns,
        "by_family": families,
        "false_refusal_names": sorted(t.name for t in legit if refused[t.name] is not None),
        "missed_names": sorted(t.name for t in runaway if not caught(t)),
    }


def run(smoke: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"corpora": {}, "detectors": []}
    found = detectors()
    out["detectors"] = [{"key": k, "label": label, "unavailable": why} for k, label, _, why in found]
    for name, (path, about) in CORPORA.items():
        traces = load_traces(path, "corpus")
        results = {key: score(traces, factory) for key, _, factory, why in found if factory is not None}
        out["corpora"][name] = {
            "about": about,
            "path": str(path.relative_to(REAL.parents[2])),
            "traces": len(traces),
            "calls": sum(len(t.calls) for t in traces),
            "patterns": dict(Counter(str(t.meta.get("pattern")) for t in traces if t.label == "runaway")),
            "results": results,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_traces", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    results = run()
    for name, corpus in results["corpora"].items():
        print(f"\n{name}: {corpus['about']}, {corpus['calls']} tool calls")
        for key, label, _, why in detectors():
            if why:
                print(f"  {label}: unavailable ({why})")
                continue
            r = corpus["results"][key]
            clear = f"{r['false_refusals_clear']}/{r['legit_clear']} clear"
            print(
                f"  {label:34s} runaway by deadline {r['caught_by_deadline']}/{r['runaways']}  early {r['early']}  "
                f"legit refused {r['false_refusals']}/{r['legit']} ({clear})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
