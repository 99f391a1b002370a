"""``guarded_run`` / ``guarded_run_sync``: one guarded agent run, with a breaker run around it."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic_ai.capabilities import AbstractCapability

from loopguard_core import Breaker, LoopGuardWarning

from ._capability import LoopGuardCapability

__all__ = ["guarded_run", "guarded_run_sync"]

_TOKEN_LIMITS = ("input_tokens_limit", "output_tokens_limit", "total_tokens_limit")


def _prepare(agent: Any, breaker: Breaker, run_kwargs: dict[str, Any], on_trip: str) -> dict[str, Any]:
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guarded_run needs a loopguard_core.Breaker as breaker, got {type(breaker).__name__}")
    guard = LoopGuardCapability(breaker, on_trip=on_trip)  # checks on_trip before anything runs
    if not callable(getattr(agent, "run", None)):
        raise TypeError(f"guarded_run needs a pydantic_ai Agent, got {type(agent).__name__}")
    _warn_post_response_limits(breaker, run_kwargs.get("usage_limits"))
    _warn_replaced_guard(agent, breaker)
    capabilities: list[AbstractCapability[Any]] = list(run_kwargs.pop("capabilities", None) or ())
    if not any(isinstance(c, LoopGuardCapability) and c.breaker is breaker for c in capabilities):
        capabilities.insert(0, guard)
    return {**run_kwargs, "capabilities": capabilities}


async def guarded_run(agent: Any, prompt: Any, breaker: Breaker, *, on_trip: str = "raise", **run_kwargs: Any) -> Any:
    """``await agent.run(prompt, **run_kwargs)`` with every tool call and model request checked by ``breaker``.

    Opens a breaker run for this invocation (joined when called inside another guarded run, e.g. by a
    parent agent's tool delegating to this agent with ``usage=ctx.usage``). A trip raises
    :class:`~loopguard_core.LoopGuardTripped` out of this call; ``breaker.usage()`` afterwards reports
    the run. ``on_trip="steer"`` answers a refused tool call with the refusal text instead and the run goes
    on (see :class:`LoopGuardCapability`); it applies when this call adds the capability (a
    ``LoopGuardCapability`` for the same breaker in ``capabilities`` keeps its own ``on_trip``).
    """
    kwargs = _prepare(agent, breaker, run_kwargs, on_trip)
    async with breaker.run():
        return await agent.run(prompt, **kwargs)


def guarded_run_sync(agent: Any, prompt: Any, breaker: Breaker, *, on_trip: str = "raise", **run_kwargs: Any) -> Any:
    """The synchronous twin of :func:`guarded_run` (``agent.run_sync``)."""
    kwargs = _prepare(agent, breaker, run_kwargs, on_trip)
    with breaker.run():
        return agent.run_sync(prompt, **kwargs)


def _warn_post_response_limits(breaker: Breaker, usage_limits: Any) -> None:
    # Pydantic AI checks token UsageLimits after the response: the call that crosses one is already paid.
    if usage_limits is None or breaker.limits.max_tokens is not None:
        return
    set_limits = [name for name in _TOKEN_LIMITS if getattr(usage_limits, name, None) is not None]
    if set_limits:
        warnings.warn(
            f"UsageLimits({', '.join(set_limits)}=...) is checked by Pydantic AI only after each response, so "
            "the request that crosses it has already been paid for. For a pre-flight token ceiling set "
            "Breaker(max_tokens=...) (and keep max_tokens in model_settings so each request's output is capped).",
            LoopGuardWarning,
            stacklevel=3,
        )


def _warn_replaced_guard(agent: Any, breaker: Breaker) -> None:
    # A run-level guard replaces an agent-level one with the same id: say so if it guards another breaker.
    root = getattr(agent, "root_capability", None)
    if root is None or not hasattr(root, "apply"):
        return
    found: list[LoopGuardCapability] = []
    root.apply(lambda cap: found.append(cap) if isinstance(cap, LoopGuardCapability) else None)
    for cap in found:
        if cap.breaker is not breaker and cap.id == "loopguard":
            warnings.warn(
                "this agent already has a LoopGuardCapability for a different breaker; for this run "
                "guarded_run's capability replaces it (same id 'loopguard'). Pass the agent's own breaker, "
                "or build one of them with LoopGuardCapability(breaker, id='...') to keep both.",
                LoopGuardWarning,
                stacklevel=3,
            )
