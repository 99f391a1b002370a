"""The exceptions the CrewAI adapter raises: each is also a CrewAI ``HookAborted``.

CrewAI swallows every exception a hook raises (fail-open) except ``HookAborted``, and only a
``HookAborted`` from a before-model hook leaves ``kickoff``. So a trip travels as a class that is both a
``LoopGuardTripped`` (what users catch) and a ``HookAborted`` (what CrewAI lets through).

Both classes say they were logged already (``_flow_listener_logged``, the mark CrewAI's Flow runtime itself sets
on an error it has logged once): loopguard logs every trip on its own ``loopguard`` logger and raises it to the
caller, so CrewAI's ``Error executing listener ...: <the trip>`` line on the way out would only repeat it.
"""

from __future__ import annotations

from typing import Any

from crewai.hooks import HookAborted

from loopguard_core import ApprovalRequired, LoopGuardError, LoopGuardTripped

__all__ = ["CrewAIApprovalRequired", "CrewAIGuardError", "CrewAILoopGuardTripped", "as_crewai_trip"]


class CrewAILoopGuardTripped(LoopGuardTripped, HookAborted):
    """A loopguard trip raised through CrewAI's ``HookAborted`` channel.

    Catch it as ``LoopGuardTripped`` (or ``HookAborted``). ``reason`` keeps loopguard's meaning: the short
    stable code (``loop``, ``turn_ceiling``...); the full sentence is ``str(exc)``.
    """

    # HookAborted's attribute; CrewAI's dispatcher reads it for telemetry and fills it when None.
    source: Any = "loopguard"
    # Read by crewai.flow.runtime before it logs "Error executing listener ...": loopguard logged it already.
    _flow_listener_logged = True


class CrewAIApprovalRequired(ApprovalRequired, CrewAILoopGuardTripped):
    """A gated tool call waits for a person, raised through CrewAI's ``HookAborted`` channel: catch it as
    ``loopguard_core.ApprovalRequired`` (``request_id``), decide, and kick the crew off again under the same run
    id (``guard_crew(breaker, run_id=...)``)."""


class CrewAIGuardError(LoopGuardError, HookAborted):
    """The guard itself failed inside a CrewAI hook (a bad argument, a breaker bug), so the call was
    blocked and the run aborted rather than letting CrewAI's fail-open hooks run it unguarded.
    The original exception is ``__cause__``."""

    source: Any = "loopguard"
    _flow_listener_logged = True  # logged by loopguard (with the cause) before it is raised

    def __init__(self, message: str) -> None:
        HookAborted.__init__(self, message, source="loopguard")


def as_crewai_trip(trip: LoopGuardTripped) -> CrewAILoopGuardTripped:
    """The same trip (reason, message, facts) as the class CrewAI propagates."""
    if isinstance(trip, CrewAILoopGuardTripped):
        return trip
    converted: CrewAILoopGuardTripped
    if isinstance(trip, ApprovalRequired):
        converted = CrewAIApprovalRequired(str(trip), **dict(trip.facts))
    else:
        converted = CrewAILoopGuardTripped(trip.reason, str(trip), **dict(trip.facts))
    converted.__cause__ = trip.__cause__
    notes = list(getattr(trip, "__notes__", ()))  # e.g. "could not write the trip to the ledger"
    if notes:
        setattr(converted, "__notes__", notes)  # noqa: B010 - add_note() needs Python 3.11
    return converted
