"""The detectors compared in the detection benchmark, each driven the way its users run it.

Every detector sees a scenario as a sequence of tool calls and answers with the 1-based index of the
call it refused (``None`` if it let the whole trace run). Peers that are not installed are reported as
unavailable, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loopguard_core import Breaker
from loopguard_core.testing import drive

from ._corpus import Case

__all__ = ["Detector", "Outcome", "loopguard_default"]


@dataclass(frozen=True)
class Outcome:
    """Where a detector stopped a trace."""

    refused_at: int | None  # 1-based index of the refused call; None if the trace ran to its end
    executed: int  # tool calls whose body ran
    reason: str = ""


@dataclass(frozen=True)
class Detector:
    """A named way to run a trace: ``run(case)`` returns where it stopped."""

    key: str
    label: str
    config: str
    run: Callable[[Case], Outcome]
    unavailable: str | None = None  # why it could not run here (missing package), if so


def _loopguard(case: Case) -> Outcome:
    result = drive(Breaker(), case.scenario.calls)
    reason = result.trip.reason if result.trip is not None else ""
    return Outcome(result.refused_at, result.executed, reason)


def loopguard_default() -> Detector:
    return Detector("loopguard", "loopguard", "Breaker() defaults", _loopguard)
