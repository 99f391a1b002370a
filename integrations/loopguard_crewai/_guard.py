"""``guard_crew``: a breaker around one CrewAI kickoff, through CrewAI's execution-scoped hooks.

How a trip travels (research: framework-hooks.md §5). CrewAI swallows any exception a hook raises except
``HookAborted``, and a ``HookAborted`` from a before-tool hook only blocks that one call; only a
before-model hook can end the run. So:

- before each tool call: ``breaker.before_tool``; on a trip the call is blocked (its body never runs), the
  trip is held, and every later tool call of the run is blocked too;
- before each model call: a held trip is raised as :class:`CrewAILoopGuardTripped` (a ``HookAborted``),
  which leaves ``kickoff``; otherwise ``breaker.before_model`` (turn/token/USD pre-flight) may raise it;
- after each tool call: ``breaker.after_tool`` with the result (loop detection is result-aware);
- usage: CrewAI skips after-model hooks for native tool-call turns, so each LLM's cumulative
  ``get_token_usage_summary()`` is read before the next call and at the end, and the delta is recorded;
- a model call that was admitted and then failed (a provider error, a timeout) gives its reservation back at
  once (``breaker.model_failed``): CrewAI's ``LLMCallFailedEvent`` is seen through a stream sink scoped to the
  block (``crewai.events.stream_context``), which CrewAI calls synchronously in the failing call's own context,
  before the error propagates and before any retry is admitted;
- held trips belong to one CrewAI execution (``crewai.execution.get_execution_uuid``): a second kickoff in the
  same block is judged by the breaker afresh, not stopped with the first kickoff's trip;
- on leaving the block, a held trip that never reached the caller (no model call followed, or CrewAI
  raised its own error first) is raised then: a trip is never swallowed.

Approval gates: a gated call (``ToolPolicy(irreversible=True)``) is blocked and its ``ApprovalRequired`` is raised at
the next model call as :class:`CrewAIApprovalRequired` (a ``HookAborted``, so it leaves ``kickoff``; catch it as
``loopguard_core.ApprovalRequired``). CrewAI's own human input (``Task(human_input=True)``) is not used: it reads
the console (``input()``) in the worker's process, so the person would have to sit at that terminal, and it only
reviews a task's final answer, never a tool call before it runs. A person decides in loopguard's queue (CLI,
another host); kick the crew off again inside ``guard_crew(breaker, run_id=<the same id>)`` and the approved call
runs once (with the arguments the person edited, written into CrewAI's tool input); a rejection is a steerable
trip. ``Breaker(approval_wait_seconds=N)`` makes the hook wait up to N s for the decision instead.

``on_trip="steer"``: a refused tool call is still blocked (its body never runs), and the after-tool hook
replaces CrewAI's "Tool execution blocked by hook" result with ``Breaker.steer``'s text, so the model reads why
and what to do instead, and the crew goes on. The core raises when the run must stop (a budget ceiling, or
``max_refusals`` reached): that trip is held and raised at the next model call exactly as in ``"raise"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import uuid
import warnings
from types import TracebackType
from typing import Any

from crewai.events.stream_context import add_stream_sink, reset_stream_sinks
from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallFailedEvent
from crewai.execution import get_execution_uuid
from crewai.hooks import HookAborted, InterceptionPoint
from crewai.hooks.dispatch import get_hooks, get_scoped_hooks, register_scoped, scoped_hooks
from crewai.tools.tool_failure import ToolFailure

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning, estimate_tokens
from loopguard_core.runs import RunHandle
from loopguard_core.tokens import History

from ._context import (
    ACTIVE_GUARD,
    CURRENT_AGENT,
    agent_name,
    declare,
    max_output_tokens,
    model_name,
    steer_lock,
    tool_args,
    warn_unguarded_side_effect,
)
from ._errors import CrewAIGuardError, as_crewai_trip

__all__ = ["CrewGuard", "guard_crew"]

logger = logging.getLogger("loopguard.crewai")

_BLOCKED_PREFIX = "Tool execution blocked by hook"
_TOOL_ERROR_PREFIX = "Error executing tool"
_HOOK_POINTS = (
    InterceptionPoint.PRE_TOOL_CALL,
    InterceptionPoint.POST_TOOL_CALL,
    InterceptionPoint.PRE_MODEL_CALL,
)
_ON_TRIP = ("raise", "steer")

# The model call the before-model hook just admitted, in the context that makes it: CrewAI runs the hook and
# then the LLM call in one context, and emits the call's completed/failed event from it.
_ADMITTED: contextvars.ContextVar[tuple[CrewGuard, str, str | None, str | None] | None] = contextvars.ContextVar(
    "loopguard_crewai_admitted", default=None
)


def guard_crew(breaker: Breaker, *, run_id: str | None = None, on_trip: str = "raise") -> CrewGuard:
    """Guard every agent of every crew (or ``Agent.kickoff``) run inside the returned context.

    Use ``with guard_crew(breaker): crew.kickoff()`` or ``async with`` around ``await crew.akickoff()`` /
    ``kickoff_async()``. One breaker run is opened for the block (a nested block on the same breaker
    joins it), so all agents of the crew share one budget and one loop memory.

    ``on_trip="raise"`` (default) stops the kickoff with the trip; ``on_trip="steer"`` answers a refused tool
    call with the refusal text and lets the crew go on (budget ceilings and the ``max_refusals`` stop are
    raised as in ``"raise"``).
    """
    return CrewGuard(breaker, run_id=run_id, on_trip=on_trip)


class _LLMUsage:
    """What was last seen of one LLM instance's cumulative usage, and who called it last (and under which id)."""

    __slots__ = ("agent", "call_id", "completion", "llm", "prompt")

    def __init__(self, llm: Any, prompt: int, completion: int) -> None:
        self.llm = llm
        self.prompt = prompt
        self.completion = completion
        self.agent: str | None = None
        self.call_id: str | None = None  # the admitted call whose usage is not recorded yet


class CrewGuard:
    """The context manager behind :func:`guard_crew` (sync ``with`` and ``async with``)."""

    def __init__(self, breaker: Breaker, *, run_id: str | None = None, on_trip: str = "raise") -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"guard_crew needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if on_trip not in _ON_TRIP:
            raise ValueError(
                f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a CrewAI hook can block a call or abort "
                "the run, but cannot end a crew with a final answer, so there is no 'end')"
            )
        self.breaker = breaker
        self.on_trip = on_trip
        self._run_id = run_id
        self._lock = threading.Lock()
        # The trip (or guard failure) stopping each CrewAI execution, by execution id; and those that reached
        # their kickoff's caller.
        self._held: dict[str | None, BaseException] = {}
        self._last: BaseException | None = None
        self._delivered: set[str | None] = set()
        self._admitted: dict[int, tuple[str, Any, str | None, str | None]] = {}  # by input dict: name, args, ...
        self._steered: dict[int, str] = {}  # refused calls answered with the refusal text, by their input dict
        self._usage: dict[int, _LLMUsage] = {}
        # Running estimates of each agent's conversation: CrewAI hands the same message list (and dicts) to every
        # call, so each model call counts only the messages added since the last, not the whole history again.
        self._history = History()
        self._seen = 0  # hook calls, including those a nested block on the same breaker handled
        self._run: RunHandle | None = None
        self._scope: Any = None
        self._token: contextvars.Token[CrewGuard | None] | None = None
        self._sink: contextvars.Token[Any] | None = None
        # Set when the block ends. A CrewAI worker can outlive it: on max_execution_time CrewAI (1.15.44 and later)
        # raises TimeoutError to the caller and abandons the worker, which keeps its copy of the context and so
        # these hooks. From then on they let nothing more run, and report nothing into a run that has ended.
        self._ended = False

    # -- the block ---------------------------------------------------------------------------------
    def __enter__(self) -> CrewGuard:
        if self._run is not None:
            raise RuntimeError("this guard_crew(...) block is already active; create one per kickoff")
        _warn_about_global_hooks()
        self._run = self.breaker.begin_run(self._run_id)
        # Keep the hooks of an enclosing scope: crewai's scoped_hooks() starts from an empty registry.
        inherited = {point: get_scoped_hooks(point) for point in InterceptionPoint}
        self._scope = scoped_hooks({point: hooks for point, hooks in inherited.items() if hooks})
        self._scope.__enter__()
        register_scoped(InterceptionPoint.PRE_TOOL_CALL, self._before_tool_call)
        register_scoped(InterceptionPoint.POST_TOOL_CALL, self._after_tool_call)
        register_scoped(InterceptionPoint.PRE_MODEL_CALL, self._before_llm_call)
        self._sink = add_stream_sink(self._on_event)
        self._token = ACTIVE_GUARD.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ended = True
        try:
            self._reconcile_all()
        finally:
            self._close()
        if exc is None and self._seen == 0 and not self._held:
            warnings.warn(
                "guard_crew saw no model or tool call inside its block. Run kickoff() inside the `with "
                "guard_crew(...)` block, in the same thread or a task/thread that copies the context "
                "(contextvars.copy_context().run); a kickoff started elsewhere is not guarded.",
                LoopGuardWarning,
                stacklevel=2,
            )
        with self._lock:
            held = list(self._held.values())
            pending = [error for execution, error in self._held.items() if execution not in self._delivered]
        if not held or any(exc is error for error in held):
            return
        if exc is None and not pending:
            return  # the caller chose to catch it inside the block: it reached them
        # CrewAI ended without another model call (or raised its own error first): raise the trip now.
        error = pending[0] if pending else held[-1]
        if exc is not None:
            raise error from exc
        raise error

    async def __aenter__(self) -> CrewGuard:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _close(self) -> None:
        if self._sink is not None:
            # Left from another context (ValueError): the sinks there are not ours to touch.
            with contextlib.suppress(ValueError):
                reset_stream_sinks(self._sink)
            self._sink = None
        if self._token is not None:
            try:
                ACTIVE_GUARD.reset(self._token)
            except ValueError:  # left from another context (e.g. an async generator): clear ours
                ACTIVE_GUARD.set(None)
            self._token = None
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(None, None, None)
        if self._run is not None:
            self._run.close()

    # -- what the block saw ------------------------------------------------------------------------
    @property
    def trip(self) -> BaseException | None:
        """The trip (or guard failure) that stopped the latest kickoff of this block, if any."""
        return self._last

    def hold(self, error: BaseException) -> None:
        """Stop this CrewAI execution at its next model call (also used by guarded tools inside this block)."""
        execution = get_execution_uuid()
        with self._lock:
            if execution not in self._held:
                self._held[execution] = error
                self._last = error

    def _held_here(self) -> BaseException | None:
        with self._lock:
            return self._held.get(get_execution_uuid())

    # -- hooks (sync; called on CrewAI's worker threads) --------------------------------------------
    def _mine(self) -> bool:
        # A nested guard_crew on the same breaker inherits our hooks; let the innermost one count.
        active = ACTIVE_GUARD.get()
        return active is None or active is self or active.breaker is not self.breaker

    def _before_tool_call(self, ctx: Any) -> bool | None:
        if self._ended:  # a worker that outlived the block: its tools no longer run
            return False
        with self._lock:
            self._seen += 1
        if not self._mine():
            return None
        if self._held_here() is not None:
            return False  # the run is being stopped: nothing else runs
        name = str(ctx.tool_name)
        args = tool_args(ctx.tool_input)
        agent = agent_name(ctx.agent)
        batch = _batch_of(ctx, name, args)
        call_id = f"crewai-{uuid.uuid4().hex}" if batch is not None else None  # pairs before_tool and after_tool
        with steer_lock(self.breaker, self.on_trip):
            try:
                declare(self.breaker, name, ctx.tool)
                approval = self.breaker.before_tool(name, args, agent=agent, call_id=call_id, batch=batch)
            except LoopGuardTripped as trip:
                if self.on_trip == "steer":
                    self._steer(trip, id(ctx.tool_input))
                else:
                    self.hold(as_crewai_trip(trip))
                return False
            except Exception as exc:  # CrewAI would swallow it and run the tool unguarded: block instead
                self.hold(_guard_failure("before_tool", exc))
                return False
        edited = None if approval is None else approval.args()
        if edited is not None and not _replace_input(ctx.tool_input, edited):
            self.hold(_guard_failure("approval", TypeError("edited arguments need a dict tool input")))
            return False
        warn_unguarded_side_effect(self.breaker, name, ctx.tool)
        with self._lock:
            self._admitted[id(ctx.tool_input)] = (name, args, agent, call_id)
        CURRENT_AGENT.set(agent)
        return None

    def _steer(self, trip: LoopGuardTripped, call: int) -> None:
        """The refused call stays blocked; the after-tool hook hands the model the text, or the run stops."""
        try:
            text = self.breaker.steer(trip)  # raises when the run must stop
        except LoopGuardTripped as stop:
            self.hold(as_crewai_trip(stop))
        except Exception as exc:
            self.hold(_guard_failure("steer", exc))
        else:
            with self._lock:
                self._steered[call] = text

    def _after_tool_call(self, ctx: Any) -> str | None:
        if self._ended:  # (the run it would be reported in has ended)
            return None
        with self._lock:
            admitted = self._admitted.pop(id(ctx.tool_input), None)
            steered = self._steered.pop(id(ctx.tool_input), None)
        if steered is not None:
            return steered  # in place of "Tool execution blocked by hook": why, and what to do instead
        if admitted is None:
            held = self._held_here()
            result = ctx.tool_result
            if held is not None and isinstance(result, str) and result.startswith(_BLOCKED_PREFIX):
                return f"{_BLOCKED_PREFIX}: {held}"  # tell the model (and traces) why
            return None
        name, args, agent, call_id = admitted
        raw = ctx.raw_tool_result if ctx.raw_tool_result is not None else ctx.tool_result
        error = _tool_error(raw)
        try:
            if error is not None:
                self.breaker.after_tool(name, args, error=error, agent=agent, call_id=call_id)
            else:
                self.breaker.after_tool(name, args, result=raw, agent=agent, call_id=call_id)
        except Exception as exc:
            self.hold(_guard_failure("after_tool", exc))
        return None

    def _before_llm_call(self, ctx: Any) -> bool | None:
        if self._ended:  # a worker that outlived the block: it is stopped here (no caller waits for it any more)
            raise self._held_here() or HookAborted(
                "loopguard: the guard_crew block this CrewAI run was guarded by has ended (CrewAI abandoned the "
                "worker, e.g. on max_execution_time, or the kickoff's context was copied inside the block): no "
                "further model or tool call runs unguarded. Run each kickoff inside its own guard_crew block.",
                source="loopguard",
            )
        with self._lock:
            self._seen += 1
        if not self._mine():
            return None
        llm = ctx.llm
        agent = agent_name(ctx.agent)
        try:
            self._reconcile(llm, next_agent=agent)
        except Exception as exc:
            self.hold(_guard_failure("after_model", exc))
        _ADMITTED.set(None)
        self._deliver()
        model = model_name(llm)
        call_id = f"crewai-{uuid.uuid4().hex}"
        try:
            self.breaker.before_model(
                model=model,
                estimated_input_tokens=(  # only a ceiling or budget reads it
                    _estimate(self._history, ctx.messages) if self.breaker.needs_token_estimate else 0
                ),
                max_output_tokens=max_output_tokens(llm),
                agent=agent,
                call_id=call_id,
            )
        except LoopGuardTripped as trip:
            self.hold(as_crewai_trip(trip))
        except Exception as exc:
            self.hold(_guard_failure("before_model", exc))
        else:
            _ADMITTED.set((self, call_id, model, agent))  # the call about to be made, until it ends
            self._admitted_call(llm, call_id)
        self._deliver()
        return None

    def _deliver(self) -> None:
        """Raise the held trip (a HookAborted: CrewAI lets it out of kickoff) before the model is called."""
        execution = get_execution_uuid()
        with self._lock:
            held = self._held.get(execution)
            if held is not None:
                self._delivered.add(execution)
        if held is not None:
            raise held

    # -- events (the block's stream sink: called synchronously where the event is emitted) ------------
    def _on_event(self, source: Any, event: Any) -> None:
        if self._ended or not isinstance(event, (LLMCallFailedEvent, LLMCallCompletedEvent)):
            return
        admitted = _ADMITTED.get()
        if admitted is None or admitted[0] is not self:
            return  # a call this block did not admit (refused, or another guard's)
        _ADMITTED.set(None)
        if isinstance(event, LLMCallCompletedEvent):
            return  # its usage is read from the LLM's token summary before the next call
        _, call_id, model, agent = admitted
        try:  # the call was admitted but never answered: give its reservation back now, before any retry
            self.breaker.model_failed(model=model, agent=agent, call_id=call_id, error=event.error)
        except Exception:  # a sink must never break CrewAI's emit; the reservation then expires by itself
            logger.exception("loopguard could not release a failed model call's reservation")

    # -- usage -------------------------------------------------------------------------------------
    def _reconcile(self, llm: Any, *, next_agent: str | None = None, final: bool = False) -> None:
        """Record what ``llm`` spent since it was last looked at, for the agent that called it last."""
        summary = _usage_summary(llm)
        if summary is None:
            return
        prompt, completion = summary
        with self._lock:
            seen = self._usage.get(id(llm))
            if seen is None:
                # First sight: whatever it spent before this kickoff is not ours.
                seen = self._usage[id(llm)] = _LLMUsage(llm, prompt, completion)
                delta_in = delta_out = 0
            else:
                delta_in, delta_out = max(0, prompt - seen.prompt), max(0, completion - seen.completion)
                seen.prompt, seen.completion = prompt, completion
            spender, call_id = seen.agent, None
            if delta_in or delta_out:
                call_id, seen.call_id = seen.call_id, None  # its reservation is released by id, once
            if not final:
                seen.agent = next_agent
        if delta_in or delta_out:
            self.breaker.after_model(
                input_tokens=delta_in, output_tokens=delta_out, model=model_name(llm), agent=spender, call_id=call_id
            )

    def _admitted_call(self, llm: Any, call_id: str) -> None:
        with self._lock:
            seen = self._usage.get(id(llm))
            if seen is not None:
                seen.call_id = call_id

    def _reconcile_all(self) -> None:
        with self._lock:
            llms = [seen.llm for seen in self._usage.values()]
        for llm in llms:
            try:
                self._reconcile(llm, final=True)
            except Exception:
                logger.exception("loopguard could not record the last model call's usage")

    def __repr__(self) -> str:
        state = "tripped" if self._held else ("active" if self._run is not None else "idle")
        return f"<CrewGuard {state} breaker={self.breaker!r}>"


def _batch_of(ctx: Any, name: str, args: Any) -> str | None:
    """The model answer a tool call came in, named by its tool call ids, or None.

    CrewAI runs the native tool calls of one answer in parallel (a thread pool, unless a tool is
    ``result_as_answer`` or has ``max_usage_count``: then one by one, and no batch is named) and tells a hook
    neither the call's id nor the answer. The answer is the latest assistant message in the agent executor's state
    (appended before its calls run, their results after it); it is used only when exactly one of its calls is this
    one (same name and arguments), so a message of another execution of the same agent is never taken for it, and
    a call the answer repeats is judged without the batch (the core leaves out siblings that already reported, so
    an identical sibling that finished first would stop counting as a repeat). Siblings are then judged on the
    run as the model saw it.
    """
    executor = getattr(getattr(ctx, "agent", None), "agent_executor", None)
    messages = getattr(getattr(executor, "state", None), "messages", None)
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        calls = message.get("tool_calls")
        if not calls:
            return None  # the latest answer carried no native tool calls (ReAct text): one call at a time
        if len(calls) < 2 or not _parallel(executor, calls):
            return None  # one call, or run one by one (result_as_answer, max_usage_count): nothing to wait for
        ids, mine = [], 0
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not call.get("id"):
                return None
            ids.append(str(call["id"]))
            if function.get("name") == name and _same_args(function.get("arguments"), args):
                mine += 1
        # Exactly one: a call repeated within its own answer is judged without the batch (the core leaves out
        # siblings that reported, so an identical sibling that finished first would stop counting as a repeat).
        return "crewai:" + "|".join(ids) if mine == 1 else None
    return None


def _parallel(executor: Any, calls: list[Any]) -> bool:
    """Whether CrewAI runs these native calls in parallel (its own decision; False when it cannot be asked)."""
    decide = getattr(executor, "_should_parallelize_native_tool_calls", None)
    if not callable(decide):
        return False
    try:
        return bool(decide(list(calls)))
    except Exception:
        return False


def _same_args(arguments: Any, args: Any) -> bool:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments else {}
        except ValueError:
            return False
    return bool(arguments == args)


def _estimate(history: History, messages: Any) -> int:
    """``estimate_tokens(messages)``, reading only the messages ``history`` has not counted yet."""
    if isinstance(messages, list):
        return history.estimate(messages)
    return estimate_tokens(messages)


def _replace_input(tool_input: Any, edited: Any) -> bool:
    """Run the call with the arguments a person approved: CrewAI executes the very dict the hook was given."""
    if not isinstance(tool_input, dict) or not isinstance(edited, dict):
        return False
    tool_input.clear()
    tool_input.update(edited)
    return True


def _usage_summary(llm: Any) -> tuple[int, int] | None:
    getter = getattr(llm, "get_token_usage_summary", None)
    if not callable(getter):
        return None
    summary = getter()
    prompt = getattr(summary, "prompt_tokens", 0) or 0
    completion = getattr(summary, "completion_tokens", 0) or 0
    return int(prompt), int(completion)


def _tool_error(raw: Any) -> str | None:
    """The failure text when a tool call failed: CrewAI turns tool exceptions into this observation."""
    if isinstance(raw, ToolFailure):
        return str(raw.message)
    if isinstance(raw, str) and raw.startswith(_TOOL_ERROR_PREFIX):
        return raw
    return None


def _guard_failure(step: str, exc: Exception) -> BaseException:
    if isinstance(exc, LoopGuardTripped):
        return as_crewai_trip(exc)
    logger.error("loopguard %s failed inside a CrewAI hook; blocking and aborting the run", step, exc_info=exc)
    error = CrewAIGuardError(
        f"loopguard's {step} check failed ({type(exc).__name__}: {exc}); the call was blocked and the run "
        "stopped instead of running unguarded. Fix the cause shown above and run again."
    )
    error.__cause__ = exc
    return error


def _warn_about_global_hooks() -> None:
    """Warn when loopguard hooks were registered process-wide: they fire for every crew and double-count."""
    leftovers = [
        hook
        for point in _HOOK_POINTS
        for hook in get_hooks(point)
        if isinstance(getattr(hook, "__self__", None), CrewGuard)
    ]
    if leftovers:
        warnings.warn(
            f"{len(leftovers)} loopguard hook(s) are registered as CrewAI *global* hooks: they fire for every "
            "crew in this process, count calls twice inside guard_crew, and keep a stale breaker alive. "
            "Remove them (crewai.hooks.unregister_before_tool_call_hook / unregister_before_llm_call_hook, "
            "or clear_all_global_hooks()) and use `with guard_crew(breaker):` around kickoff instead.",
            LoopGuardWarning,
            stacklevel=3,
        )
