"""How a callback handler hands the model a refusal (``LoopGuardCallbackHandler(on_trip="steer")``).

A callback cannot replace a tool's result: ``on_tool_start`` can only return or raise, and what it raises leaves
``BaseTool.run`` before the tool's own error handling. The one exception LangGraph's ``ToolNode`` turns into a
tool result by default (``handle_tool_errors`` left as it is, which is also how ``create_agent`` builds its
tools node) is ``ToolInvocationError``: the node answers the call with ``ToolMessage(content=error.message,
status="error")`` and the graph goes on. So the steered refusal travels as a subclass of it whose ``message`` is
the text written for the model. It is also a ``LoopGuardTripped`` (same reason and facts as the refusal), so
where nothing converts it (a chain calling the tool directly, a ``ToolNode`` whose ``handle_tool_errors`` filters
it out) the caller still gets a trip it can catch.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext

from langgraph.prebuilt.tool_node import ToolInvocationError

from loopguard_core import Breaker, LoopGuardTripped

__all__ = ["LoopGuardSteered", "steer_lock"]

_STEER_LOCK = "loopguard.steer_lock"  # the key loopguard_crewai uses too: one lock per breaker
_NO_LOCK = nullcontext()  # reusable: it holds nothing


def steer_lock(breaker: Breaker, on_trip: str = "steer") -> AbstractContextManager[object]:
    """Make one tool call's check and its steer one step for the other threads of this process (steer mode only).

    A refusal opens the breaker and ``Breaker.steer`` closes it again; a parallel sibling checked in between
    (LangGraph runs a batch's sync tool calls on worker threads) would be refused as ``open`` and count as a
    refusal of its own. Only the pre-flight is held, never the tool body. Kept on the breaker, like the run
    registry, so every hook over one breaker shares it.
    """
    if on_trip != "steer":
        return _NO_LOCK
    return breaker.attachment(_STEER_LOCK, threading.RLock)


class LoopGuardSteered(ToolInvocationError, LoopGuardTripped):
    """A refused tool call answered for the model (``on_trip="steer"``): ``message`` is what the model reads,
    ``trip`` the refusal itself. ToolNode turns it into an error ToolMessage; elsewhere it is a LoopGuardTripped."""

    def __init__(self, trip: LoopGuardTripped, text: str) -> None:
        LoopGuardTripped.__init__(self, trip.reason, text, **dict(trip.facts))
        # ToolInvocationError's attributes, read by ToolNode's default error handler (message) and by tracers.
        self.message = text
        self.tool_name = trip.tool or ""
        self.tool_kwargs: dict[str, object] = {}
        self.source = trip  # type: ignore[assignment]  # ToolInvocationError expects the ValidationError here
        self.filtered_errors = None
        self.trip = trip
