"""``guarded_tool_node``: a LangGraph ``ToolNode`` whose every call is checked before the tool runs.

The guard is installed as the node's ``wrap_tool_call`` and ``awrap_tool_call`` (outermost, around any
wrapper you pass). A refused call's body never runs; every admitted call's result or error is reported.

``on_trip="raise"`` (default) raises the trip out of the graph. ``on_trip="steer"`` answers the refused call with
an error ``ToolMessage`` carrying ``Breaker.steer``'s text and lets the graph go on to the model; a budget
ceiling or the ``max_refusals`` stop is raised as in ``"raise"``. (No ``"end"`` here: a tools node cannot end a
graph whose edge leads back to the model; use ``guard_node(on_trip="end")``.)

Approvals and side effects (``loopguard_langchain._approval``): a tool's ``metadata`` is declared on first sight; a
gated call interrupts the graph (with a checkpointer; else ``ApprovalRequired`` is raised) and runs, with any
edited arguments, once a person approved and the graph was resumed; a ``side_effect`` body runs at most once.

The trap (verified against langgraph-prebuilt 1.1): once a wrapper is installed, ``ToolNode`` converts ANY
exception the wrapper raises into an error ``ToolMessage`` whenever ``handle_tool_errors`` is truthy, even a
type-filtered tuple or an annotated callable. The default setting re-raises, so the trip reaches the caller.
With a converting setting the node warns (``LoopGuardWarning``) and re-raises the trip itself, right after
ToolNode's handler turned it into a message (``_run_one``/``_arun_one``), so the trip still propagates while
your own tool errors are still converted as you asked.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langgraph.errors import GraphInterrupt
from langgraph.prebuilt import ToolNode

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped, LoopGuardWarning, ToolPolicy
from loopguard_core.runs import enter_scope, leave_scope
from loopguard_langchain._approval import (
    ToolDeclarations,
    acheck_tool,
    atool_body,
    check_tool,
    resumed_run,
    tool_body,
    with_edits,
)
from loopguard_langchain._batch import batch_of_state
from loopguard_langchain._scope import InvocationRuns, call_invocation, tool_call_scope
from loopguard_langchain._steer import steer_lock
from loopguard_langchain._tool_run import arun_and_report, run_and_report
from loopguard_langchain.middleware import steered_tool_message

from ._handoff import THREAD_RUN, Admitted, Handoff, thread_run

__all__ = ["GuardedToolNode", "guarded_tool_node"]

# Per tool call (each runs in its own copied context): the trip raised by the guard, if any.
_TRIP: contextvars.ContextVar[list[LoopGuardTripped] | None] = contextvars.ContextVar("loopguard_trip", default=None)


_ON_TRIP = ("raise", "steer")
_DEFAULT_HANDLING = inspect.signature(ToolNode.__init__).parameters["handle_tool_errors"].default


def _converts(setting: Any) -> bool:
    """True when ``handle_tool_errors`` would turn the guard's exception into a ToolMessage."""
    return setting is not _DEFAULT_HANDLING and bool(setting)


class _Guard:
    """The pre-flight / report logic, shared by the sync and async wrappers."""

    def __init__(self, breaker: Breaker, on_trip: str = "raise") -> None:
        self.breaker = breaker
        self.on_trip = on_trip
        self.runs = InvocationRuns.of(breaker)
        self.handoff = Handoff.of(breaker)  # the calls guard_node admitted (see _handoff)
        # The lock of steer mode (one check and its steer are one step for the other threads), else none to take.
        self._steer_lock = steer_lock(breaker) if on_trip == "steer" else None
        self._declare = ToolDeclarations(breaker)

    def _taken_over(self, request: Any) -> tuple[Admitted, str, ToolPolicy] | None:
        """``(admission, run, the tool's policy)`` of a call guard_node admitted as it is in this invocation's
        run, now out of the registry: this node runs it unchecked and reports its outcome in that run. None for any
        other call (gated, edited, unknown, another run's), which :meth:`_call` and the pre-flight handle. The usual
        turn of a graph with both nodes, so it reads no more of the request than that needs."""
        if not self.handoff.calls:  # (the map itself: no __bool__ call on every turn)
            return None
        call = request.tool_call
        call_id, name = call.get("id"), call["name"]
        self._declare(getattr(request, "tool", None))  # (first: a gate declared by the tool's metadata counts)
        policy = self.breaker.tool_policy(name)
        if not call_id or policy.irreversible:
            return None
        run_id = self.runs.run_of(call_invocation(request))
        if run_id is None:
            return None
        claimed = self.handoff.claim(run_id, call_id, name, call.get("args") or {})
        return None if claimed is None else (claimed, run_id, policy)

    def _call(self, request: Any) -> tuple[str, Any, str | None, str | None, Any, str | None, bool]:
        """The call's name, args, id, agent, invocation key, the run it must continue (if any), and whether it is
        gated."""
        call = request.tool_call
        name, call_id = call["name"], call.get("id")
        self._declare(getattr(request, "tool", None))
        agent, key, is_root = tool_call_scope(request)
        own = None
        gated = self.breaker.tool_policy(name).irreversible
        if gated:  # a resumed invocation continues the run that asked
            found = resumed_run(self.breaker, name, call_id)
            if found is not None and key is not None:
                self.runs.touch(key)  # (as before adopting: the adopted run keeps the entry's depth and owner)
                self.runs.adopt(key, found, is_root=is_root)
            elif found is not None:
                own = found
        elif self.handoff.calls and key is not None:
            # guard_node(on_trip="interrupt") admitted it in the thread's run: it runs and is reported there.
            admitted_in = self.handoff.run_of(call_id)
            thread = (
                admitted_in is not None
                and admitted_in.startswith(THREAD_RUN)  # (else it cannot be the thread's: no config read)
                and thread_run(getattr(getattr(request, "runtime", None), "config", None))
            )
            if thread and thread[1] == admitted_in:
                key = thread[0]
                self.runs.touch(key, admitted_in)
        return name, call.get("args") or {}, call_id, agent, key, own, gated

    def _scope(self, key: Any, own: str | None) -> Any:
        return self.breaker.run(own) if own is not None else self.runs.scope(key, touch=True)

    @staticmethod
    def _stash(trip: LoopGuardTripped) -> None:
        holder = _TRIP.get()
        if holder is not None:
            holder.append(trip)

    def _note_reported(self, call_id: str | None) -> None:
        """The outcome of ``call_id`` was reported (called inside the call's run): guard_node need not again."""
        self.handoff.reported(self.breaker.session_id, call_id)

    def _guard_admitted(self, name: str, args: Any, call_id: str | None, gated: bool) -> Admitted | None:
        """guard_node admitted this very call as it is, in this run: no second check, and this node reports its
        outcome (called inside the run). Never a gated call: guard_node sees no tool objects, so a gate declared by
        the tool's metadata (here, on first sight) was not known when it admitted the call; the check asks here."""
        if gated:
            return None
        return self.handoff.claim(self.breaker.session_id, call_id, name, args)

    def _paused(self, claimed: Admitted) -> Callable[[str | None], None]:
        """For a call this node claimed, whose body may pause the graph (``interrupt()``): its outcome is not known
        then, so the admission goes back, for the resumed graph to claim (or the guard to report) once the call ends.
        Called inside the run."""
        return functools.partial(self.handoff.admit, self.breaker.session_id, call=claimed)

    def _batch(self, request: Any, call_id: str | None) -> str | None:
        """The AIMessage in the node's state that carried the call (ToolNode runs an answer's calls in parallel;
        each is judged on the run as the model saw it, whichever sibling finishes first)."""
        return batch_of_state(getattr(request, "state", None), call_id)

    def _preflight(
        self, request: Any, name: str, args: Any, call_id: str | None, agent: str | None, gated: bool
    ) -> tuple[Admitted | None, Any, Any]:
        """``(claimed, approval, steered)``: the call guard_node admitted as it is, else its check's approval; or, in
        steer mode, the refusal's answer for the model (the steer lock held by the caller)."""
        claimed = self._guard_admitted(name, args, call_id, gated)
        if claimed:
            return claimed, None, None
        try:
            return None, check_tool(self.breaker, name, args, agent, call_id, self._batch(request, call_id)), None
        except ApprovalRequired:
            raise
        except LoopGuardTripped as trip:
            if self.on_trip != "steer":
                raise
            # The model is told instead; steer raises the trip (or a refusals stop) when the run ends.
            return None, None, steered_tool_message(trip, self.breaker.steer(trip), request.tool_call)

    def wrap(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        taken = self._taken_over(request)
        if taken is not None:
            claimed, run_id, policy = taken
            name, call_id = claimed.name, request.tool_call["id"]
            token, counted = enter_scope(self.breaker, run_id)  # (not a RunScope: every turn)
            try:
                return run_and_report(
                    self.breaker,
                    name,
                    claimed.args,
                    claimed.agent,
                    call_id,
                    tool_body(self.breaker, name, claimed.args, call_id, handler, policy),
                    request,
                )
            except GraphInterrupt:  # the body paused the graph: the admission waits for the resumed graph
                self.handoff.admit(run_id, call_id, claimed)
                raise
            finally:
                leave_scope(self.breaker, run_id, token, counted)
        name, args, call_id, agent, key, own, gated = self._call(request)
        with self._scope(key, own):
            try:
                if self._steer_lock is None:
                    claimed, approval, steered = self._preflight(request, name, args, call_id, agent, gated)
                else:
                    with self._steer_lock:  # siblings run on worker threads
                        claimed, approval, steered = self._preflight(request, name, args, call_id, agent, gated)
            except LoopGuardTripped as trip:
                self._stash(trip)
                raise
            if steered is not None:
                return steered
            run_args, run_request = with_edits(request, args, approval)
            return run_and_report(
                self.breaker,
                name,
                args,
                agent,
                call_id,
                tool_body(self.breaker, name, run_args, call_id, handler),
                run_request,
                reported=None if claimed else self._note_reported,
                paused=None if claimed is None else self._paused(claimed),
            )

    async def awrap(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        taken = self._taken_over(request)
        if taken is not None:
            claimed, run_id, policy = taken
            name, call_id = claimed.name, request.tool_call["id"]
            token, counted = enter_scope(self.breaker, run_id)
            try:
                return await arun_and_report(
                    self.breaker,
                    name,
                    claimed.args,
                    claimed.agent,
                    call_id,
                    atool_body(self.breaker, name, claimed.args, call_id, handler, policy),
                    request,
                )
            except GraphInterrupt:  # the body paused the graph: the admission waits for the resumed graph
                self.handoff.admit(run_id, call_id, claimed)
                raise
            finally:
                leave_scope(self.breaker, run_id, token, counted)
        name, args, call_id, agent, key, own, gated = self._call(request)
        with self._scope(key, own):
            claimed = self._guard_admitted(name, args, call_id, gated)
            try:
                try:
                    approval = (
                        None
                        if claimed
                        else await acheck_tool(self.breaker, name, args, agent, call_id, self._batch(request, call_id))
                    )
                except ApprovalRequired:
                    raise
                except LoopGuardTripped as trip:
                    if self.on_trip != "steer":
                        raise
                    return steered_tool_message(trip, await self.breaker.asteer(trip), request.tool_call)
            except LoopGuardTripped as trip:
                self._stash(trip)
                raise
            run_args, run_request = with_edits(request, args, approval)
            return await arun_and_report(
                self.breaker,
                name,
                args,
                agent,
                call_id,
                atool_body(self.breaker, name, run_args, call_id, handler),
                run_request,
                reported=None if claimed else self._note_reported,
                paused=None if claimed is None else self._paused(claimed),
            )


class GuardedToolNode(ToolNode):
    """A ToolNode that re-raises a loopguard trip even when ``handle_tool_errors`` converted it."""

    # Set by guarded_tool_node when handle_tool_errors would convert a trip; otherwise a trip leaves the node
    # by itself and a call needs no holder for it. (True by default: a subclass or a node built by hand keeps the
    # re-raise.)
    loopguard_reraise = True

    def _run_one(self, call: Any, input_type: Any, tool_runtime: Any) -> Any:
        if not self.loopguard_reraise:
            return super()._run_one(call, input_type, tool_runtime)
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
        if not self.loopguard_reraise:
            return await super()._arun_one(call, input_type, tool_runtime)
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


def guarded_tool_node(
    tools: Sequence[Any], breaker: Breaker, *, on_trip: str = "raise", **tool_node_kwargs: Any
) -> GuardedToolNode:
    """A ``ToolNode(tools, **tool_node_kwargs)`` that checks every tool call with ``breaker`` first.

    ``on_trip="raise"`` (default) raises a refusal out of the graph; ``on_trip="steer"`` answers it with an error
    ToolMessage telling the model why, and the run goes on (budget ceilings and the ``max_refusals`` stop are
    raised). Your own ``wrap_tool_call`` / ``awrap_tool_call`` run inside the guard. Leave
    ``handle_tool_errors`` at its default: any converting value (True, a string, a callable, an exception type
    or tuple) draws a ``LoopGuardWarning``; the trip is re-raised anyway.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guarded_tool_node needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    if on_trip not in _ON_TRIP:
        raise ValueError(
            f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a tools node cannot end the graph: use "
            "guard_node(breaker, on_trip='end') between the model node and the tools node)"
        )
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
    guard = _Guard(breaker, on_trip)
    user_sync = tool_node_kwargs.pop("wrap_tool_call", None)
    user_async = tool_node_kwargs.pop("awrap_tool_call", None)
    sync = _compose(guard.wrap, user_sync)
    # A sync-only user wrapper must keep running on the async path: let ToolNode use the sync chain there.
    asynchronous = None if (user_sync is not None and user_async is None) else _acompose(guard.awrap, user_async)
    node = GuardedToolNode(tools, wrap_tool_call=sync, awrap_tool_call=asynchronous, **tool_node_kwargs)
    node.breaker = breaker  # type: ignore[attr-defined]
    node.loopguard_reraise = _converts(setting)
    return node
