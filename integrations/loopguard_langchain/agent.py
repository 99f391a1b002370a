"""``guarded_agent``: ``create_agent`` with ``LoopGuardMiddleware`` placed first, where it must be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent

from loopguard_core import Breaker

from .middleware import LoopGuardMiddleware

__all__ = ["guarded_agent"]


def guarded_agent(
    model: Any,
    tools: Sequence[Any] | None = None,
    *,
    breaker: Breaker,
    middleware: Sequence[Any] = (),
    on_trip: str = "raise",
    **create_agent_kwargs: Any,
) -> Any:
    """Build ``create_agent(model, tools, middleware=[LoopGuardMiddleware(breaker), *middleware], ...)``.

    Retry and error middleware you pass stay *inside* the guard, so they never see a trip.
    """
    for item in middleware:
        if isinstance(item, LoopGuardMiddleware):
            raise ValueError(
                "guarded_agent adds LoopGuardMiddleware itself (first); remove it from middleware=[...] "
                "or call create_agent directly"
            )
    guard = LoopGuardMiddleware(breaker, on_trip=on_trip)
    return create_agent(model, tools, middleware=[guard, *middleware], **create_agent_kwargs)
