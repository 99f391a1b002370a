"""A LiteLLM agent loop that keeps searching for the same thing, stopped by loopguard.

    python examples/litellm_agent.py

No API key needed: LiteLLM's openai provider runs over the real ``openai`` client with a scripted transport.
With OPENAI_API_KEY set, the same loop calls the real model through LiteLLM.
"""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the bundled price map: no download

import openai

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_litellm import LoopGuardLogger
from loopguard_openai import testing as openai_testing

MODEL = "openai/gpt-4o-mini"
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
    replies = 0

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal replies
        replies += 1
        arguments = json.dumps({"customer": "ACME"})
        call = {
            "id": f"call_{replies}",
            "type": "function",
            "function": {"name": "search_orders", "arguments": arguments},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {
            "id": f"chatcmpl-{replies}",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 480, "completion_tokens": 45, "total_tokens": 525},
        }

    client: openai.OpenAI = openai_testing.scripted_client(answer)
    return client


def main() -> dict[str, Any]:
    extra: dict[str, Any] = {} if os.environ.get("OPENAI_API_KEY") else {"client": scripted_client()}
    breaker = Breaker(max_tokens=60_000, max_turns=25)
    guard = LoopGuardLogger(breaker, agent="support-agent")
    searches = 0
    messages: list[Any] = [{"role": "user", "content": "Find ACME's lost order. Keep searching until you find it."}]
    report: dict[str, Any] = {"stopped": False}
    with breaker.run():
        try:
            for _ in range(25):  # a bounded blast radius if the guard ever failed
                reply = guard.completion(model=MODEL, messages=messages, tools=TOOLS, max_tokens=256, **extra)
                message = reply.choices[0].message
                if not message.tool_calls:
                    print(f"The agent finished on its own: {message.content}")
                    break
                messages.append(message.model_dump(exclude_none=True))
                for call in message.tool_calls:
                    searches += 1
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
