"""``loopguard demo`` for Pydantic AI: a scripted runaway agent stopped by ``guarded_run_sync`` (no network)."""

from __future__ import annotations

from typing import Any

__all__ = ["run_demo"]


def run_demo() -> dict[str, Any]:
    """Run an agent whose model asks for the same lookup forever; report where loopguard stopped it."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage

    from loopguard_core import Breaker, LoopGuardTripped

    from ._run import guarded_run_sync

    requests = 0

    def runaway_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal requests
        requests += 1
        if requests > 25:  # a bounded blast radius if the guard ever failed
            raise RuntimeError("the demo agent was not stopped")
        return ModelResponse(
            parts=[ToolCallPart("search_docs", {"query": "refund policy"})],
            usage=RequestUsage(input_tokens=350, output_tokens=40),
        )

    agent = Agent(FunctionModel(runaway_model, model_name="scripted-runaway"), name="support-agent")
    body_runs = 0

    @agent.tool_plain
    def search_docs(query: str) -> str:
        nonlocal body_runs
        body_runs += 1
        return "No document matches 'refund policy'."

    breaker = Breaker(max_tokens=20_000)
    reason, caller_saw = "", "nothing (the run finished)"
    try:
        guarded_run_sync(agent, "What is the refund policy?", breaker, model_settings={"max_tokens": 512})
    except LoopGuardTripped as trip:
        reason, caller_saw = trip.reason, type(trip).__name__
    return {
        "framework": "pydantic-ai",
        "tool_body_runs": body_runs,
        "reason": reason,
        "caller_saw": caller_saw,
        "path": "sync run_sync (guarded_run_sync)",
        "model_requests": requests,
    }
