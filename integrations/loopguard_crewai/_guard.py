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
- on leaving the block, a held trip that never reached the caller (no model call followed, or CrewAI
  raised its own error first) is raised then: a trip is never swallowed.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import warnings
from types import TracebackType
from typing import Any

from crewai.hooks import InterceptionPoint
from crewai.hooks.dispatch import get_hooks, get_scoped_hooks, register_scoped, scoped_hooks
from crewai.tools.tool_failure import ToolFailure

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning, estimate_tokens
from loopguard_core.runs import RunHandle

from ._context import ACTIVE_GUARD, CURRENT_AGENT, agent_name, max_output_tokens, model_name, tool_args
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


def guard_crew(breaker: Breaker, *, run_id: str | None = None) -> CrewGuard:
    """Guard every agent of every crew (or ``Agent.kickoff``) run inside the returned context.

    Use ``with guard_crew(breaker): crew.kickoff()`` or ``async with`` around ``await crew.akickoff()`` /
    ``kickoff_async()``. One breaker run is opened for the block (a nested block on the same breaker
    joins it), so all agents of the crew share one budget and one loop memory.
    """
    return CrewGuard(breaker, run_id=run_id)


class _LLMUsage:
    """What was last seen of one LLM instance's cumulative usage, and who called it last."""

    __slots__ = ("agent", "completion", "llm", "prompt")

    def __init__(self, llm: Any, prompt: int, completion: int) -> None:
        self.llm = llm
        self.prompt = prompt
        self.completion = completion
        self.agent: str | None = None


class CrewGuard:
    """The context manager behind :func:`guard_crew` (sync ``with`` and ``async with``)."""

    def __init__(self, breaker: Breaker, *, run_id: str | None = None) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"guard_crew needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        self.breaker = breaker
        self._run_id = run_id
        self._lock = threading.Lock()
        self._held: BaseException | None = None
        self._delivered = False
        self._admitted: dict[int, tuple[str, Any, str | None]] = {}
        self._usage: dict[int, _LLMUsage] = {}
        self._seen = 0  # hook calls, including those a nested block on the same breaker handled
        self._run: RunHandle | None = None
        self._scope: Any = None
        self._token: contextvars.Token[CrewGuard | None] | None = None

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
        self._token = ACTIVE_GUARD.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._reconcile_all()
        finally:
            self._close()
        if exc is None and self._seen == 0 and self._held is None:
            warnings.warn(
                "guard_crew saw no model or tool call inside its block. Run kickoff() inside the `with "
                "guard_crew(...)` block, in the same thread or a task/thread that copies the context "
                "(contextvars.copy_context().run); a kickoff started elsewhere is not guarded.",
                LoopGuardWarning,
                stacklevel=2,
            )
        held = self._held
        if held is None or exc is held:
            return
        if exc is None and self._delivered:
            return  # the caller chose to catch it inside the block: it reached them
        # CrewAI ended without another model call (or raised its own error first): raise the trip now.
        if exc is not None:
            raise held from exc
        raise held

    async def __aenter__(self) -> CrewGuard:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _close(self) -> None:
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
        """The trip (or guard failure) that stopped this kickoff, if any."""
        return self._held

    def hold(self, error: BaseException) -> None:
        """Stop the run at the next model call (used by guarded tools running inside this block)."""
        with self._lock:
            if self._held is None:
                self._held = error

    # -- hooks (sync; called on CrewAI's worker threads) --------------------------------------------
    def _mine(self) -> bool:
        # A nested guard_crew on the same breaker inherits our hooks; let the innermost one count.
        active = ACTIVE_GUARD.get()
        return active is None or active is self or active.breaker is not self.breaker

    def _before_tool_call(self, ctx: Any) -> bool | None:
        with self._lock:
            self._seen += 1
        if not self._mine():
            return None
        if self._held is not None:
            return False  # the run is being stopped: nothing else runs
        name = str(ctx.tool_name)
        args = tool_args(ctx.tool_input)
        agent = agent_name(ctx.agent)
        try:
            self.breaker.before_tool(name, args, agent=agent)
        except LoopGuardTripped as trip:
            self.hold(as_crewai_trip(trip))
            return False
        except Exception as exc:  # CrewAI would swallow it and run the tool unguarded: block instead
            self.hold(_guard_failure("before_tool", exc))
            return False
        with self._lock:
            self._admitted[id(ctx.tool_input)] = (name, args, agent)
        CURRENT_AGENT.set(agent)
        return None

    def _after_tool_call(self, ctx: Any) -> str | None:
        with self._lock:
            admitted = self._admitted.pop(id(ctx.tool_input), None)
        if admitted is None:
            held = self._held
            result = ctx.tool_result
            if held is not None and isinstance(result, str) and result.startswith(_BLOCKED_PREFIX):
                return f"{_BLOCKED_PREFIX}: {held}"  # tell the model (and traces) why
            return None
        name, args, agent = admitted
        raw = ctx.raw_tool_result if ctx.raw_tool_result is not None else ctx.tool_result
        error = _tool_error(raw)
        try:
            if error is not None:
                self.breaker.after_tool(name, args, error=error, agent=agent)
            else:
                self.breaker.after_tool(name, args, result=raw, agent=agent)
        except Exception as exc:
            self.hold(_guard_failure("after_tool", exc))
        return None

    def _before_llm_call(self, ctx: Any) -> bool | None:
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
        self._deliver()
        try:
            self.breaker.before_model(
                model=model_name(llm),
                estimated_input_tokens=estimate_tokens(ctx.messages),
                max_output_tokens=max_output_tokens(llm),
                agent=agent,
            )
        except LoopGuardTripped as trip:
            self.hold(as_crewai_trip(trip))
        except Exception as exc:
            self.hold(_guard_failure("before_model", exc))
        self._deliver()
        return None

    def _deliver(self) -> None:
        """Raise the held trip (a HookAborted: CrewAI lets it out of kickoff) before the model is called."""
        held = self._held
        if held is not None:
            self._delivered = True
            raise held

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
            spender = seen.agent
            if not final:
                seen.agent = next_agent
        if delta_in or delta_out:
            self.breaker.after_model(
                input_tokens=delta_in, output_tokens=delta_out, model=model_name(llm), agent=spender
            )

    def _reconcile_all(self) -> None:
        with self._lock:
            llms = [seen.llm for seen in self._usage.values()]
        for llm in llms:
            try:
                self._reconcile(llm, final=True)
            except Exception:
                logger.exception("loopguard could not record the last model call's usage")

    def __repr__(self) -> str:
        state = "tripped" if self._held is not None else ("active" if self._run is not None else "idle")
        return f"<CrewGuard {state} breaker={self.breaker!r}>"


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
