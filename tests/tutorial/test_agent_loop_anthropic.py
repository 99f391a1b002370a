"""The tutorial's loop driven through the real Anthropic SDK, with HTTP answered locally (no network, no key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.tutorial import AgentLoop, CircuitBreaker, Ledger, LLMClient, MessagesEndpoint, SpecResult

anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx2")  # the SDK's HTTP client package


def message(text: str, stop_reason: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def scripted_client(replies: list[dict[str, Any]], requests: list[dict[str, Any]]) -> Any:
    pending = list(replies)

    def handle(request: Any) -> Any:
        requests.append(json.loads(request.content))
        return httpx.Response(200, json=pending.pop(0))

    return anthropic.Anthropic(
        api_key="test-key", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(handle))
    )


SPEC = SpecResult("summarise one page", "browse", "a summary is printed", "sid-sdk")


def test_real_client_satisfies_the_protocols() -> None:
    client = anthropic.Anthropic(api_key="test-key")
    assert isinstance(client, LLMClient)
    assert isinstance(client.messages, MessagesEndpoint)


def test_loop_runs_unchanged_on_the_sdk(tmp_path: Path) -> None:
    requests: list[dict[str, Any]] = []
    client = scripted_client([message("working", "tool_use", 12, 8), message("done", "end_turn", 20, 5)], requests)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    result = AgentLoop(SPEC, CircuitBreaker(), ledger, client).run("summarise example.com")
    assert (result.success, result.turns, result.total_tokens) == (True, 2, 45)
    assert requests[0]["model"] == "claude-sonnet-4-6"
    assert requests[0]["max_tokens"] == 1024
    assert requests[0]["system"].startswith("You are an agent working on a tightly-scoped task.")
    assert requests[1]["messages"][1:] == [
        {"role": "assistant", "content": "working"},
        {"role": "user", "content": "continue"},
    ]
    assert [r.token_delta for r in ledger.get_session("sid-sdk")] == [20, 25]


def test_sdk_loop_stops_at_the_turn_ceiling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests: list[dict[str, Any]] = []
    client = scripted_client([message("again", "tool_use", 1, 1)] * 2, requests)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    result = AgentLoop(SPEC, CircuitBreaker(turn_limit=2), ledger, client).run("loop forever")
    assert (result.success, result.turns, result.breach_reason) == (False, 3, "turn_ceiling")
    assert len(requests) == 2
    assert ledger.get_session("sid-sdk")[-1].state_origin == "circuit_breaker"
    assert "CIRCUIT BREAKER CHECKPOINT" in capsys.readouterr().out
