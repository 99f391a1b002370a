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
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from crewai.execution import get_execution_uuid
from crewai.tools import BaseTool
from crewai.tools.base_tool import Tool
from crewai.utilities.string_utils import sanitize_tool_name

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning

from . import _relay
from ._context import ACTIVE_GUARD, CURRENT_AGENT
from ._errors import CrewAILoopGuardTripped, as_crewai_trip

__all__ = ["guarded_tool"]

T = TypeVar("T")


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    return False  # a cached call never reaches the guard


def guarded_tool(breaker: Breaker, *, name: str | None = None) -> Callable[[T], T]:
    """Decorate a CrewAI tool so ``breaker`` checks each call before the body and records its result.

    Accepts a ``@tool`` object, a ``BaseTool`` instance or subclass, or a plain function (put
    ``@tool`` above ``@guarded_tool(...)`` then). Returns a guarded copy; the original is untouched.
    ``name`` overrides the tool name the breaker records (default: the tool's own name).
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(
            "guarded_tool needs a loopguard_core.Breaker: write @guarded_tool(breaker), not @guarded_tool "
            f"(got {type(breaker).__name__})"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str, got {name!r}")

    def decorate(target: T) -> T:
        _relay.install()  # before any agent executor is built: they copy global model hooks then
        if isinstance(target, Tool):
            return _guard_tool_object(target, breaker, name)  # type: ignore[return-value]
        if isinstance(target, BaseTool):
            return _guard_tool_instance(target, breaker, name)  # type: ignore[return-value]
        if isinstance(target, type) and issubclass(target, BaseTool):
            return _guarded_subclass(target, breaker, name)  # type: ignore[return-value]
        if callable(target):
            return _guard_function(target, breaker, name or getattr(target, "__name__", None))  # type: ignore[return-value]
        raise TypeError(f"guarded_tool decorates a CrewAI tool or a function, got {type(target).__name__}")

    return decorate


# -- the check around one call ---------------------------------------------------------------------
def _skip(breaker: Breaker) -> bool:
    # Inside guard_crew on the same breaker, its before/after-tool hooks already check and record this call.
    guard = ACTIVE_GUARD.get()
    return guard is not None and guard.breaker is breaker


def _run_guarded(breaker: Breaker, tool: str, args: Any, invoke: Callable[[], Any]) -> Any:
    if _skip(breaker):
        return invoke()
    agent = CURRENT_AGENT.get()
    try:
        breaker.before_tool(tool, args, agent=agent)
    except LoopGuardTripped as trip:
        return _refuse(trip)
    try:
        result = invoke()
    except Exception as exc:
        breaker.after_tool(tool, args, error=exc, agent=agent)
        raise
    breaker.after_tool(tool, args, result=result, agent=agent)
    return result


async def _arun_guarded(breaker: Breaker, tool: str, args: Any, invoke: Callable[[], Awaitable[Any]]) -> Any:
    if _skip(breaker):
        return await invoke()
    agent = CURRENT_AGENT.get()
    try:
        await breaker.abefore_tool(tool, args, agent=agent)
    except LoopGuardTripped as trip:
        return _refuse(trip)
    try:
        result = await invoke()
    except Exception as exc:
        await breaker.aafter_tool(tool, args, error=exc, agent=agent)
        raise
    await breaker.aafter_tool(tool, args, result=result, agent=agent)
    return result


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
            "were built without it, so the trip only blocks this tool. Wrap kickoff in `with "
            "guard_crew(breaker):` to stop the whole run.",
            LoopGuardWarning,
            stacklevel=2,
        )
    _relay.hold(execution, error)
    return _refusal(error)


def _refusal(error: CrewAILoopGuardTripped) -> str:
    return f"{error} This tool call was not made; stop calling tools and give your final answer."


def _call_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args:
        return dict(kwargs)
    return {"args": list(args), **kwargs}


# -- the four shapes of a CrewAI tool ----------------------------------------------------------------
def _guard_function(func: Callable[..., Any], breaker: Breaker, name: str | None) -> Callable[..., Any]:
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
            return await _arun_guarded(breaker, tool, named(args, kwargs), lambda: func(*args, **kwargs))

        return aguarded

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        return _run_guarded(breaker, tool, named(args, kwargs), lambda: func(*args, **kwargs))

    return guarded


def _guard_tool_object(tool: Tool[..., Any], breaker: Breaker, name: str | None) -> Tool[..., Any]:
    _warn_result_as_answer(tool)
    func = _guard_function(tool.func, breaker, name or tool.name)
    return tool.model_copy(update={"func": func, "cache_function": _never_cache})


def _guard_tool_instance(tool: BaseTool, breaker: Breaker, name: str | None) -> BaseTool:
    _warn_result_as_answer(tool)
    guarded = tool.model_copy(update={"cache_function": _never_cache})
    object.__setattr__(guarded, "__class__", _guarded_subclass(type(tool), breaker, name))
    return guarded


def _guarded_subclass(cls: type[BaseTool], breaker: Breaker, name: str | None) -> type[BaseTool]:
    def tool_name(self: BaseTool) -> str:
        return sanitize_tool_name(name or self.name)

    def _run(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        return _run_guarded(breaker, tool_name(self), _call_args(args, kwargs), lambda: cls._run(self, *args, **kwargs))

    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_run": _run,
    }
    if cls._arun is not BaseTool._arun:  # only where the tool really has an async body

        async def _arun(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
            return await _arun_guarded(
                breaker, tool_name(self), _call_args(args, kwargs), lambda: cls._arun(self, *args, **kwargs)
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
