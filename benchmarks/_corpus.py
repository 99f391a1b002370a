"""Scenario corpora for the detection benchmark: where they live, how they load, what "wasted" means.

A corpus is the format of ``tool_call_scenarios.json``:
``{"scenarios": [{name, kind, trip_by, calls: [{agent, tool, args, result, error}]}]}``. The benchmark
reads two optional extra fields per scenario: ``family`` (a label for grouping) and ``useful`` (see
:func:`useful_prefix`).

Wasted tool calls
-----------------
A runaway starts with useful work and then repeats itself. The *useful prefix* of a runaway is the
number of leading calls before the first call that answers with something its tool already answered
in this run (the same result, or the same error text): from that call on, the agent learns nothing new.
A scenario may state ``useful`` explicitly; otherwise this rule applies. The calls a detector *wastes*
are the calls it lets execute beyond the useful prefix::

    wasted = max(0, executed - useful)

A detector that never stops the runaway within the trace wastes ``len(trace) - useful`` calls, a lower
bound: the real loop would go on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopguard_core.testing import Scenario, load_scenarios

__all__ = ["Case", "CorpusError", "default_public_corpus", "load_cases", "own_corpus_files", "useful_prefix"]

REPO_ROOT = Path(__file__).resolve().parent.parent
OWN_CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
ENV_VAR = "LOOPGUARD_SCENARIOS"
_PUBLIC = "tool_call_scenarios.json"


class CorpusError(RuntimeError):
    """A corpus file is missing or malformed."""


@dataclass(frozen=True)
class Case:
    """One scenario plus what the benchmark needs to score it."""

    scenario: Scenario
    useful: int
    family: str
    source: str

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def runaway(self) -> bool:
        return self.scenario.kind == "runaway"


def default_public_corpus(override: str | None = None) -> Path:
    """``--corpus``, else ``$LOOPGUARD_SCENARIOS``, else the copy kept in ``tests/data/``."""
    raw = override or os.environ.get(ENV_VAR)
    path = Path(raw) if raw else REPO_ROOT / "tests" / "data" / _PUBLIC
    if not path.is_file():
        raise CorpusError(
            f"scenario corpus not found at {path}; pass --corpus PATH or set {ENV_VAR}=PATH "
            "(the public corpus is tool_call_scenarios.json)"
        )
    return path


def own_corpus_files() -> list[Path]:
    return sorted(OWN_CORPUS_DIR.glob("*.json"))


def _answer(call: Any) -> str:
    return json.dumps([call.tool, call.result, bool(call.error)], sort_keys=True, default=repr)


def useful_prefix(scenario: Scenario) -> int:
    """Calls before the first one whose tool repeats an answer it already gave in this run (at least 1)."""
    seen: set[str] = set()
    for index, call in enumerate(scenario.calls):
        answer = _answer(call)
        if answer in seen:
            return max(1, index)
        seen.add(answer)
    return max(1, len(scenario.calls))


def load_cases(path: Path, *, source: str | None = None) -> list[Case]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        scenarios = load_scenarios(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"cannot read scenario corpus {path}: {exc}") from exc
    items = raw["scenarios"] if isinstance(raw, dict) else raw
    cases = []
    for item, scenario in zip(items, scenarios):
        if scenario.kind not in ("runaway", "legit"):
            raise CorpusError(f"{path}: scenario {scenario.name!r} has kind {scenario.kind!r}; use runaway or legit")
        if scenario.kind == "runaway" and not scenario.trip_by:
            raise CorpusError(f"{path}: runaway scenario {scenario.name!r} needs trip_by (1-based call index)")
        useful = int(item.get("useful") or useful_prefix(scenario))
        family = str(item.get("family") or scenario.name)
        cases.append(Case(scenario, useful, family, source or path.stem))
    return cases
