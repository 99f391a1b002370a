"""Two create_agent agents in one LangGraph graph share one breaker: a loop that spans agents is stopped.

    python examples/langgraph_multi_agent.py

The researcher searches three times and hands over; the writer repeats the same search, and its first repeat is
the fourth identical call of the run: refused, attributed to the writer, with the tool body run only three times.
No API key needed (scripted models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_langchain import LoopGuardMiddleware


class ScriptedModel(BaseChatModel):
    """Asks for ``searches`` identical searches, then answers (``searches=-1``: forever)."""

    searches: int = -1
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.turn += 1
        usage = {"input_tokens": 500, "output_tokens": 30, "total_tokens": 530}
        if self.searches != -1 and self.turn > self.searches:
            return ChatResult(
                generations=[ChatGeneration(message=AIMessage("notes handed over", usage_metadata=usage))]
            )
        call = {
            "name": "web_search",
            "args": {"q": "webhook retry best practices"},
            "id": f"call_{id(self)}_{self.turn}",
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call], usage_metadata=usage))])


searches: list[str] = []


@tool
def web_search(q: str) -> str:
    """Search the web."""
    searches.append(q)
    return "10 results about webhook retries"


def main() -> dict[str, Any]:
    searches.clear()
    breaker = Breaker(max_tokens=100_000)
    guard = LoopGuardMiddleware(breaker)  # one instance, first in both agents' middleware lists
    researcher = create_agent(ScriptedModel(searches=3), [web_search], middleware=[guard], name="researcher")
    writer = create_agent(ScriptedModel(), [web_search], middleware=[guard], name="writer")
    graph = StateGraph(MessagesState)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_edge(START, "researcher")
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", END)
    try:
        graph.compile().invoke({"messages": [{"role": "user", "content": "Write a note on webhook retries."}]})
        return {"stopped": False}
    except LoopGuardTripped as trip:
        usage = breaker.usage()
        print(f"stopped in agent {trip.agent!r} after {len(searches)} searches: {trip}")
        print(
            f"  one run for the whole graph: {usage.turns} model turns, {usage.tokens} tokens, {usage.tool_calls} tools"
        )
        return {"stopped": True, "agent": trip.agent, "reason": trip.reason, "searches": len(searches)}


if __name__ == "__main__":
    main()
