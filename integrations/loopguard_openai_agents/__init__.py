"""loopguard for the OpenAI Agents SDK: ``LoopGuardHooks`` and the ``guarded_run*`` wrappers.

Install with ``pip install "loopguard-core[openai-agents]"``. See docs/frameworks/openai-agents.md.
"""

from __future__ import annotations

from loopguard_core._extras import require

require("agents", extra="openai-agents", purpose="Guarding OpenAI Agents SDK runs")

from ._hooks import LoopGuardHooks  # noqa: E402  (after the extra check, on purpose)
from ._run import (  # noqa: E402
    GuardedStream,
    agent_tool,
    find_trip,
    guarded_run,
    guarded_run_streamed,
    guarded_run_sync,
    tool_guardrail,
)

__all__ = [
    "GuardedStream",
    "LoopGuardHooks",
    "agent_tool",
    "find_trip",
    "guarded_run",
    "guarded_run_streamed",
    "guarded_run_sync",
    "tool_guardrail",
]
