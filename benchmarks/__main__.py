"""``python -m benchmarks [--smoke]``: run every measurement and write docs/benchmarks.md with its plots.

The full run takes a few minutes; ``--smoke`` (< 60 s, for CI) runs each measurement briefly and writes
its report to ``benchmarks/results/raw/`` instead of ``docs/`` unless ``--docs`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from . import compiled, end_to_end, overhead, real_traces, scale
from ._corpus import REPO_ROOT, CorpusError
from ._cost import MODEL, TOKENS_IN, TOKENS_OUT, usd_per_turn
from ._report import write_report
from .detection import evaluate, load_all, summarize
from .detectors import all_detectors

__all__ = ["main"]


def _detection(corpus: str | None, *, own: bool) -> dict[str, Any]:
    path, cases = load_all(corpus, own=own)
    detectors = all_detectors()
    scores = evaluate(detectors, cases)
    return {
        "corpus": str(path),
        "cases": [
            {"name": c.name, "source": c.source, "family": c.family, "kind": c.scenario.kind, "about": c.scenario.about}
            for c in cases
        ],
        "detectors": [
            {"key": d.key, "label": d.label, "config": d.config, "unavailable": d.unavailable} for d in detectors
        ],
        "summaries": [asdict(summarize(d, scores)) for d in detectors if not d.unavailable],
        "summaries_public": [
            asdict(summarize(d, [s for s in scores if s.source == "public"])) for d in detectors if not d.unavailable
        ],
        "scores": [asdict(s) for s in scores],
        "cost": {"model": MODEL, "tokens_in": TOKENS_IN, "tokens_out": TOKENS_OUT, "usd_per_turn": usd_per_turn()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="quick mode (< 60 s) for CI")
    parser.add_argument("--docs", action="store_true", help="with --smoke: still write docs/benchmarks.md")
    parser.add_argument(
        "--corpus", help="public scenario corpus (default: $LOOPGUARD_SCENARIOS or tests/data/tool_call_scenarios.json)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "smoke": args.smoke,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": "python -m benchmarks" + (" --smoke" if args.smoke else ""),
    }
    print("real traces ...", flush=True)
    results["real_traces"] = real_traces.run(smoke=args.smoke)
    try:
        print("detection ...", flush=True)
        results["detection"] = _detection(args.corpus, own=not args.smoke)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("overhead ...", flush=True)
    results["overhead"] = overhead.to_json(overhead.run(smoke=args.smoke))
    print("scale ...", flush=True)
    results["scale"] = scale.run(smoke=args.smoke)
    print("end to end ...", flush=True)
    results["end_to_end"] = end_to_end.run(smoke=args.smoke)
    print("the compiled build ...", flush=True)
    results["compiled"] = compiled.run(smoke=args.smoke, pure_frameworks=results["end_to_end"].get("instructions"))
    results["seconds"] = round(time.perf_counter() - started, 1)
    raw = REPO_ROOT / "benchmarks" / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / ("smoke.json" if args.smoke else "full.json")).write_text(json.dumps(results, indent=1), encoding="utf-8")
    if args.smoke and not args.docs:
        doc, img = raw / "benchmarks.md", raw / "img"
    else:
        doc, img = REPO_ROOT / "docs" / "benchmarks.md", REPO_ROOT / "docs" / "img"
    write_report(results, doc, img)
    print(f"wrote {doc} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
