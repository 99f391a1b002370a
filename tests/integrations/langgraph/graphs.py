"""Hand-built LangGraph graphs (model node -> [guard] -> tools) around the scripted fake model."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from loopguard_langchain.testing import ScriptedChatModel

__all__ = ["agent_graph"]


def agent_graph(model: ScriptedChatModel, tools_node: Any, *, guard: Any = None, checkpointer: Any = None) -> Any:
    """``agent -> tools -> agent ...``; with ``guard``: ``agent -> guard -> tools``."""

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", RunnableLambda(agent, afunc=aagent))
    graph.add_node("tools", tools_node)
    graph.add_edge(START, "agent")
    if guard is None:
        graph.add_conditional_edges("agent", tools_condition)
    else:
        graph.add_node("guard", guard, destinations=("tools", END))
        graph.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)
