"""Replaying recorded traces through a breaker: where it would have refused, why, and (for labelled
traces) how that scores: runaways caught by their deadline, legitimate runs refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..breaker import Breaker
from ..errors import LoopGuardTripped
from ._formats import Trace

__all__ = ["Refusal", "ReplayResult", "ReplaySummary", "replay", "replay_all", "summarize"]


@dataclass(frozen=True)
class Refusal:
    """A call the breaker refused (or, in observe mode, would have refused)."""

    index: int  # 0-based position of the call in the trace
    tool: str
    reason: str
    rule: str | None
    message: str
    observed: bool = False


@dataclass(frozen=True)
class ReplayResult:
    trace: Trace
    refusals: tuple[Refusal, ...]
    ran: int  # calls that ran (up to the first enforced refusal)

    @property
    def first(self) -> Refusal | None:
        return self.refusals[0] if self.refusals else None

    @property
    def verdict(self) -> str:
        """For a labelled trace: caught / early / late / missed (runaway), ok / false refusal (legit)."""
        first = self.first
        label = self.trace.label
        if label == "legit":
            return "ok" if first is None else "false refusal"
        if label != "runaway":
            return "refused" if first is not None else "-"
        if first is None:
            return "missed"
        start = self.trace.loop_start if self.trace.loop_start is not None else 0
        deadline = self.trace.deadline if self.trace.deadline is not None else len(self.trace.calls) - 1
        if first.index < start:
            return "early"
        return "caught" if first.index <= deadline else "late"


def replay(trace: Trace, make_breaker: Callable[[], Breaker]) -> ReplayResult:
    """Run ``trace`` through a fresh breaker, call by call, as an adapter would. The first enforced refusal
    ends the replay (the refused call and everything after it never run); in observe mode every would-be
    refusal is collected and the trace runs to its end."""
    notes: list[LoopGuardTripped] = []
    breaker = make_breaker()
    breaker.add_listener(on_observe=notes.append)
    refusals: list[Refusal] = []
    ran = 0
    for index, call in enumerate(trace.calls):
        args = call.args if call.args is not None else {}
        before = len(notes)
        try:
            breaker.before_tool(call.tool, args, agent=call.agent)
        except LoopGuardTripped as trip:
            refusals.extend(_noted(notes[before:], index, call.tool))
            refusals.append(_refusal(trip, index, call.tool, observed=False))
            return ReplayResult(trace, tuple(refusals), ran)
        refusals.extend(_noted(notes[before:], index, call.tool))
        ran += 1
        error = call.error if call.error not in (None, False, "") else None
        breaker.after_tool(
            call.tool, args, result=None if error is not None else call.result, error=error, agent=call.agent
        )
    return ReplayResult(trace, tuple(refusals), ran)


def _noted(notes: Sequence[LoopGuardTripped], index: int, tool: str) -> list[Refusal]:
    return [_refusal(note, index, tool, observed=True) for note in notes]


def _refusal(trip: LoopGuardTripped, index: int, tool: str, *, observed: bool) -> Refusal:
    rule = trip.facts.get("rule")
    return Refusal(index, tool, trip.reason, rule if isinstance(rule, str) else None, str(trip), observed)


def replay_all(traces: Iterable[Trace], make_breaker: Callable[[], Breaker]) -> list[ReplayResult]:
    return [replay(trace, make_breaker) for trace in traces]


@dataclass(frozen=True)
class ReplaySummary:
    traces: int
    calls: int
    refused: int  # traces with at least one (possibly observed) refusal
    by_rule: dict[str, int]
    labelled: bool
    runaway: int = 0
    caught: int = 0
    early: int = 0
    late: int = 0
    missed: int = 0
    legit: int = 0
    false_refusals: int = 0
    calls_saved: int = 0  # runaway calls that did not run because of the refusal
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(results: Sequence[ReplayResult]) -> ReplaySummary:
    by_rule: Counter[str] = Counter()
    for result in results:
        first = result.first
        if first is not None:
            by_rule[f"{first.reason}/{first.rule}" if first.rule and first.rule != first.reason else first.reason] += 1
    verdicts = Counter(result.verdict for result in results)
    runaways = [r for r in results if r.trace.label == "runaway"]
    return ReplaySummary(
        traces=len(results),
        calls=sum(len(r.trace.calls) for r in results),
        refused=sum(r.first is not None for r in results),
        by_rule=dict(by_rule.most_common()),
        labelled=any(r.trace.label in ("runaway", "legit") for r in results),
        runaway=len(runaways),
        caught=verdicts["caught"],
        early=verdicts["early"],
        late=verdicts["late"],
        missed=verdicts["missed"],
        legit=sum(r.trace.label == "legit" for r in results),
        false_refusals=verdicts["false refusal"],
        calls_saved=sum(len(r.trace.calls) - r.ran for r in runaways if r.first is not None and not r.first.observed),
    )
