"""``guarded_tool_node``: a LangGraph ``ToolNode`` whose every call is checked before the tool runs.

The guard is installed as the node's ``wrap_tool_call`` and ``awrap_tool_call`` (outermost, around any
wrapper you pass). A refused call's body never runs; every admitted call's result or error is reported.

The trap (verified against langgraph-prebuilt 1.1): once a wrapper is installed, ``ToolNode`` converts ANY
exception the wrapper raises into an error ``ToolMessage`` whenever ``handle_tool_errors`` is truthy, even a
type-filtered tuple or an annotated callable. The default setting re-raises, so the trip reaches the caller.
With a converting setting the node warns (``LoopGuardWarning``) and re-raises the trip itself, right after
ToolNode's handler turned it into a message (``_run_one``/``_arun_one``), so the trip still propagates while
your own tool errors are still converted as you asked.
"""

from __future__ import annotations

import contextvars
import inspect
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langgraph.prebuilt import ToolNode

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning
from loopguard_langchain._common import agent_name
from loopguard_langchain._scope import InvocationRuns, current_invocation
from loopguard_langchain._tool_run import arun_and_report, run_and_report

__all__ = ["GuardedToolNode", "guarded_tool_node"]

# Per tool call (each runs in its own copied context): the trip raised by the guard, if any.
_TRIP: contextvars.ContextVar[list[LoopGuardTripped] | None] = contextvars.ContextVar("loopguard_trip", default=None)


_DEFAULT_HANDLING = inspect.signature(ToolNode.__init__).parameters["handle_tool_errors"].default


def _converts(setting: Any) -> bool:
    """True when ``handle_tool_errors`` would turn the guard's exception into a ToolMessage."""
    return setting is not _DEFAULT_HANDLING and bool(setting)


class _Guard:
    """The pre-flight / report logic, shared by the sync and async wrappers."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.runs = InvocationRuns.of(breaker)

    def _call(self, request: Any) -> tuple[str, Any, str | None, str | None, Any]:
        call = request.tool_call
        key, _ = current_invocation()
        self.runs.touch(key)
        return call["name"], call.get("args") or {}, call.get("id"), agent_name(), key

    @staticmethod
    def _stash(trip: LoopGuardTripped) -> None:
        holder = _TRIP.get()
        if holder is not None:
            holder.append(trip)

    def wrap(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        name, args, call_id, agent, key = self._call(request)
        with self.runs.scope(key):
            try:
                self.breaker.before_tool(name, args, agent=agent, call_id=call_id)
            except LoopGuardTripped as trip:
                self._stash(trip)
                raise
            return run_and_report(self.breaker, name, args, agent, call_id, lambda: handler(request))

    async def awrap(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        name, args, call_id, agent, key = self._call(request)
        with self.runs.scope(key):
            try:
                await self.breaker.abefore_tool(name, args, agent=agent, call_id=call_id)
            except LoopGuardTripped as trip:
                self._stash(trip)
                raise
            return await arun_and_report(self.breaker, name, args, agent, call_id, lambda: handler(request))


class GuardedToolNode(ToolNode):
    """A ToolNode that re-raises a loopguard trip even when ``handle_tool_errors`` converted it."""

    def _run_one(self, call: Any, input_type: Any, tool_runtime: Any) -> Any:
        holder: list[LoopGuardTripped] = []
        token = _TRIP.set(holder)
        try:
            output = super()._run_one(call, input_type, tool_runtime)
        finally:
            _TRIP.reset(token)
        if holder:
            raise holder[0]
        return output

    async def _arun_one(self, call: Any, input_type: Any, tool_runtime: Any) -> Any:
        holder: list[LoopGuardTripped] = []
        token = _TRIP.set(holder)
        try:
            output = await super()._arun_one(call, input_type, tool_runtime)
        finally:
            _TRIP.reset(token)
        if holder:
            raise holder[0]
        return output


def _compose(guard: Callable[..., Any], inner: Callable[..., Any] | None) -> Callable[..., Any]:
    if inner is None:
        return guard

    def composed(request: Any, execute: Callable[..., Any]) -> Any:
        return guard(request, lambda req: inner(req, execute))

    return composed


def _acompose(guard: Callable[..., Any], inner: Callable[..., Any] | None) -> Callable[..., Any]:
    if inner is None:
        return guard

    async def composed(request: Any, execute: Callable[..., Any]) -> Any:
        async def call_inner(req: Any) -> Any:
            return await inner(req, execute)

        return await guard(request, call_inner)

    return composed


def guarded_tool_node(tools: Sequence[Any], breaker: Breaker, **tool_node_kwargs: Any) -> GuardedToolNode:
    """A ``ToolNode(tools, **tool_node_kwargs)`` that checks every tool call with ``breaker`` first.

    Your own ``wrap_tool_call`` / ``awrap_tool_call`` run inside the guard. Leave ``handle_tool_errors`` at
    its default: any converting value (True, a string, a callable, an exception type or tuple) draws a
    ``LoopGuardWarning``; the trip is re-raised anyway.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guarded_tool_node needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    setting = tool_node_kwargs.get("handle_tool_errors", _DEFAULT_HANDLING)
    if _converts(setting):
        if not (hasattr(ToolNode, "_run_one") and hasattr(ToolNode, "_arun_one")):  # pragma: no cover
            raise ValueError(
                f"guarded_tool_node cannot keep a trip from being converted by handle_tool_errors={setting!r} on "
                "this LangGraph version; leave handle_tool_errors at its default"
            )
        warnings.warn(
            f"guarded_tool_node(handle_tool_errors={setting!r}): with a tool wrapper installed, ToolNode turns "
            "EVERY exception the wrapper raises into an error ToolMessage (type filters are ignored), which would "
            "feed a LoopGuardTripped back to the model instead of stopping the run. loopguard re-raises its own "
            "trips past that handler; your tool errors are still converted. To silence this, leave "
            "handle_tool_errors at its default.",
            LoopGuardWarning,
            stacklevel=2,
        )
    guard = _Guard(breaker)
    user_sync = tool_node_kwargs.pop("wrap_tool_call", None)
    user_async = tool_node_kwargs.pop("awrap_tool_call", None)
    sync = _compose(guard.wrap, user_sync)
    # A sync-only user wrapper must keep running on the async path: let ToolNode use the sync chain there.
    asynchronous = None if (user_sync is not None and user_async is None) else _acompose(guard.awrap, user_async)
    node = GuardedToolNode(tools, wrap_tool_call=sync, awrap_tool_call=asynchronous, **tool_node_kwargs)
    node.breaker = breaker  # type: ignore[attr-defined]
    return node
