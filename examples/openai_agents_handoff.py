"""Two OpenAI Agents SDK agents sharing one breaker: a triage agent hands off to a researcher that loops.

    python examples/openai_agents_handoff.py

No API key needed: both agents run on the real ``OpenAIChatCompletionsModel`` over a scripted transport. With
OPENAI_API_KEY set, they use the real model ``gpt-4o-mini``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_openai.testing import scripted_client
from loopguard_openai_agents import guarded_run_sync

MODEL = "gpt-4o-mini"


def scripted_model(plan: Any) -> OpenAIChatCompletionsModel:
    """The real chat-completions model over a transport that answers with ``plan(n)``: a tool name or None."""
    replies = 0

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal replies
        replies += 1
        tool, args = plan(replies)
        message: dict[str, Any] = {"role": "assistant", "content": None if tool else "done"}
        if tool:
            function = {"name": tool, "arguments": json.dumps(args)}
            message["tool_calls"] = [{"id": f"{id(plan)}_{replies}", "type": "function", "function": function}]
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}
        usage = {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}
        body = {"id": f"c{replies}", "object": "chat.completion", "created": 0, "model": MODEL, "choices": [choice]}
        return {**body, "usage": usage}

    client: AsyncOpenAI = scripted_client(answer, asynchronous=True)
    return OpenAIChatCompletionsModel(model=MODEL, openai_client=client)


def main() -> dict[str, Any]:
    real = bool(os.environ.get("OPENAI_API_KEY"))
    if not real:
        set_tracing_disabled(True)
    searches: dict[str, int] = {"n": 0}

    @function_tool
    def search_docs(q: str) -> str:
        """Search the help-center articles."""
        searches["n"] += 1
        return "No article matches."

    def researcher_plan(n: int) -> tuple[str | None, dict[str, Any]]:
        return ("search_docs", {"q": "refund policy"}) if n <= 25 else (None, {})

    def triage_plan(n: int) -> tuple[str | None, dict[str, Any]]:
        return ("transfer_to_researcher", {}) if n == 1 else (None, {})

    researcher = Agent(
        name="researcher",
        instructions="Answer with the help-center articles.",
        model=MODEL if real else scripted_model(researcher_plan),
        tools=[search_docs],
    )
    triage = Agent(
        name="triage",
        instructions="Hand research questions to the researcher.",
        model=MODEL if real else scripted_model(triage_plan),
        handoffs=[researcher],
    )
    breaker = Breaker(max_tokens=60_000)
    report: dict[str, Any] = {"stopped": False}
    try:
        result = guarded_run_sync(triage, "What is the refund policy?", breaker)
        print(f"The agents finished on their own: {result.final_output}")
    except LoopGuardTripped as trip:
        report.update(stopped=True, reason=trip.reason, agent=trip.agent)
        print(f"loopguard stopped the run in {trip.agent!r}: {trip}")
    report["searches"] = searches["n"]
    print(f"search_docs ran {searches['n']} times.")
    return report


if __name__ == "__main__":
    main()
