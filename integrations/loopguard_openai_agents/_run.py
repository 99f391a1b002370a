"""``guarded_run`` / ``guarded_run_sync`` / ``guarded_run_streamed``: ``Runner.run*`` under one breaker run,
with the trip handed to the caller as the original ``LoopGuardTripped`` however the SDK wrapped it.

Where the SDK wraps (verified on openai-agents 0.20 and 0.24): a hook or guardrail raising while a tool is
started becomes ``UserError("Error running tool …")`` with the trip as ``__cause__``; a guardrail's
``raise_exception`` becomes ``ToolInputGuardrailTripwireTriggered``; a trip inside an agent used as a tool becomes
a tool error message for the parent model, and the run may even finish normally. The wrappers find the trip
in the exception's causes, or in the breaker run's memory, and raise it instead (never a subclass of the
SDK's errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, RunHooks, Runner
from agents.tool import FunctionTool
from agents.tool_guardrails import ToolGuardrailFunctionOutput, ToolInputGuardrail

from loopguard_core import Breaker, LoopGuardTripped

from ._hooks import LoopGuardHooks, agent_name, tool_arguments

__all__ = ["agent_tool", "guarded_run", "guarded_run_streamed", "guarded_run_sync", "tool_guardrail"]


def _hooks(breaker: Breaker, on_trip: str, hooks: Any) -> LoopGuardHooks:
    if isinstance(hooks, LoopGuardHooks):
        if hooks.breaker is not breaker:
            raise ValueError("hooks is a LoopGuardHooks over another breaker")
        return hooks
    return LoopGuardHooks(breaker, on_trip=on_trip, hooks=hooks)


def find_trip(error: BaseException) -> LoopGuardTripped | None:
    """The ``LoopGuardTripped`` an SDK exception stands for (its cause, or a guardrail's ``output_info``)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, LoopGuardTripped):
            return current
        if id(current) in seen:
            continue
        seen.add(id(current))
        output = getattr(getattr(current, "guardrail_result", None), "output", None)
        info = getattr(output, "output_info", None)
        if isinstance(info, LoopGuardTripped):
            return info
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def _reraise(guard: LoopGuardHooks, error: BaseException) -> None:
    trip = find_trip(error) or guard.trips.get(guard.breaker.session_id)
    if trip is not None and trip is not error:
        raise trip from None


def _after(guard: LoopGuardHooks) -> None:
    """A run that returned although the breaker refused something in it (inside an agent used as a tool)."""
    trip = guard.trips.get(guard.breaker.session_id)
    if trip is not None:
        raise trip


async def guarded_run(
    agent: Agent[Any],
    input: Any,
    breaker: Breaker,
    *,
    on_trip: str = "raise",
    hooks: RunHooks[Any] | None = None,
    **run_kwargs: Any,
) -> Any:
    """``await Runner.run(agent, input, hooks=..., **run_kwargs)`` guarded by ``breaker``, in a breaker run."""
    guard = _hooks(breaker, on_trip, hooks)
    with breaker.run():
        try:
            result = await Runner.run(agent, input, hooks=guard, **run_kwargs)
        except Exception as error:
            _reraise(guard, error)
            raise
        _after(guard)
        return result


def guarded_run_sync(
    agent: Agent[Any],
    input: Any,
    breaker: Breaker,
    *,
    on_trip: str = "raise",
    hooks: RunHooks[Any] | None = None,
    **run_kwargs: Any,
) -> Any:
    """``Runner.run_sync(...)`` guarded by ``breaker`` (no running event loop allowed, as for ``run_sync``)."""
    guard = _hooks(breaker, on_trip, hooks)
    with breaker.run():
        try:
            result = Runner.run_sync(agent, input, hooks=guard, **run_kwargs)
        except Exception as error:
            _reraise(guard, error)
            raise
        _after(guard)
        return result


class GuardedStream:
    """``Runner.run_streamed(...)``'s result, with ``stream_events()`` raising the original trip."""

    def __init__(self, result: Any, guard: LoopGuardHooks, run: Any, session: str) -> None:
        self.result = result
        self._guard = guard
        self._run = run
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)

    async def stream_events(self) -> AsyncIterator[Any]:
        try:
            async for event in self.result.stream_events():
                yield event
            earlier = self._guard.trips.get(self._session)
            if earlier is not None:  # refused inside an agent used as a tool, and the run still finished
                raise earlier
        except Exception as error:
            trip = find_trip(error) or self._guard.trips.get(self._session)
            if trip is not None and trip is not error:
                raise trip from None
            raise
        finally:
            self._run.close()


def guarded_run_streamed(
    agent: Agent[Any],
    input: Any,
    breaker: Breaker,
    *,
    on_trip: str = "raise",
    hooks: RunHooks[Any] | None = None,
    **run_kwargs: Any,
) -> GuardedStream:
    """``Runner.run_streamed(...)`` guarded by ``breaker``; iterate ``stream_events()`` as usual.

    The breaker run opens here and closes when ``stream_events()`` ends (the SDK runs the agent while you
    iterate). Attributes of the SDK's ``RunResultStreaming`` are available on the returned object.
    """
    guard = _hooks(breaker, on_trip, hooks)
    run = breaker.begin_run()
    try:
        result = Runner.run_streamed(agent, input, hooks=guard, **run_kwargs)
    except BaseException:
        run.close()
        raise
    return GuardedStream(result, guard, run, breaker.session_id)


def agent_tool(agent: Agent[Any], breaker: Breaker | LoopGuardHooks, **as_tool_kwargs: Any) -> FunctionTool:
    """``agent.as_tool(...)`` whose nested run is guarded by the same breaker (the SDK does not pass a run's
    hooks to an agent used as a tool: ``Agent.as_tool(hooks=None)`` by default)."""
    guard = breaker if isinstance(breaker, LoopGuardHooks) else LoopGuardHooks(breaker)
    as_tool_kwargs.setdefault("tool_name", None)
    as_tool_kwargs.setdefault("tool_description", None)
    tool: FunctionTool = agent.as_tool(hooks=guard, **as_tool_kwargs)
    return tool


def tool_guardrail(guard: LoopGuardHooks) -> ToolInputGuardrail[Any]:
    """A tool input guardrail doing the tool pre-flight for ``guard``: attach it to a ``FunctionTool``
    (``tool_input_guardrails=[...]``) for ``on_trip="steer"``, where the refused call is answered with the
    breaker's text instead of running (``reject_content``). With ``"raise"`` it is optional: ``on_tool_start``
    already checks every tool."""

    async def check(data: Any) -> ToolGuardrailFunctionOutput:
        context, agent = data.context, data.agent
        call_id = getattr(context, "tool_call_id", None)
        name = str(getattr(context, "tool_name", "") or "tool")
        try:
            refused = await guard.admit_tool(
                name, tool_arguments(context), agent=agent_name(agent), call_id=call_id, steerable=True
            )
        except LoopGuardTripped as trip:
            return ToolGuardrailFunctionOutput.raise_exception(output_info=trip)
        guard.mark_checked(call_id)
        if refused is not None:
            return ToolGuardrailFunctionOutput.reject_content(refused, output_info={"loopguard": "steered"})
        return ToolGuardrailFunctionOutput.allow()

    return ToolInputGuardrail(guardrail_function=check, name="loopguard")
