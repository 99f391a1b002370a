"""Detect middleware placed outside (before) the guard, where it can catch, retry or convert a trip.

``create_agent`` composes ``wrap_tool_call`` / ``wrap_model_call`` hooks in list order, first = outermost.
A ``ToolRetryMiddleware`` or ``ToolErrorMiddleware`` listed before the guard catches ``LoopGuardTripped``,
retries the refused call and turns it into a ToolMessage, so the agent carries on.

The middleware itself never receives the list. ``create_agent`` reads every middleware's ``name`` while it
builds the agent, so :class:`~loopguard_langchain.LoopGuardMiddleware` looks one or two frames up from its
``name`` property for the ``create_agent`` call and checks its ``middleware`` argument there: the warning
fires at build time, on the line that calls ``create_agent``. ``check_middleware_order`` is the same check
for code that wants to call it explicitly (``guarded_agent`` does).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import Any

from loopguard_core import LoopGuardWarning

__all__ = ["SWALLOWING", "check_middleware_order", "find_create_agent_list", "order_problem"]

#: middleware known to catch exceptions of the middleware it wraps (retry, convert to a message, fall back)
SWALLOWING = frozenset(
    {"ToolRetryMiddleware", "ToolErrorMiddleware", "ModelRetryMiddleware", "ModelFallbackMiddleware"}
)
_SEARCH_FRAMES = 5


def order_problem(middleware: Sequence[Any], guard: Any = None) -> str | None:
    """What is wrong with the position of ``guard`` (or the first LoopGuardMiddleware) in ``middleware``."""
    from .middleware import LoopGuardMiddleware

    items = list(middleware)
    if guard is None:
        guard = next((m for m in items if isinstance(m, LoopGuardMiddleware)), None)
        if guard is None:
            return "the middleware list holds no LoopGuardMiddleware; add LoopGuardMiddleware(breaker) first"
    index = next((i for i, m in enumerate(items) if m is guard), None)
    if not index:  # first, or not in this list at all
        return None
    before = [type(m).__name__ for m in items[:index]]
    risky = [n for n in before if n in SWALLOWING]
    if risky:
        return (
            f"{', '.join(risky)} is placed before LoopGuardMiddleware in create_agent(middleware=[...]), so it "
            "runs outside the guard: it catches LoopGuardTripped, retries the refused call and turns it into a "
            "message, and the runaway goes on. Put LoopGuardMiddleware FIRST in the list "
            "(or build the agent with loopguard_langchain.guarded_agent)."
        )
    return (
        f"LoopGuardMiddleware is not first in create_agent(middleware=[...]) ({', '.join(before)} come before "
        "it); middleware outside the guard can catch or retry a trip. Put LoopGuardMiddleware FIRST."
    )


def check_middleware_order(middleware: Sequence[Any], *, strict: bool = False) -> None:
    """Raise ``ValueError`` when ``middleware`` holds no LoopGuardMiddleware; when it is not first, warn
    (``LoopGuardWarning``) or, with ``strict=True``, raise ``ValueError`` naming what runs outside it."""
    problem = order_problem(middleware)
    if problem is None:
        return
    if strict or problem.startswith("the middleware list holds no"):
        raise ValueError(problem)
    warnings.warn(problem, LoopGuardWarning, stacklevel=2)


def find_create_agent_list(start: int) -> tuple[Sequence[Any], int] | None:
    """The ``middleware`` argument of the ``create_agent`` call on the stack, with its distance in frames."""
    frame: FrameType | None
    try:
        frame = sys._getframe(start)
    except ValueError:
        return None
    for depth in range(_SEARCH_FRAMES):
        if frame is None:
            return None
        if frame.f_code.co_name == "create_agent":
            middleware = frame.f_locals.get("middleware")
            if isinstance(middleware, (list, tuple)):
                return middleware, start + depth
            return None
        frame = frame.f_back
    return None
