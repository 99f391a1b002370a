"""``LoopGuardCapability``: a Pydantic AI capability that checks every tool call and model request pre-flight.

Why a capability: ``before_tool_execute`` runs after argument validation and before the tool body,
for every tool of the agent (function tools, toolsets, MCP), and an exception raised there propagates
unchanged out of ``run`` / ``run_sync`` (verified against pydantic-ai-slim 2.68). Another capability's
``on_tool_execute_error`` only sees exceptions from the tool *body*, so it cannot recover a refusal.

The capability also claims the outermost position so its ``wrap_*`` hooks enclose every other
capability's: if an inner wrap hook still catches the trip (returns a value, or turns it into
``ModelRetry``, which would end in ``UnexpectedModelBehavior``), the trip is raised again here with a
``LoopGuardWarning`` that names the problem.

Approvals (see ``_approvals``): a gated call is deferred the Pydantic AI way (``ApprovalRequired`` with loopguard's
request as metadata; ``requires_approval=True`` tools through ``handle_deferred_tool_calls``), so the run ends with
``DeferredToolRequests``; the next run, given ``approvals_for(breaker, result)``, acts on the person's decision once,
in the breaker run that asked. Tools are declared from ``requires_approval`` and their metadata (``prepare_tools``)
and a ``side_effect`` tool's body runs at most once per key (``get_wrapper_toolset``).

``on_trip="steer"``: the refused call's body does not run and ``wrap_tool_execute`` returns
``Breaker.asteer``'s text as the tool's return value, so the model reads it in a ``ToolReturnPart`` and the run
goes on. (Not a ``ModelRetry``: that spends the tool's retries and ends in ``UnexpectedModelBehavior``, never in
the trip.) A budget ceiling, a refused model request, or the ``max_refusals`` stop is raised as in ``"raise"``.
"""

from __future__ import annotations

import contextvars
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from pydantic_ai import exceptions as pa_exceptions
from pydantic_ai.capabilities import AbstractCapability, CapabilityOrdering
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolApproved,
    ToolDefinition,
    ToolDenied,
)
from pydantic_ai.toolsets import AbstractToolset, WrapperToolset

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, LoopGuardWarning
from loopguard_core.approvals import ApprovalRequest

from ._approvals import METADATA_KEY, approval_metadata, asked_in, run_of
from ._messages import _ToolCounts, estimate_request_tokens, max_output_tokens, message_history, model_name

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

_ON_TRIP = ("raise", "steer")
_MEMORY = 4_096
_DECLARED = "loopguard_pydantic_ai.declared"

_SWALLOWED = (
    "loopguard: another capability's wrap hook caught the LoopGuardTripped raised for {what} "
    "({how}); loopguard raised it again. Let LoopGuardTripped propagate from that capability "
    "(and never turn it into ModelRetry: that ends in UnexpectedModelBehavior)."
)


def _batch(ctx: RunContext[Any], call: ToolCallPart) -> str | None:
    """The model response a tool call came in: Pydantic AI runs one response's tool calls in parallel (asyncio
    tasks, sync tools on worker threads), all in the same step of the agent run (``run_step``). Passed as
    ``before_tool(..., batch=...)`` so each sibling is judged on the run as the model saw it, whichever finishes
    first (an identical sibling that reported first still counts, as a call in flight). None without a run id (the
    step number alone is not unique across runs sharing one breaker run) or when the latest response does not hold
    the call."""
    run_id = getattr(ctx, "run_id", None)
    step = getattr(ctx, "run_step", None)
    if not isinstance(run_id, str) or not run_id or not isinstance(step, int) or not call.tool_call_id:
        return None
    response = next((m for m in reversed(ctx.messages or ()) if isinstance(m, ModelResponse)), None)
    if response is None:
        return None
    calls = [part for part in response.parts if isinstance(part, ToolCallPart)]
    if not any(part.tool_call_id == call.tool_call_id for part in calls):
        return None
    return f"{run_id}:{step}"


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

    ``on_trip="raise"`` (default) raises a refusal out of ``run``; ``on_trip="steer"`` answers a refused tool
    call with the refusal text as its return value and lets the run go on (budget ceilings and the
    ``max_refusals`` stop are raised).
    """

    breaker: Breaker
    _: KW_ONLY
    id: str | None = "loopguard"
    on_trip: str = "raise"
    # (breaker run, tool call id) -> the approval found while resolving a deferred call, with the tool and the
    # arguments it lets run: that very call runs without being asked twice (not another call under the id)
    _settled: OrderedDict[tuple[str, str], tuple[ApprovalRequest, str, Any]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    # agent run id -> the gated call it deferred (for a run whose output type cannot carry the deferral)
    _waiting: OrderedDict[str, ApprovalRequired] = field(default_factory=OrderedDict, init=False, repr=False)
    # running estimates (and ledger digests) of the conversations seen: each request reads only its new messages
    _history: Any = field(default_factory=message_history, init=False, repr=False, compare=False)
    _tools: Any = field(default_factory=_ToolCounts, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.breaker, Breaker):
            raise TypeError(
                f"LoopGuardCapability needs a loopguard_core.Breaker, got {type(self.breaker).__name__}; "
                "use LoopGuardCapability(Breaker(...))"
            )
        if self.on_trip not in _ON_TRIP:
            raise ValueError(
                f"on_trip must be 'raise' or 'steer', got {self.on_trip!r} (Pydantic AI gives a capability no "
                "way to end a run with a final output of the agent's type, so there is no 'end')"
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
        try:
            async with self.breaker.run():
                return await handler()
        finally:
            self._waiting.pop(ctx.run_id or "", None)

    async def on_run_error(self, ctx: RunContext[Any], *, error: BaseException) -> Any:
        waiting = self._waiting.pop(ctx.run_id or "", None)
        if waiting is not None and isinstance(error, pa_exceptions.UserError) and "DeferredToolRequests" in str(error):
            # The agent's output type has no DeferredToolRequests, so Pydantic AI cannot end the run with the
            # request: the caller gets loopguard's ApprovalRequired instead (decide, then run again).
            raise waiting from error
        raise error

    # -- tool declarations ------------------------------------------------------------------------------
    async def prepare_tools(self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]) -> list[ToolDefinition]:
        # What the framework says about each tool (requires_approval, MCP annotations, loopguard metadata),
        # handed to the breaker the first time a tool is seen: a set lookup per tool and step after that.
        seen = _declared(self.breaker)
        for tool_def in tool_defs:
            if tool_def.name not in seen:
                _declare(self.breaker, tool_def, seen)
        return tool_defs

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        # Tool bodies run through the breaker: a side-effect tool at most once per idempotency key.
        return _SideEffectToolset(toolset, breaker=self.breaker)

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
                estimated_input_tokens=(  # only a ceiling or budget reads it
                    estimate_request_tokens(request_context, self._history, self._tools)
                    if self.breaker.needs_token_estimate
                    else 0
                ),
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
            input=self._ledger_input(request_context.messages),
        )
        return response

    def _ledger_input(self, messages: Any) -> Any:
        """What the ledger hashes for a model request (never stored): ``{"messages": n, "sha256": ...}``, a chained
        digest of every message's ``flatten_message`` view (``loopguard_core.tokens.history_digest(messages,
        flatten_message)`` recomputes it), of which each request hashes only the new messages. Nothing without a
        ledger."""
        if self.breaker.ledger is None:
            return None
        return self._history.digest(messages if isinstance(messages, Sequence) else list(messages))

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
        except (pa_exceptions.ApprovalRequired, pa_exceptions.CallDeferred):
            raise  # a gated call waits for a person (or another capability deferred it): not a tool outcome
        except LoopGuardTripped as trip:
            if slot.trip is trip and self.on_trip == "steer":
                # Refused here: the model reads why instead of a result; asteer raises when the run must stop.
                return await self.breaker.asteer(trip)
            raise  # refused here, or a delegate's trip coming up through this tool: never a tool outcome
        except Exception as exc:
            if slot.trip is not None:
                _warn_swallowed(f"tool {call.tool_name!r}", f"it became {type(exc).__name__}")
                if self.on_trip == "steer":
                    return await self.breaker.asteer(slot.trip)
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
            if self.on_trip == "steer":
                return await self.breaker.asteer(slot.trip)
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
        call_id = call.tool_call_id or None
        settled = self._settled.pop((self.breaker.session_id, call_id), None) if call_id and self._settled else None
        if settled is not None and settled[1] == call.tool_name and _same_args(settled[2], args):
            # approved while its deferral was resolved: already checked and admitted
            if slot is not None:
                slot.admitted, slot.args = True, args
            return args
        try:
            with self._asking_run(ctx, call):
                approval = await self.breaker.abefore_tool(
                    call.tool_name, args, agent=_agent_name(ctx), call_id=call_id, batch=_batch(ctx, call)
                )
        except ApprovalRequired as waiting:
            # Pydantic AI's own deferral: the run ends with DeferredToolRequests carrying loopguard's request.
            self._wait(ctx, waiting)
            raise pa_exceptions.ApprovalRequired(metadata=approval_metadata(waiting)) from None
        except LoopGuardTripped as trip:
            if slot is not None:
                slot.trip = trip
            raise
        if slot is not None:
            slot.admitted, slot.args = True, args
        changed = None if approval is None else approval.args()
        return dict(changed) if isinstance(changed, Mapping) else args

    def _asking_run(self, ctx: RunContext[Any], call: ToolCallPart) -> AbstractContextManager[Any]:
        """The breaker run that asked for this call's approval (a resumed deferred call), else the current one."""
        if not ctx.tool_call_approved or not self.breaker.tool_policy(call.tool_name).irreversible:
            return nullcontext()
        run = run_of(ctx.tool_call_metadata) or asked_in(self.breaker, call.tool_name, call.tool_call_id)
        if run is None or run == self.breaker.session_id:
            return nullcontext()
        return self.breaker.run(run)

    # -- deferred calls (requires_approval=True tools, and calls loopguard deferred) ---------------------------
    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """A call Pydantic AI deferred for approval itself (``requires_approval=True``) asks loopguard's queue:
        decided calls are resolved here (approved: run once; rejected: per ``on_trip``), pending ones carry the
        request in their metadata to the run's ``DeferredToolRequests``."""
        results = DeferredToolResults()
        for call in requests.approvals:
            known = requests.metadata.get(call.tool_call_id)
            if isinstance(known, Mapping) and METADATA_KEY in known:
                continue  # loopguard deferred it in this step: already asked
            if not self.breaker.tool_policy(call.tool_name).irreversible:
                continue  # not gated by loopguard (Breaker(tools=...) said so): Pydantic AI's approval decides
            try:
                approval = await self.breaker.abefore_tool(
                    call.tool_name, call.args_as_dict(), agent=_agent_name(ctx), call_id=call.tool_call_id or None
                )
            except ApprovalRequired as waiting:
                requests.metadata[call.tool_call_id] = approval_metadata(waiting)
                self._wait(ctx, waiting)
                continue
            except LoopGuardTripped as trip:
                if self.on_trip != "steer":
                    raise
                results.approvals[call.tool_call_id] = ToolDenied(await self.breaker.asteer(trip))
                continue
            assert approval is not None
            changed = approval.args()
            self._remember(call, approval, changed if isinstance(changed, Mapping) else call.args_as_dict())
            results.approvals[call.tool_call_id] = ToolApproved(
                override_args=dict(changed) if isinstance(changed, Mapping) else None
            )
        return results if results.approvals else None

    def _wait(self, ctx: RunContext[Any], waiting: ApprovalRequired) -> None:
        if ctx.run_id is not None:
            self._waiting.setdefault(ctx.run_id, waiting)
            while len(self._waiting) > _MEMORY:
                self._waiting.popitem(last=False)

    def _remember(self, call: ToolCallPart, approval: ApprovalRequest, args: Any) -> None:
        if not call.tool_call_id:
            return
        self._settled[(self.breaker.session_id, call.tool_call_id)] = (approval, call.tool_name, args)
        while len(self._settled) > _MEMORY:
            self._settled.popitem(last=False)


def _same_args(approved: Any, args: Any) -> bool:
    """The arguments a call runs with are those a person approved (anything else is checked as any call)."""
    try:
        return bool(approved == args)
    except Exception:  # arguments whose comparison raises: not known to be the same
        return False


@dataclass
class _SideEffectToolset(WrapperToolset[Any]):
    """Runs each tool body through ``Breaker.arun_tool_body``: a side-effect tool at most once per key."""

    breaker: Breaker | None = None

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: Any) -> Any:
        breaker = self.breaker
        if breaker is None or not breaker.tool_policy(name).side_effect:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

        def body() -> Awaitable[Any]:
            return self.wrapped.call_tool(name, tool_args, ctx, tool)

        return await breaker.arun_tool_body(name, tool_args, body)


def _declared(breaker: Breaker) -> set[str]:
    return breaker.attachment(_DECLARED, set)


def _declare(breaker: Breaker, tool_def: ToolDefinition, seen: set[str]) -> None:
    facts: dict[str, Any] = dict(tool_def.metadata) if isinstance(tool_def.metadata, Mapping) else {}
    if tool_def.kind == "unapproved":  # requires_approval=True: a person approves each call
        facts["requires_approval"] = True
    if facts:
        breaker.declare_tool(tool_def.name, facts)
    if len(seen) >= _MEMORY:
        seen.clear()
    seen.add(tool_def.name)


def _warn_swallowed(what: str, how: str) -> None:
    warnings.warn(_SWALLOWED.format(what=what, how=how), LoopGuardWarning, stacklevel=3)
