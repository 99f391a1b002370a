"""``LoopGuardMiddleware``: the breaker as LangChain v1 ``create_agent`` middleware.

- Tool pre-flight in ``wrap_tool_call`` and ``awrap_tool_call`` (both: a sync-only wrapper fails under
  ``ainvoke``). A refused call's body never runs; every admitted call's result or error is reported after.
- Model pre-flight in ``wrap_model_call`` / ``awrap_model_call``: estimated input tokens from the request's
  messages, ``max_output_tokens`` from the model's own cap; usage from ``usage_metadata`` after the call.
- One breaker run per top-level invocation (``before_agent``/``after_agent``); nested agents join it.
- ``on_trip="raise"`` (default) lets ``LoopGuardTripped`` reach the caller of ``invoke``/``ainvoke``/``stream``.
  ``on_trip="end"`` answers the refused tool call with an error ToolMessage and ends the agent with a final
  AIMessage naming the trip, without calling the model again.
  ``on_trip="steer"`` answers the refused tool call with an error ToolMessage carrying ``Breaker.steer``'s text
  (why it was refused, what to do instead) and lets the agent go on; the core raises when the run must stop
  (a budget ceiling, or ``max_refusals`` reached) and that trip reaches the caller as in ``"raise"``. A refused
  *model* call has no tool result to answer with: it is raised in ``"steer"`` mode too.

Approvals and side effects (see ``_approval``): each tool's ``metadata`` is declared to the breaker on first
sight; a gated call suspends the agent with LangGraph's ``interrupt`` when it has a checkpointer (resume with
``Command(resume=...)``), else ``ApprovalRequired`` reaches the caller in every ``on_trip`` mode; an approval with
edited arguments runs the tool with them; a ``side_effect`` tool's body runs at most once per idempotency key.

It must be FIRST in ``middleware=[...]`` (first = outermost): a retry or error middleware outside it would
catch the trip. It warns (``LoopGuardWarning``) when it finds one there at run time.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, ToolMessage

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, LoopGuardWarning
from loopguard_core.runs import enter_scope, leave_scope

from ._approval import (
    ToolDeclarations,
    acheck_tool,
    atool_body,
    check_tool,
    resumed_run,
    tool_body,
    with_edits,
)
from ._batch import batch_of_state
from ._common import (
    agent_name,
    estimate_history,
    estimate_messages,
    history_input,
    message_history,
    model_facts,
    usage_of,
)
from ._order import find_create_agent_list, order_problem
from ._scope import InvocationRuns, current_invocation, tool_call_scope
from ._steer import steer_lock
from ._tool_run import arun_and_report, run_and_report

__all__ = ["LoopGuardMiddleware"]

_ON_TRIP = ("raise", "end", "steer")
_TRIP_MEMORY = 512


def _batch(request: Any, call_id: str | None) -> str | None:
    """The model answer a tool call came in (the AIMessage in the agent's state holding it): create_agent runs an
    answer's calls in parallel, and each is judged on the run as the model saw it, whichever finishes first."""
    return batch_of_state(getattr(request, "state", None), call_id)


def stop_message(trip: LoopGuardTripped) -> AIMessage:
    """The final message of an agent ended by ``on_trip="end"`` (also carries the trip in metadata)."""
    return AIMessage(
        content=f"[loopguard] run stopped: {trip}",
        response_metadata={"loopguard_trip": {"reason": trip.reason, "agent": trip.agent, "tool": trip.tool}},
    )


def steered_tool_message(trip: LoopGuardTripped, text: str, call: Mapping[str, Any]) -> ToolMessage:
    """Answer for a refused tool call when the run goes on (``on_trip="steer"``): ``text`` is what the model
    is told (``Breaker.steer(trip)``); the trip's reason rides in ``response_metadata`` for code, not the model."""
    return ToolMessage(
        content=text,
        tool_call_id=call.get("id") or "",
        name=call.get("name"),
        status="error",
        response_metadata={"loopguard_steered": {"reason": trip.reason, "agent": trip.agent, "tool": trip.tool}},
    )


def refused_tool_message(trip: LoopGuardTripped, call: dict[str, Any]) -> ToolMessage:
    """Answer for a tool call the breaker refused (the provider needs every tool call answered)."""
    return ToolMessage(
        content=f"[loopguard] this call was refused and did not run: {trip}",
        tool_call_id=call.get("id") or "",
        name=call.get("name"),
        status="error",
    )


class LoopGuardMiddleware(AgentMiddleware):
    """Checks every tool call and model call of a ``create_agent`` agent before it runs.

    Usage::

        agent = create_agent(model, tools, middleware=[LoopGuardMiddleware(breaker), ...others])
    """

    def __init__(self, breaker: Breaker, *, on_trip: str = "raise", name: str | None = None) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"LoopGuardMiddleware needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if on_trip not in _ON_TRIP:
            raise ValueError(f"on_trip must be 'raise', 'end' or 'steer', got {on_trip!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        super().__init__()
        self.breaker = breaker
        self.on_trip = on_trip
        self.tools = []
        self._name = name or type(self).__name__
        self._runs = InvocationRuns.of(breaker)
        self._declare = ToolDeclarations(breaker)
        # The lock of steer mode (one check and its steer are one step for the other threads), else none to take.
        self._steer_lock = steer_lock(breaker) if on_trip == "steer" else None
        self._checked: set[tuple[int, ...]] = set()
        self._trips: OrderedDict[str, LoopGuardTripped] = OrderedDict()
        self._trips_lock = threading.Lock()
        self._history = message_history()  # each turn reads only the messages added since the last
        #: the most recent trip seen by this middleware (handy after an ``on_trip="end"`` run)
        self.last_trip: LoopGuardTripped | None = None

    @property
    def name(self) -> str:
        # create_agent reads every middleware's name while building the agent: the moment to check the order.
        self._check_order()
        return self._name

    def _check_order(self) -> None:
        found = find_create_agent_list(3)
        if found is None:
            return
        middleware, depth = found
        combination = tuple(id(m) for m in middleware)
        if combination in self._checked:
            return
        self._checked.add(combination)
        problem = order_problem(middleware, self)
        if problem is not None:
            # stacklevel points at the line that calls create_agent
            warnings.warn(problem, LoopGuardWarning, stacklevel=depth + 1)

    # -- run scoping ------------------------------------------------------------------------------
    def before_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        key, is_root = current_invocation(runtime)
        self._runs.enter(key, is_root=is_root)
        return None

    async def abefore_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)

    def after_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        key, _ = current_invocation(runtime)
        self._runs.exit(key)
        return None

    async def aafter_agent(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self.after_agent(state, runtime)

    # -- trips ------------------------------------------------------------------------------------
    def _remember(self, trip: LoopGuardTripped) -> None:
        self.last_trip = trip
        run = trip.session_id or ""
        with self._trips_lock:
            self._trips.setdefault(run, trip)
            while len(self._trips) > _TRIP_MEMORY:
                self._trips.popitem(last=False)

    def _ended(self) -> LoopGuardTripped | None:
        if self.on_trip != "end":
            return None
        with self._trips_lock:
            return self._trips.get(self.breaker.session_id)

    def _check(
        self, call: dict[str, Any], name: str, args: Any, agent: str | None, call_id: str | None, batch: str | None
    ) -> tuple[Any, ToolMessage | None]:
        """``(approval, None)`` for an admitted call; ``(None, answer)`` for a refused one answered for the model."""
        try:
            return check_tool(self.breaker, name, args, agent, call_id, batch), None
        except ApprovalRequired:
            raise  # waits for a person: never answered for the model, never an "end"
        except LoopGuardTripped as trip:
            return None, self._tool_refused(trip, call)

    def _tool_refused(self, trip: LoopGuardTripped, call: dict[str, Any]) -> ToolMessage:
        if self.on_trip == "steer":
            try:
                text = self.breaker.steer(trip)
            except LoopGuardTripped as stop:  # a budget ceiling, or too many refusals: the run stops
                self._remember(stop)
                raise
            return steered_tool_message(trip, text, call)
        self._remember(trip)
        if self.on_trip == "raise":
            raise trip
        return refused_tool_message(trip, call)

    async def _atool_refused(self, trip: LoopGuardTripped, call: dict[str, Any]) -> ToolMessage:
        if self.on_trip == "steer":
            try:
                text = await self.breaker.asteer(trip)
            except LoopGuardTripped as stop:
                self._remember(stop)
                raise
            return steered_tool_message(trip, text, call)
        return self._tool_refused(trip, call)

    def _model_refused(self, trip: LoopGuardTripped) -> AIMessage:
        self._remember(trip)
        if self.on_trip != "end":  # "steer" too: a refused model call has no tool result to answer with
            raise trip
        return stop_message(self._ended() or trip)

    # -- tool calls -------------------------------------------------------------------------------
    def _resume(self, name: str, call_id: str | None, key: Any, is_root: bool) -> Any:
        """A gated call of a resumed invocation continues the run that asked for its approval."""
        if not self.breaker.tool_policy(name).irreversible:
            return None
        found = resumed_run(self.breaker, name, call_id)
        if found is None:
            return None
        if key is None:  # outside LangGraph: no invocation to move over, just this call
            return found
        self._runs.adopt(key, found, is_root=is_root)
        return None

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        call = request.tool_call
        name, args, call_id = call["name"], call.get("args") or {}, call.get("id")
        batch = _batch(request, call_id)
        self._declare(request.tool)
        agent, key, is_root = tool_call_scope(request)
        own = self._resume(name, call_id, key, is_root)
        if own is not None:  # a resumed call continues the run that asked
            with self.breaker.run(own):
                return self._tool_call(request, handler, call, name, args, call_id, agent, batch)
        run = self._runs.run_for(key)
        entered = None if run is None else enter_scope(self.breaker, run)  # (not a RunScope: every call)
        try:
            return self._tool_call(request, handler, call, name, args, call_id, agent, batch)
        finally:
            if run is not None and entered is not None:
                leave_scope(self.breaker, run, *entered)

    def _tool_call(
        self,
        request: Any,
        handler: Callable[[Any], Any],
        call: Any,
        name: str,
        args: Any,
        call_id: str | None,
        agent: str | None,
        batch: str | None,
    ) -> Any:
        """The body of :meth:`wrap_tool_call`, inside the call's run."""
        if self._steer_lock is None:
            approval, refused = self._check(call, name, args, agent, call_id, batch)
        else:
            with self._steer_lock:
                approval, refused = self._check(call, name, args, agent, call_id, batch)
        if refused is not None:
            return refused
        run_args, run_request = with_edits(request, args, approval)
        return run_and_report(
            self.breaker,
            name,
            args,
            agent,
            call_id,
            tool_body(self.breaker, name, run_args, call_id, handler),
            run_request,
        )

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        call = request.tool_call
        name, args, call_id = call["name"], call.get("args") or {}, call.get("id")
        batch = _batch(request, call_id)
        self._declare(request.tool)
        agent, key, is_root = tool_call_scope(request)
        own = self._resume(name, call_id, key, is_root)
        if own is not None:  # a resumed call continues the run that asked
            with self.breaker.run(own):
                return await self._atool_call(request, handler, call, name, args, call_id, agent, batch)
        run = self._runs.run_for(key)
        entered = None if run is None else enter_scope(self.breaker, run)
        try:
            return await self._atool_call(request, handler, call, name, args, call_id, agent, batch)
        finally:
            if run is not None and entered is not None:
                leave_scope(self.breaker, run, *entered)

    async def _atool_call(
        self,
        request: Any,
        handler: Callable[[Any], Awaitable[Any]],
        call: Any,
        name: str,
        args: Any,
        call_id: str | None,
        agent: str | None,
        batch: str | None,
    ) -> Any:
        try:
            approval = await acheck_tool(self.breaker, name, args, agent, call_id, batch)
        except ApprovalRequired:
            raise
        except LoopGuardTripped as trip:
            return await self._atool_refused(trip, call)
        run_args, run_request = with_edits(request, args, approval)
        return await arun_and_report(
            self.breaker,
            name,
            args,
            agent,
            call_id,
            atool_body(self.breaker, name, run_args, call_id, handler),
            run_request,
        )

    # -- model calls ------------------------------------------------------------------------------
    def _preflight_args(self, request: Any) -> dict[str, Any]:
        name, cap = model_facts(request.model, request.model_settings)
        return {
            "model": name,
            # Read only when a ceiling or budget uses it; otherwise only a reply without usage needs it (below).
            "estimated_input_tokens": self._estimate(request) if self.breaker.needs_token_estimate else 0,
            "max_output_tokens": cap,
            "agent": agent_name(),
        }

    def _estimate(self, request: Any) -> int:
        return estimate_history(self._history, request.messages, request.system_message)

    def _usage_args(self, request: Any, response: Any, pre: dict[str, Any]) -> dict[str, Any]:
        messages = _response_messages(response)
        usage = usage_of(messages)
        if usage is None:  # the provider reported nothing: count the estimate rather than zero
            # The pre-flight's estimate, or (skipped there: nothing else reads it) this reply's own, read once.
            usage = (pre["estimated_input_tokens"] or self._estimate(request), estimate_messages(messages))
        return {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "model": pre["model"],
            "agent": pre["agent"],
            # Only hashed into the ledger (without one, nothing is computed): a chained digest of the history,
            # which hashes only the messages added since the last turn.
            "input": history_input(self._history, request.messages) if self.breaker.ledger is not None else None,
        }

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        pre = self._preflight_args(request)
        run = self._runs.run_for(current_invocation(request.runtime)[0])
        entered = None if run is None else enter_scope(self.breaker, run)  # (not a RunScope: every turn)
        try:
            ended = self._ended()
            if ended is not None:
                return stop_message(ended)
            try:
                self.breaker.before_model(**pre)
            except LoopGuardTripped as trip:
                return self._model_refused(trip)
            try:
                response = handler(request)
            except Exception as exc:  # release the call's reservation; the error itself goes on unchanged
                self.breaker.model_failed(model=pre["model"], agent=pre["agent"], error=exc)
                raise
            self.breaker.after_model(**self._usage_args(request, response, pre))
            return response
        finally:
            if run is not None and entered is not None:
                leave_scope(self.breaker, run, *entered)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        pre = self._preflight_args(request)
        run = self._runs.run_for(current_invocation(request.runtime)[0])
        entered = None if run is None else enter_scope(self.breaker, run)
        try:
            ended = self._ended()
            if ended is not None:
                return stop_message(ended)
            try:
                await self.breaker.abefore_model(**pre)
            except LoopGuardTripped as trip:
                return self._model_refused(trip)
            try:
                response = await handler(request)
            except Exception as exc:  # release the call's reservation; the error itself goes on unchanged
                await self.breaker.amodel_failed(model=pre["model"], agent=pre["agent"], error=exc)
                raise
            await self.breaker.aafter_model(**self._usage_args(request, response, pre))
            return response
        finally:
            if run is not None and entered is not None:
                leave_scope(self.breaker, run, *entered)


def _response_messages(response: Any) -> list[Any]:
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    result = getattr(inner, "result", None)
    if isinstance(result, list):
        return result
    return [inner]
