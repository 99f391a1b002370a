"""An Anthropic tool-runner agent that keeps searching for the same thing, stopped by loopguard.

    python examples/anthropic_agent.py

No API key needed: a scripted Messages API (an httpx2 mock transport under the real ``anthropic`` client)
plays a runaway model. With ANTHROPIC_API_KEY set, the same guarded client talks to the real API.

The tool runner turns exceptions raised inside tool functions into ``is_error`` results, so a guard there
would be swallowed. ``guard(client, breaker)`` checks each ``tool_use`` in the client itself, before the
runner sees it, and the trip reaches this script.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
import httpx2
from anthropic import beta_tool

from loopguard_anthropic import guard
from loopguard_core import Breaker, LoopGuardTripped

MODEL = "claude-sonnet-4-6"


def scripted_client() -> anthropic.Anthropic:
    """A real client whose HTTP transport answers every request with the same tool call."""
    replies = 0

    def answer(request: httpx2.Request) -> httpx2.Response:
        nonlocal replies
        replies += 1
        if replies > 25:  # a bounded blast radius if the guard ever failed
            return httpx2.Response(200, json=_message(replies, [{"type": "text", "text": "giving up"}], "end_turn"))
        call = {"type": "tool_use", "id": f"toolu_{replies}", "name": "search_orders", "input": {"customer": "ACME"}}
        return httpx2.Response(200, json=_message(replies, [call], "tool_use"))

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(api_key="scripted", base_url="http://scripted.invalid", http_client=http)


def _message(n: int, content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 480, "output_tokens": 45},
    }


def main() -> dict[str, Any]:
    client = anthropic.Anthropic() if os.environ.get("ANTHROPIC_API_KEY") else scripted_client()
    breaker = Breaker(max_tokens=60_000, max_turns=25)
    guarded = guard(client, breaker, agent="support-agent")
    searches = 0

    @beta_tool
    def search_orders(customer: str) -> str:
        """Search the order database for a customer's lost orders."""
        nonlocal searches
        searches += 1
        return json.dumps({"customer": customer, "lost_orders": []})

    report: dict[str, Any] = {"stopped": False}
    with breaker.run():  # one breaker run per agent run: counts never leak into the next one
        try:
            runner = guarded.beta.messages.tool_runner(
                model=MODEL,
                max_tokens=1024,
                tools=[search_orders],
                messages=[{"role": "user", "content": "Find ACME's lost order. Keep searching until you find it."}],
            )
            final = runner.until_done()
            print(f"The agent finished on its own: {final.content}")
        except LoopGuardTripped as trip:
            report.update(stopped=True, reason=trip.reason, message=str(trip))
            print(f"loopguard stopped the run: {trip}")
    usage = breaker.usage()
    report.update(searches=searches, turns=usage.turns, tokens=usage.tokens)
    print(f"search_orders ran {searches} times; {usage.turns} model requests, {usage.tokens} tokens.")
    return report


if __name__ == "__main__":
    main()
