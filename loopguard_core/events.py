"""What happens to each guarded call, as events for observers: alerts, telemetry, dashboards, your own code.

``Breaker(on_event=callback)`` (or ``breaker.add_listener(on_event=...)``) calls ``callback(event)`` for every
admission, refusal, report and observation, synchronously and after the decision: an observer can neither
change a verdict nor slow down a breaker that has none (no event is built then). A callback that raises is
logged and ignored; one that blocks blocks the guarded call, so hand slow work (network) to a queue, as
:mod:`loopguard_core.alerts` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import LoopGuardTripped
    from .stores.base import RunSnapshot

__all__ = ["PHASES", "EventListener", "GuardEvent"]

#: admitted: a call may run; refused: it was refused before it ran (``trip`` says why); recorded: a call's
#: outcome was reported (tokens, cost, failure); observed: observe mode would have refused it;
#: approval_requested: a gated call waits for a person
PHASES: tuple[str, ...] = ("admitted", "refused", "recorded", "observed", "approval_requested")


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """One guarded call's step. Holds no arguments, results or prompts: names, counts and the verdict."""

    kind: str  # "tool" or "model"
    phase: str
    name: str | None  # the tool, or the model
    session_id: str
    scope: str
    agent: str | None = None
    reason: str | None = None
    trip: LoopGuardTripped | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_s: float | None = None
    failed: bool = False
    #: the framework's id of the call (a tool_call id), when it gave one
    call_id: str | None = None
    #: the run's counters after this step; read on demand (a store read: a round trip on Redis)
    usage: Callable[[], RunSnapshot] | None = None
    #: what else the step knows (an approval request's id, a budget's name)
    facts: dict[str, Any] | None = None


EventListener = Callable[[GuardEvent], None]
