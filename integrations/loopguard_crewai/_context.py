"""What the CrewAI adapter reads from CrewAI's hook contexts, and the context it shares with tools.

CrewAI copies the caller's ``contextvars`` into the worker threads that run hooks and tools, so a value set
around ``kickoff`` (the active guard) is visible to every hook and tool body of that kickoff.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._guard import CrewGuard

__all__ = [
    "ACTIVE_GUARD",
    "CURRENT_AGENT",
    "agent_name",
    "max_output_tokens",
    "model_name",
    "tool_args",
]

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
    if isinstance(tool_input, Mapping):
        return dict(tool_input)
    return tool_input
