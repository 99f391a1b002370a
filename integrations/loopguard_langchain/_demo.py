"""``loopguard demo`` for LangChain: a scripted runaway ``create_agent`` stopped by LoopGuardMiddleware."""

from __future__ import annotations

from typing import Any

__all__ = ["run_demo"]


def run_demo() -> dict[str, Any]:
    """Run an agent whose model asks for the same search forever; report where loopguard stopped it."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from loopguard_core import Breaker, LoopGuardTripped

    from ._scripted import RunawayChatModel
    from .middleware import LoopGuardMiddleware

    body_runs = 0

    @tool
    def search_docs(query: str) -> str:
        """Search the help-desk documents."""
        nonlocal body_runs
        body_runs += 1
        return f"No document matches {query!r}."

    model = RunawayChatModel()
    agent = create_agent(model, [search_docs], middleware=[LoopGuardMiddleware(Breaker())], name="support-agent")
    reason, caller_saw = "", "nothing (the run finished)"
    try:
        agent.invoke({"messages": [{"role": "user", "content": "What is the refund policy?"}]})
    except LoopGuardTripped as trip:
        reason, caller_saw = trip.reason, type(trip).__name__
    return {
        "framework": "langchain",
        "tool_body_runs": body_runs,
        "reason": reason,
        "caller_saw": caller_saw,
        "path": "sync invoke (create_agent + LoopGuardMiddleware)",
        "model_requests": model.calls,
    }
