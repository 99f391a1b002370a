"""``loopguard demo`` for CrewAI: a scripted runaway crew stopped by ``guard_crew`` (no network, no key)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["run_demo"]

#: CrewAI's telemetry, trace upload and PyPI version check, off unless the user set them already
QUIET_CREWAI = {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep CrewAI's own console chatter about the aborted task out of the demo's report."""
    crewai_logger = logging.getLogger("crewai")
    level = crewai_logger.level
    crewai_logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        crewai_logger.setLevel(level)


def run_demo() -> dict[str, Any]:
    """Kick off a one-agent crew whose model asks for the same lookup forever; report where it stopped."""
    for name, value in QUIET_CREWAI.items():
        os.environ.setdefault(name, value)
    from crewai import Agent, Crew, Task
    from crewai.llms.base_llm import BaseLLM
    from crewai.tools import tool

    from loopguard_core import Breaker, LoopGuardTripped, estimate_tokens

    from ._guard import guard_crew

    class RunawayLLM(BaseLLM):
        """Answers every call with the same native tool call, and reports usage like a provider."""

        calls: int = 0

        def supports_function_calling(self) -> bool:
            return True

        def get_input_tokens_count(self, messages: Any, *args: Any, **kwargs: Any) -> int:
            return estimate_tokens(messages)  # BaseLLM's fallback logs a warning on every call

        def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls > 25:  # a bounded blast radius if the guard ever failed
                raise RuntimeError("the demo crew was not stopped")
            self._track_token_usage_internal({"prompt_tokens": 350, "completion_tokens": 40, "total_tokens": 390})
            arguments = json.dumps({"query": "refund policy"})
            return [
                {
                    "id": f"call_{self.calls}",
                    "type": "function",
                    "function": {"name": "search_docs", "arguments": arguments},
                }
            ]

    body_runs = 0

    @tool("search_docs")
    def search_docs(query: str) -> str:
        """Search the help-center documents."""
        nonlocal body_runs
        body_runs += 1
        return f"No document matches {query!r}."

    llm = RunawayLLM(model="scripted-runaway")
    agent = Agent(role="support", goal="answer", backstory="help desk", llm=llm, tools=[search_docs])
    crew = Crew(
        agents=[agent], tasks=[Task(description="What is the refund policy?", expected_output="it", agent=agent)]
    )
    reason, caller_saw = "", "nothing (the run finished)"
    try:
        with _quiet(), guard_crew(Breaker(max_tokens=20_000)):
            crew.kickoff()
    except LoopGuardTripped as trip:
        reason, caller_saw = trip.reason, type(trip).__name__
    return {
        "framework": "crewai",
        "tool_body_runs": body_runs,
        "reason": reason,
        "caller_saw": caller_saw,
        "path": "sync Crew.kickoff (guard_crew)",
        "model_requests": llm.calls,
    }
