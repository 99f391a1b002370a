"""``guarded_tool(breaker)``: guard one CrewAI tool's body.

The check runs inside the tool, right before its body, so it only sees the calls that reach the body:

- CrewAI's result cache (``Agent(cache=True)``, the default) would answer repeats without running the
  body, so the guarded copy opts out of the cache (its ``cache_function`` never caches);
- the ReAct (text) path short-circuits an identical consecutive call ("I tried reusing the same input")
  before the body: those repeats cost model calls the body guard cannot see (``guard_crew`` does);
- a refused call does not raise into CrewAI, which would turn the exception into an observation, re-invoke
  the tool up to six times on the ReAct path, or rewrap it under ``tool_failure_policy="raise"``. The body
  does not run, the model is told why, and the trip stops the run at its next model call through CrewAI's
  ``HookAborted`` channel: via the enclosing ``guard_crew`` block, or else via a process-wide relay hook
  keyed to this run's CrewAI execution id (see ``_relay``). Called outside any CrewAI run, it raises.

The body runs through ``Breaker.run_tool_body``: a ``ToolPolicy(side_effect=True)`` tool at most once per
idempotency key (a repeat gets the recorded outcome), also inside ``guard_crew``, whose hooks cannot wrap a body.
A gated call (``irreversible``) waits for a person as in ``guard_crew``; an approval with edited arguments runs
the body with them (by keyword).

``on_trip="steer"``: the refused call's body does not run and the tool returns ``Breaker.steer``'s text (why it
was refused, what to do instead) as its result; the run goes on. When the core says the run must stop (a budget
ceiling, or ``max_refusals`` reached) that trip travels exactly as above. Inside ``guard_crew`` on the same
breaker the block's hooks decide, with the block's ``on_trip``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from crewai.execution import get_execution_uuid
from crewai.tools import BaseTool
from crewai.tools.base_tool import Tool
from crewai.utilities.string_utils import sanitize_tool_name

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning

from . import _relay
from ._context import ACTIVE_GUARD, CURRENT_AGENT, GUARDED_BODY, steer_lock
from ._errors import CrewAILoopGuardTripped, as_crewai_trip

__all__ = ["guarded_tool"]

T = TypeVar("T")
_ON_TRIP = ("raise", "steer")


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    return False  # a cached call never reaches the guard


def guarded_tool(breaker: Breaker, *, name: str | None = None, on_trip: str = "raise") -> Callable[[T], T]:
    """Decorate a CrewAI tool so ``breaker`` checks each call before the body and records its result.

    Accepts a ``@tool`` object, a ``BaseTool`` instance or subclass, or a plain function (put
    ``@tool`` above ``@guarded_tool(...)`` then). Returns a guarded copy; the original is untouched.
    ``name`` overrides the tool name the breaker records (default: the tool's own name).
    ``on_trip="steer"`` returns the refusal text as the refused call's result and lets the run go on.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(
            "guarded_tool needs a loopguard_core.Breaker: write @guarded_tool(breaker), not @guarded_tool "
            f"(got {type(breaker).__name__})"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if on_trip not in _ON_TRIP:
        raise ValueError(f"on_trip must be 'raise' or 'steer', got {on_trip!r}")
    policy = _Policy(breaker, on_trip)

    def decorate(target: T) -> T:
        _relay.install()  # before any agent executor is built: they copy global model hooks then
        if isinstance(target, Tool):
            return _guard_tool_object(target, policy, name)  # type: ignore[return-value]
        if isinstance(target, BaseTool):
            return _guard_tool_instance(target, policy, name)  # type: ignore[return-value]
        if isinstance(target, type) and issubclass(target, BaseTool):
            return _guarded_subclass(target, policy, name)  # type: ignore[return-value]
        if callable(target):
            return _guard_function(target, policy, name or getattr(target, "__name__", None))  # type: ignore[return-value]
        raise TypeError(f"guarded_tool decorates a CrewAI tool or a function, got {type(target).__name__}")

    return decorate


# -- the check around one call ---------------------------------------------------------------------
class _Policy:
    """What one ``guarded_tool(...)`` decoration checks with, and what it does with a refusal."""

    __slots__ = ("breaker", "on_trip")

    def __init__(self, breaker: Breaker, on_trip: str) -> None:
        self.breaker = breaker
        self.on_trip = on_trip


def _skip(breaker: Breaker) -> bool:
    # Inside guard_crew on the same breaker, its before/after-tool hooks already check and record this call.
    guard = ACTIVE_GUARD.get()
    return guard is not None and guard.breaker is breaker


def _run_guarded(
    policy: _Policy,
    tool: str,
    args: Any,
    invoke: Callable[[], Any],
    call_with: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    breaker = policy.breaker
    if _skip(breaker):  # guard_crew's hooks checked the call (and wrote edited arguments into it)
        return breaker.run_tool_body(tool, args, invoke)
    agent = CURRENT_AGENT.get()
    with steer_lock(breaker, policy.on_trip):
        try:
            approval = breaker.before_tool(tool, args, agent=agent)
        except LoopGuardTripped as trip:
            if policy.on_trip == "steer":
                try:
                    return breaker.steer(trip)  # the model reads why; the run goes on
                except LoopGuardTripped as stop:  # a budget ceiling, or too many refusals (or a person to ask)
                    return _refuse(stop)
            return _refuse(trip)
    run, run_args = _edited(approval, args, invoke, call_with)
    try:
        result = breaker.run_tool_body(tool, run_args, run)
    except Exception as exc:
        breaker.after_tool(tool, args, error=exc, agent=agent)
        raise
    breaker.after_tool(tool, args, result=result, agent=agent)
    return result


async def _arun_guarded(
    policy: _Policy,
    tool: str,
    args: Any,
    invoke: Callable[[], Awaitable[Any]],
    call_with: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
) -> Any:
    breaker = policy.breaker
    if _skip(breaker):
        return await breaker.arun_tool_body(tool, args, invoke)
    agent = CURRENT_AGENT.get()
    try:
        approval = await breaker.abefore_tool(tool, args, agent=agent)
    except LoopGuardTripped as trip:
        if policy.on_trip == "steer":
            try:
                return await breaker.asteer(trip)
            except LoopGuardTripped as stop:
                return _refuse(stop)
        return _refuse(trip)
    run, run_args = _edited(approval, args, invoke, call_with)
    try:
        result = await breaker.arun_tool_body(tool, run_args, run)
    except Exception as exc:
        await breaker.aafter_tool(tool, args, error=exc, agent=agent)
        raise
    await breaker.aafter_tool(tool, args, result=result, agent=agent)
    return result


def _edited(
    approval: Any, args: Any, invoke: Callable[[], T], call_with: Callable[[dict[str, Any]], T] | None
) -> tuple[Callable[[], T], Any]:
    """The body to run and its arguments: with the arguments a person gave on approval, if any."""
    changed = None if approval is None else approval.args()
    if changed is None:
        return invoke, args
    if call_with is None or not isinstance(changed, dict):
        raise as_crewai_trip(
            LoopGuardTripped(
                "approval_rejected",
                f"a person approved {approval.tool!r} with edited arguments that this tool cannot take by name; "
                "the call was not made",
                tool=approval.tool,
                request_id=approval.id,
                decided_by=approval.decided_by,
                decision_reason="edited arguments could not be applied",
            )
        )
    return (lambda: call_with(changed)), changed


def _refuse(trip: LoopGuardTripped) -> str:
    error = as_crewai_trip(trip)
    guard = ACTIVE_GUARD.get()
    if guard is not None:
        guard.hold(error)  # its before-model hook raises it; its block raises it at exit otherwise
        return _refusal(error)
    execution = get_execution_uuid()
    if execution is None:
        raise error  # called directly, not by a CrewAI run: the caller gets it now
    if not _relay.install():
        warnings.warn(
            "loopguard's CrewAI relay hook had been removed (clear_all_global_hooks()?): this run's agents "
            "were built without it, so the trip may only block this tool. Wrap kickoff in `with "
            "guard_crew(breaker):` to stop the whole run.",
            LoopGuardWarning,
            stacklevel=2,
        )
    _relay.hold(execution, error)
    return _refusal(error)


# Each refusal's text is its own: CrewAI stops a run after five identical (tool, arguments, result) in a row, and
# under tool_failure_policy="raise" (before crewai 1.15.44, under every policy) with ToolExecutionFailedError,
# before the next model call could raise the trip; it then ends the run instead of the trip. Refusals that differ
# never make that streak, so the trip reaches the caller at the next model call.
_REFUSALS = itertools.count(1)


def _refusal(error: CrewAILoopGuardTripped) -> str:
    return (
        f"{error} This tool call was not made (refusal #{next(_REFUSALS)}); stop calling tools and give your final "
        "answer."
    )


def _call_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args:
        return dict(kwargs)
    return {"args": list(args), **kwargs}


# -- the four shapes of a CrewAI tool ----------------------------------------------------------------
def _guard_function(func: Callable[..., Any], policy: _Policy, name: str | None) -> Callable[..., Any]:
    if not name:
        raise TypeError("guarded_tool could not tell the tool's name; pass guarded_tool(breaker, name=...)")
    tool = sanitize_tool_name(name)
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None

    def named(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if signature is not None and args:
            try:
                return dict(signature.bind_partial(*args, **kwargs).arguments)
            except TypeError:
                pass
        return _call_args(args, kwargs)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def aguarded(*args: Any, **kwargs: Any) -> Any:
            return await _arun_guarded(
                policy, tool, named(args, kwargs), lambda: func(*args, **kwargs), lambda edited: func(**edited)
            )

        setattr(aguarded, GUARDED_BODY, True)
        return aguarded

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        return _run_guarded(
            policy, tool, named(args, kwargs), lambda: func(*args, **kwargs), lambda edited: func(**edited)
        )

    setattr(guarded, GUARDED_BODY, True)
    return guarded


def _guard_tool_object(tool: Tool[..., Any], policy: _Policy, name: str | None) -> Tool[..., Any]:
    _warn_result_as_answer(tool)
    func = _guard_function(tool.func, policy, name or tool.name)
    guarded = tool.model_copy(update={"func": func, "cache_function": _never_cache})
    object.__setattr__(guarded, GUARDED_BODY, True)
    return guarded


def _guard_tool_instance(tool: BaseTool, policy: _Policy, name: str | None) -> BaseTool:
    _warn_result_as_answer(tool)
    guarded = tool.model_copy(update={"cache_function": _never_cache})
    object.__setattr__(guarded, "__class__", _guarded_subclass(type(tool), policy, name))
    return guarded


def _guarded_subclass(cls: type[BaseTool], policy: _Policy, name: str | None) -> type[BaseTool]:
    def tool_name(self: BaseTool) -> str:
        return sanitize_tool_name(name or self.name)

    def _run(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        return _run_guarded(
            policy,
            tool_name(self),
            _call_args(args, kwargs),
            lambda: cls._run(self, *args, **kwargs),
            lambda edited: cls._run(self, **edited),
        )

    namespace: dict[str, Any] = {
        GUARDED_BODY: True,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_run": _run,
    }
    if cls._arun is not BaseTool._arun:  # only where the tool really has an async body

        async def _arun(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
            return await _arun_guarded(
                policy,
                tool_name(self),
                _call_args(args, kwargs),
                lambda: cls._arun(self, *args, **kwargs),
                lambda edited: cls._arun(self, **edited),
            )

        namespace["_arun"] = _arun

    def model_post_init(self: BaseTool, context: Any, /) -> None:
        cls.model_post_init(self, context)
        _warn_result_as_answer(self)
        self.cache_function = _never_cache

    namespace["model_post_init"] = model_post_init
    return type(cls.__name__, (cls,), namespace)


def _warn_result_as_answer(tool: BaseTool) -> None:
    if getattr(tool, "result_as_answer", False):
        warnings.warn(
            f"guarded_tool: {tool.name!r} has result_as_answer=True, so a refused call's message would become "
            "the task's final answer and no model call follows to raise the trip. Run the crew inside "
            "`with guard_crew(breaker):`, which raises the trip when the block ends.",
            LoopGuardWarning,
            stacklevel=4,
        )
