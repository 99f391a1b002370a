"""A Pydantic AI agent that keeps searching for the same thing, stopped by loopguard before the fourth search.

    python examples/pydantic_ai_agent.py

No API key needed: a scripted model plays a runaway agent. With ANTHROPIC_API_KEY (or OPENAI_API_KEY) set,
the same guarded agent runs against the real model instead.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_pydantic_ai import guarded_run_sync


def pick_model() -> Any:
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic:claude-sonnet-4-6"
    if os.environ.get("OPENAI_API_KEY"):
        return "openai:gpt-4o-mini"

    # The failure loopguard exists for: the model asks for the same search again and again.
    def runaway(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(
            parts=[ToolCallPart("search_orders", {"customer": "ACME", "status": "lost"})],
            usage=RequestUsage(input_tokens=420, output_tokens=35),
        )

    return FunctionModel(runaway, model_name="scripted-runaway")


def main() -> dict[str, Any]:
    agent = Agent(
        pick_model(),
        name="support-agent",
        instructions="Find ACME's lost order. Keep searching until you find it.",
    )
    searches = 0

    @agent.tool_plain
    def search_orders(customer: str, status: str) -> str:
        """Search the order database."""
        nonlocal searches
        searches += 1
        return f"No {status} orders found for {customer}."

    breaker = Breaker(max_tokens=50_000, max_turns=20)
    report: dict[str, Any] = {"searches": searches, "stopped": False}
    try:
        result = guarded_run_sync(agent, "Where is ACME's order?", breaker, model_settings={"max_tokens": 1024})
        print(f"The agent finished on its own: {result.output}")
    except LoopGuardTripped as trip:
        report.update(stopped=True, reason=trip.reason, message=str(trip))
        print(f"loopguard stopped the run: {trip}")
    usage = breaker.usage()
    report.update(searches=searches, turns=usage.turns, tokens=usage.tokens)
    print(f"search_orders ran {searches} times; {usage.turns} model requests, {usage.tokens} tokens.")
    return report


if __name__ == "__main__":
    main()
