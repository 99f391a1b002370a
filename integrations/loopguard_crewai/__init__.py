"""loopguard for CrewAI: stop a runaway crew before the next tool body or model call runs.

::

    from loopguard_core import Breaker
    from loopguard_crewai import guard_crew

    breaker = Breaker(max_turns=40, max_cost_usd=2.00)
    with guard_crew(breaker):            # also `async with`, around kickoff_async / akickoff
        result = crew.kickoff()          # raises CrewAILoopGuardTripped (a LoopGuardTripped) on a trip

``guard_crew`` installs CrewAI *scoped* hooks (never process-global ones) for every agent that runs inside
the block. A refused tool call is blocked before its body runs, and the run is aborted at the next model
call through CrewAI's own ``HookAborted`` channel, the only exception CrewAI lets out of a hook.
``guarded_tool(breaker)`` guards one tool's body instead. See docs/frameworks/crewai.md. For tests,
``loopguard_crewai.testing.ScriptedLLM`` is a scripted fake LLM (not imported here).
"""

from __future__ import annotations

from loopguard_core._extras import require

require("crewai", extra="crewai", purpose="loopguard_crewai (the CrewAI adapter)")

from ._errors import CrewAIApprovalRequired, CrewAIGuardError, CrewAILoopGuardTripped  # noqa: E402
from ._guard import CrewGuard, guard_crew  # noqa: E402
from ._tool import guarded_tool  # noqa: E402

__all__ = [
    "CrewAIApprovalRequired",
    "CrewAIGuardError",
    "CrewAILoopGuardTripped",
    "CrewGuard",
    "guard_crew",
    "guarded_tool",
]
