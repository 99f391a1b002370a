"""The exceptions the CrewAI adapter raises: each is also a CrewAI ``HookAborted``.

CrewAI swallows every exception a hook raises (fail-open) except ``HookAborted``, and only a
``HookAborted`` from a before-model hook leaves ``kickoff``. So a trip travels as a class that is both a
``LoopGuardTripped`` (what users catch) and a ``HookAborted`` (what CrewAI lets through).
"""

from __future__ import annotations

from typing import Any

from crewai.hooks import HookAborted

from loopguard_core import LoopGuardError, LoopGuardTripped

__all__ = ["CrewAIGuardError", "CrewAILoopGuardTripped", "as_crewai_trip"]


class CrewAILoopGuardTripped(LoopGuardTripped, HookAborted):
    """A loopguard trip raised through CrewAI's ``HookAborted`` channel.

    Catch it as ``LoopGuardTripped`` (or ``HookAborted``). ``reason`` keeps loopguard's meaning: the short
    stable code (``loop``, ``turn_ceiling``...); the full sentence is ``str(exc)``.
    """

    # HookAborted's attribute; CrewAI's dispatcher reads it for telemetry and fills it when None.
    source: Any = "loopguard"


class CrewAIGuardError(LoopGuardError, HookAborted):
    """The guard itself failed inside a CrewAI hook (a bad argument, a breaker bug), so the call was
    blocked and the run aborted rather than letting CrewAI's fail-open hooks run it unguarded.
    The original exception is ``__cause__``."""

    source: Any = "loopguard"

    def __init__(self, message: str) -> None:
        HookAborted.__init__(self, message, source="loopguard")


def as_crewai_trip(trip: LoopGuardTripped) -> CrewAILoopGuardTripped:
    """The same trip (reason, message, facts) as the class CrewAI propagates."""
    if isinstance(trip, CrewAILoopGuardTripped):
        return trip
    converted = CrewAILoopGuardTripped(trip.reason, str(trip), **dict(trip.facts))
    converted.__cause__ = trip.__cause__
    notes = list(getattr(trip, "__notes__", ()))  # e.g. "could not write the trip to the ledger"
    if notes:
        setattr(converted, "__notes__", notes)  # noqa: B010 - add_note() needs Python 3.11
    return converted
