"""``LoopGuardHooks``: the breaker as Agents SDK ``RunHooks`` (one instance serves every agent of a run).

- Model pre-flight in ``on_llm_start`` (system prompt + input items estimated, the agent's
  ``model_settings.max_tokens`` as the output cap); usage from ``on_llm_end`` (``response.usage``).
- Tool pre-flight in ``on_tool_start``, which the SDK awaits before it starts the tool body (every local tool:
  function tools, agents used as tools, shell/computer tools); the result in ``on_tool_end``.
- A handoff is a call too: ``on_handoff`` checks ``transfer_to_<agent>`` so two agents handing a question back
  and forth trip like any other loop.
- Attribution: every call is made under the name of the agent the SDK hands the hook.
- Parallel calls: the SDK runs the tool calls of one model response concurrently, so a sibling may report before
  another is checked. ``on_llm_end`` notes which response carried each call id, and the check passes it as the
  batch (``before_tool(..., batch=...)``): each sibling is judged on the run as the model saw it.

How a trip travels: a hook raising from ``on_llm_start`` propagates unchanged out of ``Runner.run``; from
``on_tool_start`` (and from tool input guardrails) the SDK wraps it in ``UserError("Error running tool …")``
(``agents/run_internal/tool_execution.py``). And a trip inside an agent used as a tool becomes a tool error
message for the parent model (``Agent.as_tool`` has a ``failure_error_function``). So every trip is
remembered per breaker run, re-raised by the next hook of that run, and ``guarded_run*`` hands the caller the
original ``LoopGuardTripped`` whatever the SDK wrapped it in.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from agents import RunHooks

from loopguard_core import Breaker, LoopGuardTripped, estimate_tokens

__all__ = ["LoopGuardHooks", "TripMemory"]

_ON_TRIP = ("raise", "steer")
_MEMORY = 512


def _estimate(agent: Any, system_prompt: str | None, input_items: Any) -> int:
    """The model call's input tokens: its system prompt, input items and tool schemas."""
    schemas = [getattr(t, "params_json_schema", None) for t in getattr(agent, "tools", None) or ()]
    estimate = estimate_tokens(system_prompt) + estimate_tokens(_plain(input_items))
    return estimate + (estimate_tokens(json.dumps(schemas, default=str)) if schemas else 0)


class TripMemory:
    """The first trip of each breaker run, shared by every hooks object over the same breaker."""

    def __init__(self) -> None:
        self._trips: OrderedDict[str, LoopGuardTripped] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, breaker: Breaker) -> TripMemory:
        return breaker.attachment("loopguard_openai_agents.trips", cls)

    def remember(self, trip: LoopGuardTripped) -> None:
        run = trip.session_id or ""
        with self._lock:
            self._trips.setdefault(run, trip)
            while len(self._trips) > _MEMORY:
                self._trips.popitem(last=False)

    def get(self, run: str) -> LoopGuardTripped | None:
        with self._lock:
            return self._trips.get(run)


def agent_name(agent: Any) -> str | None:
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) and name else None


def model_name(agent: Any) -> str | None:
    model = getattr(agent, "model", None)
    if isinstance(model, str):
        return model
    name = getattr(model, "model", None)  # OpenAIResponsesModel / OpenAIChatCompletionsModel keep it here
    return name if isinstance(name, str) else None


def output_cap(agent: Any) -> int:
    settings = getattr(agent, "model_settings", None)
    value = getattr(settings, "max_tokens", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tool_arguments(context: Any) -> Any:
    raw = getattr(context, "tool_arguments", None)
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return raw if raw is not None else {}


class LoopGuardHooks(RunHooks[Any]):
    """Checks every model call, tool call and handoff of an Agents SDK run against ``breaker``.

    Pass it as ``Runner.run(agent, input, hooks=LoopGuardHooks(breaker))`` (``guarded_run`` does that for
    you), and to ``agent.as_tool(..., hooks=...)`` for agents used as tools (``agent_tool`` does that).
    ``hooks`` are your own hooks, still called (after the guard's checks).
    """

    def __init__(self, breaker: Breaker, *, on_trip: str = "raise", hooks: RunHooks[Any] | None = None) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"LoopGuardHooks needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if on_trip not in _ON_TRIP:
            raise ValueError(f"on_trip must be 'raise' or 'steer', got {on_trip!r}")
        if on_trip == "steer" and not hasattr(breaker, "steer"):
            raise ValueError("on_trip='steer' needs a loopguard-core whose Breaker has steer(); upgrade loopguard-core")
        self.breaker = breaker
        self.on_trip = on_trip
        self.hooks = hooks
        self.trips = TripMemory.of(breaker)
        # tool call ids checked by the tool guardrail already (so on_tool_start does not count them twice)
        self._checked: OrderedDict[str, None] = OrderedDict()
        # tool call id -> the model response that carried it (its batch), noted in on_llm_end
        self._batches: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # -- trips ------------------------------------------------------------------------------------
    def _raise_earlier(self) -> None:
        """A trip of this run that the SDK turned into something else: the run stops here, with it."""
        earlier = self.trips.get(self.breaker.session_id)
        if earlier is not None:
            raise earlier

    def _tripped(self, trip: LoopGuardTripped) -> LoopGuardTripped:
        self.trips.remember(trip)
        return trip

    async def admit_tool(
        self, tool: str, args: Any, *, agent: str | None, call_id: str | None, steerable: bool = False
    ) -> str | None:
        """The tool-call refusal path, in one place. ``None``: the call may run. A string: the call is refused
        and the model gets that text as its result (``on_trip="steer"``, only where the SDK lets the guard
        answer in the tool's place: the tool input guardrail). Otherwise the trip is raised."""
        self._raise_earlier()
        batch = None
        if call_id:
            with self._lock:
                batch = self._batches.get(call_id)
        try:
            await self.breaker.abefore_tool(tool, args, agent=agent, call_id=call_id, batch=batch)
        except LoopGuardTripped as trip:
            if steerable and self.on_trip == "steer":
                # Breaker.asteer returns what the model is told, or raises the trip when the run must stop.
                try:
                    text: str = await self.breaker.asteer(trip)
                except LoopGuardTripped as final:
                    raise self._tripped(final) from None
                return text
            raise self._tripped(trip) from None
        return None

    def mark_checked(self, call_id: str | None) -> None:
        if not call_id:
            return
        with self._lock:
            self._checked[call_id] = None
            while len(self._checked) > 4_096:
                self._checked.popitem(last=False)

    def _was_checked(self, call_id: str | None) -> bool:
        if not call_id:
            return False
        with self._lock:
            return self._checked.pop(call_id, 0) is None

    # -- model calls --------------------------------------------------------------------------------
    async def on_llm_start(self, context: Any, agent: Any, system_prompt: str | None, input_items: Any) -> None:
        self._raise_earlier()
        # Read only when a token or USD ceiling or a budget uses it: the input items are the whole conversation.
        estimate = _estimate(agent, system_prompt, input_items) if self.breaker.needs_token_estimate else 0
        try:
            await self.breaker.abefore_model(
                model=model_name(agent),
                estimated_input_tokens=estimate,
                max_output_tokens=output_cap(agent),
                agent=agent_name(agent),
            )
        except LoopGuardTripped as trip:
            raise self._tripped(trip) from None
        if self.hooks is not None:
            await self.hooks.on_llm_start(context, agent, system_prompt, input_items)

    def _note_batch(self, response: Any) -> None:
        """Which response carried each tool call (its id, else its call ids joined)."""
        calls = [
            item.call_id
            for item in getattr(response, "output", None) or ()
            if isinstance(getattr(item, "call_id", None), str) and item.call_id
        ]
        if len(calls) < 2:
            return  # a lone call has no sibling to wait for
        found = getattr(response, "response_id", None)
        batch = found if isinstance(found, str) and found else "calls:" + "|".join(calls)
        with self._lock:
            for call_id in calls:
                self._batches[call_id] = batch
            while len(self._batches) > 4_096:
                self._batches.popitem(last=False)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        self._note_batch(response)
        usage = getattr(response, "usage", None)
        await self.breaker.aafter_model(
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            model=model_name(agent),
            agent=agent_name(agent),
        )
        if self.hooks is not None:
            await self.hooks.on_llm_end(context, agent, response)

    # -- tool calls ---------------------------------------------------------------------------------
    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        call_id = getattr(context, "tool_call_id", None)
        if not self._was_checked(call_id):
            name = getattr(context, "tool_name", None) or getattr(tool, "name", None) or type(tool).__name__
            await self.admit_tool(str(name), tool_arguments(context), agent=agent_name(agent), call_id=call_id)
        if self.hooks is not None:
            await self.hooks.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        name = getattr(context, "tool_name", None) or getattr(tool, "name", None) or type(tool).__name__
        await self.breaker.aafter_tool(
            str(name),
            tool_arguments(context),
            result=result,
            agent=agent_name(agent),
            call_id=getattr(context, "tool_call_id", None),
        )
        if self.hooks is not None:
            await self.hooks.on_tool_end(context, agent, tool, result)

    # -- agents and handoffs --------------------------------------------------------------------------
    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        target = agent_name(to_agent) or "agent"
        tool = f"transfer_to_{target}"
        await self.admit_tool(tool, {}, agent=agent_name(from_agent), call_id=None)
        await self.breaker.aafter_tool(tool, {}, result=target, agent=agent_name(from_agent))
        if self.hooks is not None:
            await self.hooks.on_handoff(context, from_agent, to_agent)

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        self._raise_earlier()
        if self.hooks is not None:
            await self.hooks.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.hooks is not None:
            await self.hooks.on_agent_end(context, agent, output)


def _plain(items: Any) -> Any:
    if isinstance(items, (str, Mapping)):
        return items
    try:
        return [item.model_dump() if hasattr(item, "model_dump") else item for item in items or ()]
    except TypeError:
        return str(items)
