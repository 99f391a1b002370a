"""``loopguard demo`` for the Anthropic SDK: the beta tool runner on a scripted runaway, stopped by guard()."""

from __future__ import annotations

from typing import Any

__all__ = ["run_demo"]

_MODEL = "claude-sonnet-4-6"


def run_demo() -> dict[str, Any]:
    """A real ``anthropic.Anthropic`` client over a mock transport that asks for the same search forever."""
    import anthropic
    import httpx2
    from anthropic import beta_tool

    from loopguard_core import Breaker, LoopGuardTripped

    from ._guard import guard

    replies = 0

    def answer(request: httpx2.Request) -> httpx2.Response:
        nonlocal replies
        replies += 1
        if replies > 25:  # a bounded blast radius if the guard ever failed
            content: list[dict[str, Any]] = [{"type": "text", "text": "giving up"}]
            stop = "end_turn"
        else:
            content = [{"type": "tool_use", "id": f"toolu_{replies}", "name": "search_docs", "input": {"q": "refunds"}}]
            stop = "tool_use"
        message = {
            "id": f"msg_{replies}",
            "type": "message",
            "role": "assistant",
            "model": _MODEL,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 350, "output_tokens": 40},
        }
        return httpx2.Response(200, json=message)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = anthropic.Anthropic(api_key="demo", base_url="http://scripted.invalid", http_client=http)
    breaker = Breaker(max_tokens=20_000)
    body_runs = 0

    @beta_tool
    def search_docs(q: str) -> str:
        """Search the help-center articles."""
        nonlocal body_runs
        body_runs += 1
        return "No article matches."

    reason, caller_saw = "", "nothing (the run finished)"
    with breaker.run():
        try:
            guard(client, breaker, agent="support-agent").beta.messages.tool_runner(
                model=_MODEL,
                max_tokens=512,
                tools=[search_docs],
                messages=[{"role": "user", "content": "What is the refund policy?"}],
            ).until_done()
        except LoopGuardTripped as trip:
            reason, caller_saw = trip.reason, type(trip).__name__
    return {
        "framework": "anthropic",
        "tool_body_runs": body_runs,
        "reason": reason,
        "caller_saw": caller_saw,
        "path": "sync beta tool_runner (guard)",
        "model_requests": replies,
    }
