"""What the CrewAI adapter reads from CrewAI's hook contexts, and the context it shares with tools.

CrewAI copies the caller's ``contextvars`` into the worker threads that run hooks and tools, so a value set
around ``kickoff`` (the active guard) is visible to every hook and tool body of that kickoff.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopguard_core import Breaker

    from ._guard import CrewGuard

__all__ = [
    "ACTIVE_GUARD",
    "CURRENT_AGENT",
    "GUARDED_BODY",
    "agent_name",
    "declare",
    "max_output_tokens",
    "model_name",
    "steer_lock",
    "tool_args",
    "warn_unguarded_side_effect",
]

_STEER_LOCK = "loopguard.steer_lock"  # the key loopguard_langchain uses too: one lock per breaker
_DECLARED = "loopguard_crewai.declared"
_MEMORY = 4_096
#: set on a tool object whose body ``guarded_tool`` runs through ``Breaker.run_tool_body``
GUARDED_BODY = "__loopguard_guarded_body__"

#: the innermost guard_crew block of this context (seen by tool bodies on CrewAI's worker threads)
ACTIVE_GUARD: contextvars.ContextVar[CrewGuard | None] = contextvars.ContextVar("loopguard_crewai_guard", default=None)
#: the agent whose tool call the before-tool hook just admitted (a tool body runs right after it)
CURRENT_AGENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("loopguard_crewai_agent", default=None)


def agent_name(agent: object) -> str | None:
    """The name loopguard records for a CrewAI agent: its role (what CrewAI itself prints)."""
    if agent is None:
        return None
    role = getattr(agent, "role", None)
    if isinstance(role, str) and role:
        return role
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) and name else type(agent).__name__


def model_name(llm: object) -> str | None:
    model = getattr(llm, "model", None)
    if isinstance(model, str) and model:
        return model
    return llm if isinstance(llm, str) and llm else None


def max_output_tokens(llm: object) -> int:
    """The request's own output cap (0 when the LLM sets none); providers name it differently."""
    cap: Any = None
    effective = getattr(llm, "_effective_max_tokens", None)
    if callable(effective):
        try:
            cap = effective()
        except Exception:  # a provider quirk must not break the pre-flight check
            cap = None
    if cap is None:
        cap = getattr(llm, "max_tokens", None)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0 or cap != cap:
        return 0
    return int(cap) if cap < 2**62 else 0


def tool_args(tool_input: object) -> Any:
    """A stable copy of the tool's arguments (CrewAI lets hooks mutate the dict in place)."""
    if type(tool_input) is dict or isinstance(tool_input, Mapping):  # (a dict skips the ABC check)
        return dict(tool_input)
    return tool_input


def _original(tool: object) -> object:
    """The BaseTool behind CrewAI's CrewStructuredTool (what the user built), else the tool itself."""
    original = getattr(tool, "_original_tool", None)
    return original if original is not None else tool


def _seen(breaker: Breaker) -> dict[str, Any]:
    return breaker.attachment(_DECLARED, dict)


def declare(breaker: Breaker, name: str, tool: object) -> None:
    """Hand what a CrewAI tool says about itself to ``breaker.declare_tool``, once per tool name and breaker.

    Read: a ``metadata`` mapping on the tool (``{"loopguard": {"irreversible": True}}``, MCP annotation keys) and
    MCP ``annotations`` (a mapping or an object with ``readOnlyHint`` ...), on the tool or the BaseTool behind it.
    """
    seen = _seen(breaker)
    if name in seen:
        return
    facts: dict[str, Any] = {}
    for source in (_original(tool), tool):
        metadata = getattr(source, "metadata", None)
        if isinstance(metadata, Mapping):
            facts = {**metadata, **facts}
        annotations = getattr(source, "annotations", None)
        if annotations is not None and "annotations" not in facts:
            facts["annotations"] = annotations
    if facts:
        breaker.declare_tool(name, facts)
    if len(seen) >= _MEMORY:
        seen.clear()
    seen[name] = False  # not warned about yet


def warn_unguarded_side_effect(breaker: Breaker, name: str, tool: object) -> None:
    """A hook cannot run a tool's body at most once: say so (once per tool) when a side-effect tool is not wrapped."""
    if not breaker.tool_policy(name).side_effect:
        return
    if getattr(_original(tool), GUARDED_BODY, False) or getattr(tool, GUARDED_BODY, False):
        return
    seen = _seen(breaker)
    if seen.get(name):
        return
    seen[name] = True
    import warnings

    from loopguard_core import LoopGuardWarning

    warnings.warn(
        f"{name!r} is a side-effect tool, but a CrewAI hook cannot make its body run at most once: wrap the tool "
        "with loopguard_crewai.guarded_tool(breaker) (or decorate its function with "
        "loopguard_core.idempotency.side_effect) so a repeat gets the recorded outcome instead of running again.",
        LoopGuardWarning,
        stacklevel=2,
    )


def steer_lock(breaker: Breaker, on_trip: str = "steer") -> AbstractContextManager[object]:
    """Make one tool call's check and its steer one step for the other threads (``on_trip="steer"`` only).

    A refusal opens the breaker and ``Breaker.steer`` closes it again; CrewAI runs a turn's parallel native tool
    calls on worker threads, and a sibling checked in between would be refused as ``open`` and count as a refusal
    of its own. Only the pre-flight is held, never the tool body.
    """
    if on_trip != "steer":
        return nullcontext()
    return breaker.attachment(_STEER_LOCK, threading.RLock)
