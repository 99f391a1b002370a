"""A hand-built LangGraph agent loop guarded two ways, runnable with no API key.

    python examples/langgraph_agent.py

1. ``guarded_tool_node``: a ToolNode whose calls are checked; the trip reaches the caller of invoke.
2. ``guard_node(on_trip="interrupt")``: the run pauses for a person (checkpointer + thread), who denies.

With ANTHROPIC_API_KEY (or OPENAI_API_KEY) set and langchain-anthropic (or langchain-openai) installed, the real
model is used instead of the scripted one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_langgraph import guard_node, guarded_tool_node


class RunawayModel(BaseChatModel):
    """The failure loopguard exists for: the model polls the same job status forever."""

    @property
    def _llm_type(self) -> str:
        return "scripted-runaway"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RunawayModel:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        call = {"name": "job_status", "args": {"job": "export-7"}, "id": f"call_{len(messages)}"}
        usage = {"input_tokens": 300, "output_tokens": 25, "total_tokens": 325}
        return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call], usage_metadata=usage))])


def pick_model(tools: list[Any]) -> Any:
    for key, name in (("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-6"), ("OPENAI_API_KEY", "openai:gpt-4o-mini")):
        if os.environ.get(key):
            try:
                from langchain.chat_models import init_chat_model

                return init_chat_model(name, max_tokens=1024).bind_tools(tools)
            except ImportError as exc:
                print(f"{key} is set but {exc.name} is not installed; using the scripted model")
    return RunawayModel()


polls = 0


@tool
def job_status(job: str) -> str:
    """Return the status of an export job."""
    global polls
    polls += 1
    return f"{job}: failed (quota exceeded)"  # the same answer every time: polling will not help


def build(tools_node: Any, guard: Any = None, checkpointer: Any = None) -> Any:
    model = pick_model([job_status])
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", tools_node)
    graph.add_edge(START, "agent")
    if guard is None:
        graph.add_conditional_edges("agent", tools_condition)
    else:
        graph.add_node("guard", guard, destinations=("tools", END))
        graph.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


def main() -> dict[str, Any]:
    global polls
    question = {"messages": [{"role": "user", "content": "Wait for export-7 to finish, then tell me."}]}
    report: dict[str, Any] = {}

    polls = 0
    graph = build(guarded_tool_node([job_status], Breaker()))
    try:
        graph.invoke(question)
    except LoopGuardTripped as trip:
        print(f"guarded_tool_node: stopped after {polls} polls -> {trip}")
        report["tool_node"] = {"reason": trip.reason, "polls": polls}

    polls = 0
    graph = build(
        ToolNode([job_status]), guard=guard_node(Breaker(), on_trip="interrupt"), checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "export-7"}}
    paused = graph.invoke(question, config)
    ask = paused["__interrupt__"][0].value["loopguard"]
    print(f"guard_node: paused after {polls} polls for a person: {ask['reason']} on {ask['tool']!r}")
    final = graph.invoke(Command(resume="deny"), config)["messages"][-1].content
    print(f"  the person denied; the run ended with: {final[:80]}...")
    report["interrupt"] = {"reason": ask["reason"], "polls": polls, "final": final}
    return report


if __name__ == "__main__":
    main()
