"""``loopguard demo`` for LangGraph: a scripted runaway graph stopped by ``guarded_tool_node``."""

from __future__ import annotations

from typing import Any, cast

__all__ = ["run_demo"]


def run_demo() -> dict[str, Any]:
    """Run ``agent -> tools -> agent ...`` whose model repeats one search; report where loopguard stopped it."""
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    from loopguard_core import Breaker, LoopGuardTripped
    from loopguard_langchain._scripted import RunawayChatModel

    from .tool_node import guarded_tool_node

    body_runs = 0

    @tool
    def search_docs(query: str) -> str:
        """Search the help-desk documents."""
        nonlocal body_runs
        body_runs += 1
        return f"No document matches {query!r}."

    model = RunawayChatModel()
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", guarded_tool_node([search_docs], Breaker()))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    reason, caller_saw = "", "nothing (the run finished)"
    try:
        graph.compile().invoke(cast(Any, {"messages": [{"role": "user", "content": "What is the refund policy?"}]}))
    except LoopGuardTripped as trip:
        reason, caller_saw = trip.reason, type(trip).__name__
    return {
        "framework": "langgraph",
        "tool_body_runs": body_runs,
        "reason": reason,
        "caller_saw": caller_saw,
        "path": "sync invoke (StateGraph + guarded_tool_node)",
        "model_requests": model.calls,
    }
