"""``LoopGuardCapability``: a Pydantic AI capability that checks every tool call and model request pre-flight.

Why a capability: ``before_tool_execute`` runs after argument validation and before the tool body,
for every tool of the agent (function tools, toolsets, MCP), and an exception raised there propagates
unchanged out of ``run`` / ``run_sync`` (verified against pydantic-ai-slim 2.68). Another capability's
``on_tool_execute_error`` only sees exceptions from the tool *body*, so it cannot recover a refusal.

The capability also claims the outermost position so its ``wrap_*`` hooks enclose every other
capability's: if an inner wrap hook still catches the trip (returns a value, or turns it into
``ModelRetry``, which would end in ``UnexpectedModelBehavior``), the trip is raised again here with a
``LoopGuardWarning`` that names the problem.
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from pydantic_ai.capabilities import AbstractCapability, CapabilityOrdering
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.tools import RunContext, ToolDefinition

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning

from ._messages import estimate_request_tokens, flatten_messages, max_output_tokens, model_name

__all__ = ["LoopGuardCapability"]


@dataclass
class _Slot:
    """What our own pre-flight did inside one wrapped tool call or model request."""

    trip: LoopGuardTripped | None = None
    admitted: bool = False
    reported: bool = False
    args: Any = None


# Set by the outer wrap hook, filled in by the inner before-hook of the same call. Each tool call runs in
# its own task, so parallel calls never share a slot.
_TOOL_SLOT: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("loopguard_pa_tool", default=None)
_MODEL_SLOT: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("loopguard_pa_model", default=None)

_SWALLOWED = (
    "loopguard: another capability's wrap hook caught the LoopGuardTripped raised for {what} "
    "({how}); loopguard raised it again. Let LoopGuardTripped propagate from that capability "
    "(and never turn it into ModelRetry: that ends in UnexpectedModelBehavior)."
)


def _agent_name(ctx: RunContext[Any]) -> str | None:
    agent = getattr(ctx, "agent", None)
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) and name else None


@dataclass
class LoopGuardCapability(AbstractCapability[Any]):
    """Guard a Pydantic AI agent with a loopguard :class:`~loopguard_core.Breaker`.

    Attach it to the agent (``Agent(model, capabilities=[LoopGuardCapability(breaker)])``) or to one
    run (``agent.run(prompt, capabilities=[...])``, which is what :func:`guarded_run` does). Each agent
    run opens a breaker run; a delegate agent run started inside a tool joins the parent's run, so a
    parent and its delegates share one budget and one loop memory, and every call is attributed to the
    agent that made it (``ctx.agent.name``).

    The default ``id="loopguard"`` makes a capability passed for one run replace an agent-level one
    instead of checking every call twice.
    """

    breaker: Breaker
    _: KW_ONLY
    id: str | None = "loopguard"

    def __post_init__(self) -> None:
        if not isinstance(self.breaker, Breaker):
            raise TypeError(
                f"LoopGuardCapability needs a loopguard_core.Breaker, got {type(self.breaker).__name__}; "
                "use LoopGuardCapability(Breaker(...))"
            )

    @classmethod
    def combine(cls, capabilities: Sequence[AbstractCapability[Any]]) -> AbstractCapability[Any]:
        # Two guards under one id must guard the same breaker; silently keeping one would drop the other.
        last = capabilities[-1]
        assert isinstance(last, LoopGuardCapability)
        for other in capabilities:
            assert isinstance(other, LoopGuardCapability)
            if other.breaker is not last.breaker:
                raise ValueError(
                    f"two LoopGuardCapability instances share id={last.id!r} but guard different breakers; "
                    "give each its own id (LoopGuardCapability(breaker, id='...')) or share one breaker"
                )
        return last

    def get_ordering(self) -> CapabilityOrdering:
        # Outermost: no other capability's wrap hook sits between a refusal and the caller.
        return CapabilityOrdering(position="outermost")

    # -- run ----------------------------------------------------------------------------------------
    async def wrap_run(self, ctx: RunContext[Any], *, handler: Any) -> Any:
        # A fresh breaker run per agent run; a delegate run inside a tool joins the parent's.
        async with self.breaker.run():
            return await handler()

    # -- model requests -----------------------------------------------------------------------------
    async def wrap_model_request(self, ctx: RunContext[Any], *, request_context: Any, handler: Any) -> ModelResponse:
        slot = _Slot()
        token = _MODEL_SLOT.set(slot)
        try:
            response: ModelResponse = await handler(request_context)
        except LoopGuardTripped:
            raise
        except BaseException as exc:
            if slot.trip is not None:
                _warn_swallowed("a model request", f"it became {type(exc).__name__}")
                raise slot.trip from exc
            if slot.admitted and not slot.reported and isinstance(exc, Exception):
                # The request was admitted but failed (5xx, timeout): release its reservation at once.
                await self.breaker.amodel_failed(
                    model=model_name(request_context.model), agent=_agent_name(ctx), error=exc
                )
            raise
        finally:
            _MODEL_SLOT.reset(token)
        if slot.trip is not None:
            _warn_swallowed("a model request", "a response was returned instead")
            raise slot.trip
        return response

    async def before_model_request(self, ctx: RunContext[Any], request_context: Any) -> Any:
        slot = _MODEL_SLOT.get()
        try:
            await self.breaker.abefore_model(
                model=model_name(request_context.model),
                estimated_input_tokens=estimate_request_tokens(request_context),
                max_output_tokens=max_output_tokens(request_context.model_settings),
                agent=_agent_name(ctx),
            )
        except LoopGuardTripped as trip:
            if slot is not None:
                slot.trip = trip
            raise
        if slot is not None:
            slot.admitted = True
        return request_context

    async def after_model_request(
        self, ctx: RunContext[Any], *, request_context: Any, response: ModelResponse
    ) -> ModelResponse:
        slot = _MODEL_SLOT.get()
        if slot is not None:
            slot.reported = True
        usage = response.usage
        name = response.model_name or model_name(request_context.model)
        await self.breaker.aafter_model(
            input_tokens=int(usage.input_tokens or 0),
            output_tokens=int(usage.output_tokens or 0),
            model=name,
            agent=_agent_name(ctx),
            cost_usd=self._cost(response),
            input=flatten_messages(request_context.messages),  # hashed into the ledger, never stored
        )
        return response

    def _cost(self, response: ModelResponse) -> float | None:
        # Pydantic AI prices with genai-prices too, and knows the provider and cache tokens; use it when
        # a USD ceiling is set and the model is known, else let the breaker price by model name.
        if self.breaker.limits.max_cost_usd is None:
            return None
        try:
            return float(response.cost().total_price)
        except Exception:
            return None

    # -- tool calls ---------------------------------------------------------------------------------
    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
        handler: Any,
    ) -> Any:
        slot = _Slot()
        token = _TOOL_SLOT.set(slot)
        agent = _agent_name(ctx)
        try:
            result = await handler(args)
        except LoopGuardTripped:
            raise  # refused here, or a delegate's trip coming up through this tool: never a tool outcome
        except Exception as exc:
            if slot.trip is not None:
                _warn_swallowed(f"tool {call.tool_name!r}", f"it became {type(exc).__name__}")
                raise slot.trip from exc
            if slot.admitted:
                await self.breaker.aafter_tool(
                    call.tool_name, slot.args, error=exc, agent=agent, call_id=call.tool_call_id
                )
            raise
        finally:
            _TOOL_SLOT.reset(token)
        if slot.trip is not None:
            _warn_swallowed(f"tool {call.tool_name!r}", "a result was returned instead")
            raise slot.trip
        if slot.admitted:
            await self.breaker.aafter_tool(
                call.tool_name, slot.args, result=result, agent=agent, call_id=call.tool_call_id
            )
        return result

    async def before_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
    ) -> dict[str, Any]:
        slot = _TOOL_SLOT.get()
        try:
            await self.breaker.abefore_tool(
                call.tool_name, args, agent=_agent_name(ctx), call_id=call.tool_call_id or None
            )
        except LoopGuardTripped as trip:
            if slot is not None:
                slot.trip = trip
            raise
        if slot is not None:
            slot.admitted, slot.args = True, args
        return args


def _warn_swallowed(what: str, how: str) -> None:
    warnings.warn(_SWALLOWED.format(what=what, how=how), LoopGuardWarning, stacklevel=3)
