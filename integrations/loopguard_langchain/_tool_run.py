"""Run an admitted tool call and report its outcome to the breaker (shared by the middleware and ToolNode)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.errors import GraphBubbleUp, GraphInterrupt

from loopguard_core import Breaker

from ._common import tool_outcome

__all__ = ["arun_and_report", "run_and_report"]


def run_and_report(
    breaker: Breaker,
    name: str,
    args: Any,
    agent: str | None,
    call_id: str | None,
    run: Callable[[Any], Any],
    request: Any,
    *,
    reported: Callable[[str | None], None] | None = None,
    paused: Callable[[str | None], None] | None = None,
) -> Any:
    """Run the tool body (``run(request)``: :func:`~loopguard_langchain._approval.tool_body`); report its result or
    error (an interrupt is control flow, not a failure). ``reported`` is told the call id once the outcome is
    reported, ``paused`` when the body paused the graph (``interrupt()``): its outcome comes once the resumed graph
    runs it again."""
    try:
        output = run(request)
    except GraphBubbleUp as exc:
        if paused is not None and isinstance(exc, GraphInterrupt):
            paused(call_id)
        raise
    except Exception as exc:
        breaker.after_tool(name, args, error=exc, agent=agent, call_id=call_id)
        if reported is not None:
            reported(call_id)
        raise
    result, error = tool_outcome(output)
    breaker.after_tool(name, args, result=result, error=error, agent=agent, call_id=call_id)
    if reported is not None:
        reported(call_id)
    return output


async def arun_and_report(
    breaker: Breaker,
    name: str,
    args: Any,
    agent: str | None,
    call_id: str | None,
    run: Callable[[Any], Awaitable[Any]],
    request: Any,
    *,
    reported: Callable[[str | None], None] | None = None,
    paused: Callable[[str | None], None] | None = None,
) -> Any:
    try:
        output = await run(request)
    except GraphBubbleUp as exc:
        if paused is not None and isinstance(exc, GraphInterrupt):
            paused(call_id)
        raise
    except Exception as exc:
        await breaker.aafter_tool(name, args, error=exc, agent=agent, call_id=call_id)
        if reported is not None:
            reported(call_id)
        raise
    result, error = tool_outcome(output)
    await breaker.aafter_tool(name, args, result=result, error=error, agent=agent, call_id=call_id)
    if reported is not None:
        reported(call_id)
    return output
