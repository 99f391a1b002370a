"""A LangChain v1 agent that keeps searching for the same thing, stopped by loopguard before the fourth search.

    python examples/langchain_agent.py

No API key needed: a scripted model plays a runaway agent. With ANTHROPIC_API_KEY (or OPENAI_API_KEY) set
and the matching integration installed (pip install langchain-anthropic / langchain-openai), the same guarded
agent runs against the real model instead.

Shows both LangChain hooks: LoopGuardMiddleware (first in create_agent's middleware list) raising the trip, the
graceful on_trip="end", on_trip="steer" (the model is told why its call was refused and may change course; this
one never does, so it is stopped for good after max_refusals), and LoopGuardCallbackHandler passed through config
callbacks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_langchain import LoopGuardCallbackHandler, LoopGuardMiddleware


class RunawayModel(BaseChatModel):
    """The failure loopguard exists for: the model asks for the same search again and again."""

    max_tokens: int = 1024

    @property
    def _llm_type(self) -> str:
        return "scripted-runaway"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RunawayModel:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        call = {"name": "search_orders", "args": {"customer": "ACME", "status": "lost"}, "id": f"call_{len(messages)}"}
        usage = {"input_tokens": 420, "output_tokens": 35, "total_tokens": 455}
        return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call], usage_metadata=usage))])


def pick_model() -> Any:
    for key, name in (("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-6"), ("OPENAI_API_KEY", "openai:gpt-4o-mini")):
        if os.environ.get(key):
            try:
                from langchain.chat_models import init_chat_model

                return init_chat_model(name, max_tokens=1024)
            except ImportError as exc:
                print(f"{key} is set but {exc.name} is not installed; using the scripted model")
    return RunawayModel()


searches = 0


@tool
def search_orders(customer: str, status: str) -> str:
    """Search a customer's orders by status."""
    global searches
    searches += 1
    return f"No {status} orders found for {customer}."


def main() -> dict[str, Any]:
    global searches
    question = {"messages": [{"role": "user", "content": "Find ACME's lost order and tell me where it is."}]}
    report: dict[str, Any] = {}

    # 1. Middleware, raising: the fourth identical search is refused before it runs.
    searches = 0
    breaker = Breaker(max_tokens=50_000, max_turns=20)
    agent = create_agent(pick_model(), [search_orders], middleware=[LoopGuardMiddleware(breaker)], name="support")
    try:
        agent.invoke(question)
        print("middleware: the agent finished on its own")
    except LoopGuardTripped as trip:
        print(f"middleware: stopped after {searches} searches -> {trip}")
        report["middleware"] = {"reason": trip.reason, "searches": searches}
    print(f"  usage of that run: {breaker.usage()}")

    # 2. Middleware, on_trip="end": the agent ends normally with a message naming the trip.
    searches = 0
    agent = create_agent(
        pick_model(), [search_orders], middleware=[LoopGuardMiddleware(Breaker(), on_trip="end")], name="support"
    )
    final = agent.invoke(question)["messages"][-1].content
    print(f"on_trip='end': {searches} searches, last message: {final[:90]}...")
    report["end"] = {"searches": searches, "final": final}

    # 3. Middleware, on_trip="steer": each refused search is answered with a ToolMessage telling the model why and
    #    what to do instead, and the run goes on. A model that changes course finishes normally; this one keeps
    #    asking, so after max_refusals=2 refusals the run is stopped for good (reason "refusals").
    searches = 0
    breaker = Breaker(max_refusals=2)
    agent = create_agent(
        pick_model(), [search_orders], middleware=[LoopGuardMiddleware(breaker, on_trip="steer")], name="support"
    )
    try:
        agent.invoke(question)
        print("on_trip='steer': the agent changed course and finished")
    except LoopGuardTripped as trip:
        print(f"on_trip='steer': {searches} searches, the model was told {trip.limit} times, then {trip}")
        report["steer"] = {"reason": trip.reason, "searches": searches, "told": trip.limit}

    # 4. Callback handler (also works for plain graphs and the classic AgentExecutor).
    searches = 0
    agent = create_agent(pick_model(), [search_orders], name="support")
    try:
        agent.invoke(question, config={"callbacks": [LoopGuardCallbackHandler(Breaker())]})
    except LoopGuardTripped as trip:
        print(f"callback handler: stopped after {searches} searches -> reason {trip.reason!r}")
        report["handler"] = {"reason": trip.reason, "searches": searches}
    return report


if __name__ == "__main__":
    main()
