"""An OpenAI chat-completions agent loop that keeps searching for the same thing, stopped by loopguard.

    python examples/openai_agent.py

No API key needed: a scripted API (an httpx mock transport under the real ``openai`` client) plays a runaway
model. With OPENAI_API_KEY set, the same guarded client talks to the real API.
"""

from __future__ import annotations

import json
import os
from typing import Any

import openai

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_openai import guard
from loopguard_openai import testing as openai_testing

MODEL = "gpt-4o-mini"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "description": "Search the order database for a customer's lost orders.",
            "parameters": {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]},
        },
    }
]


def scripted_client() -> openai.OpenAI:
    """A real client whose transport answers every request with the same tool call."""
    replies = 0

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal replies
        replies += 1
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if replies <= 25:  # a bounded blast radius if the guard ever failed
            arguments = json.dumps({"customer": "ACME"})
            call = {
                "id": f"call_{replies}",
                "type": "function",
                "function": {"name": "search_orders", "arguments": arguments},
            }
            message["tool_calls"] = [call]
        else:
            message["content"] = "giving up"
        return {
            "id": f"chatcmpl-{replies}",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if replies <= 25 else "stop"}],
            "usage": {"prompt_tokens": 480, "completion_tokens": 45, "total_tokens": 525},
        }

    client: openai.OpenAI = openai_testing.scripted_client(answer)
    return client


def main() -> dict[str, Any]:
    client = openai.OpenAI() if os.environ.get("OPENAI_API_KEY") else scripted_client()
    breaker = Breaker(max_tokens=60_000, max_turns=25)
    guarded = guard(client, breaker, agent="support-agent")
    searches = 0
    messages: list[Any] = [{"role": "user", "content": "Find ACME's lost order. Keep searching until you find it."}]
    report: dict[str, Any] = {"stopped": False}
    with breaker.run():  # one breaker run per agent run: counts never leak into the next one
        try:
            for _ in range(30):
                reply = guarded.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=256)
                message = reply.choices[0].message
                if not message.tool_calls:
                    print(f"The agent finished on its own: {message.content}")
                    break
                messages.append(message.model_dump(exclude_none=True))
                for call in message.tool_calls:
                    searches += 1  # the tool body: it finds nothing, every time
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"lost_orders": []}'})
        except LoopGuardTripped as trip:
            report.update(stopped=True, reason=trip.reason, message=str(trip))
            print(f"loopguard stopped the run: {trip}")
    usage = breaker.usage()
    report.update(searches=searches, turns=usage.turns, tokens=usage.tokens)
    print(f"search_orders ran {searches} times; {usage.turns} model requests, {usage.tokens} tokens.")
    return report


if __name__ == "__main__":
    main()
