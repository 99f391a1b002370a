"""A CrewAI agent that keeps searching for the same order, stopped by loopguard before the fourth search.

    python examples/crewai_agent.py

No API key needed: a scripted model plays a runaway agent. With ANTHROPIC_API_KEY (or OPENAI_API_KEY) set,
the same guarded crew runs against the real model instead.
"""

from __future__ import annotations

import os
from typing import Any

# CrewAI's anonymous telemetry, trace upload and version check stay off unless you turned them on.
for _name, _value in {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}.items():
    os.environ.setdefault(_name, _value)

from crewai import LLM, Agent, Crew, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402

from loopguard_core import Breaker, LoopGuardTripped  # noqa: E402
from loopguard_crewai import guard_crew  # noqa: E402


def pick_llm() -> Any:
    if os.environ.get("ANTHROPIC_API_KEY"):
        return LLM(model="anthropic/claude-sonnet-4-6", max_tokens=1024)
    if os.environ.get("OPENAI_API_KEY"):
        return LLM(model="openai/gpt-4o-mini", max_tokens=1024)
    from loopguard_crewai.testing import ScriptedLLM

    # The failure loopguard exists for: the model asks for the same search again and again.
    return ScriptedLLM(loop=("search_orders", {"customer": "ACME", "status": "lost"}), max_tokens=1024)


def main() -> dict[str, Any]:
    searches = 0

    @tool("search_orders")
    def search_orders(customer: str, status: str) -> str:
        """Search the order database by customer and status."""
        nonlocal searches
        searches += 1
        return f"No {status} orders found for {customer}."

    agent = Agent(
        role="support",
        goal="Find ACME's lost order. Keep searching until you find it.",
        backstory="A persistent support agent.",
        llm=pick_llm(),
        tools=[search_orders],
    )
    task = Task(description="Where is ACME's lost order?", expected_output="the order's status", agent=agent)
    crew = Crew(agents=[agent], tasks=[task])

    breaker = Breaker(max_tokens=50_000, max_turns=20)
    report: dict[str, Any] = {"stopped": False}
    try:
        with guard_crew(breaker):
            result = crew.kickoff()
        print(f"The crew finished on its own: {result}")
    except LoopGuardTripped as trip:
        report.update(stopped=True, reason=trip.reason, message=str(trip))
        print(f"\nloopguard stopped the crew: {trip}")
    usage = breaker.usage()
    report.update(searches=searches, turns=usage.turns, tokens=usage.tokens)
    print(f"search_orders ran {searches} times; {usage.turns} model calls, {usage.tokens} tokens.")
    return report


if __name__ == "__main__":
    main()
