from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.tutorial import (
    AgentLoop,
    CircuitBreaker,
    Ledger,
    LLMClient,
    LoopResult,
    MessagesEndpoint,
    SpecResult,
)


@dataclass
class FakeUsage:
    input_tokens: int
    output_tokens: int


@dataclass
class FakeBlock:
    text: str
    type: str = "text"


@dataclass
class FakeResponse:
    usage: FakeUsage
    content: list[Any]
    stop_reason: str | None = "end_turn"


@dataclass
class MinimalResponse:
    """A response with no ``stop_reason`` attribute at all."""

    usage: FakeUsage
    content: list[Any] = field(default_factory=list)


class FakeClient:
    """Scripted stand-in for ``anthropic.Anthropic()``: ``client.messages.create`` pops the next response."""

    def __init__(self, responses: list[Any]) -> None:
        self._responses = list(responses)
        self.calls: list[dict[str, Any]] = []
        self.messages = self

    def create(self, **kwargs: Any) -> Any:
        self.calls.append(copy.deepcopy(kwargs))
        if not self._responses:
            raise AssertionError("FakeClient: ran out of scripted responses")
        return self._responses.pop(0)


def reply(
    input_tokens: int = 10, output_tokens: int = 20, text: str = "ok", stop_reason: str | None = "end_turn"
) -> FakeResponse:
    return FakeResponse(FakeUsage(input_tokens, output_tokens), [FakeBlock(text)], stop_reason)


@pytest.fixture
def spec() -> SpecResult:
    return SpecResult(
        what_it_does="audit one URL",
        what_it_does_not="render JS",
        done_looks_like="report printed",
        session_id="spec-sid-1",
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(db_path=str(tmp_path / "ledger.db"))


@pytest.fixture
def breaker() -> CircuitBreaker:
    return CircuitBreaker(turn_limit=5, token_limit=15000)


def test_end_turn_on_first_turn_succeeds(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply(50, 50, "done")])
    result = AgentLoop(spec, breaker, ledger, client).run("do the thing")
    assert result == LoopResult(success=True, turns=1, total_tokens=100, session_id="spec-sid-1", breach_reason=None)
    assert len(client.calls) == 1


def test_loop_continues_until_end_turn(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient(
        [reply(10, 20, "thinking", "tool_use"), reply(15, 25, "more", "tool_use"), reply(5, 15, "done")]
    )
    result = AgentLoop(spec, breaker, ledger, client).run("multi-turn task")
    assert (result.success, result.turns, result.total_tokens) == (True, 3, 90)
    assert len(client.calls) == 3


def test_one_llm_row_per_turn_with_the_task_hash(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply(10, 10, "a", "tool_use"), reply(20, 20, "b")])
    AgentLoop(spec, breaker, ledger, client).run("two turn task")
    rows = ledger.get_session("spec-sid-1")
    assert [(r.turn_count, r.state_origin, r.pass_fail, r.token_delta) for r in rows] == [
        (1, "llm", True, 20),
        (2, "llm", True, 40),
    ]
    # The tutorial hashes the original task on every row.
    task_hash = hashlib.sha256(b"two turn task").hexdigest()
    assert all(r.input_hash == task_hash and r.breach_reason is None for r in rows)
    assert all(r.execution_time_ms >= 0 for r in rows)


def test_turn_breach_returns_failure_after_limit_calls(
    spec: SpecResult, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient([reply(10, 10, "x", "tool_use")] * 3)
    result = AgentLoop(spec, CircuitBreaker(turn_limit=2, token_limit=15000), ledger, client).run("loop")
    assert result == LoopResult(
        success=False, turns=3, total_tokens=40, session_id="spec-sid-1", breach_reason="turn_ceiling"
    )
    assert len(client.calls) == 2
    assert "CIRCUIT BREAKER CHECKPOINT" in capsys.readouterr().out


def test_token_breach_is_caught_only_after_the_overshooting_call(spec: SpecResult, ledger: Ledger) -> None:
    client = FakeClient([reply(50, 60, "x", "tool_use"), reply(10, 10, "x", "tool_use")])
    result = AgentLoop(spec, CircuitBreaker(turn_limit=10, token_limit=100), ledger, client).run("tokens")
    assert (result.success, result.breach_reason, result.total_tokens, result.turns) == (
        False,
        "token_ceiling",
        110,
        2,
    )
    assert len(client.calls) == 1


def test_breach_row_has_the_documented_fields(spec: SpecResult, ledger: Ledger) -> None:
    client = FakeClient([reply(5, 5, "x", "tool_use")] * 2)
    AgentLoop(spec, CircuitBreaker(turn_limit=1, token_limit=15000), ledger, client).run("breach me")
    rows = ledger.get_session("spec-sid-1")
    assert len(rows) == 2
    last = rows[-1]
    assert (
        last.turn_count,
        last.state_origin,
        last.token_delta,
        last.execution_time_ms,
        last.pass_fail,
        last.breach_reason,
        last.input_hash,
    ) == (2, "circuit_breaker", 0, 0, False, "turn_ceiling", hashlib.sha256(b"breach me").hexdigest())


def test_breach_is_returned_not_raised_on_turn_one(spec: SpecResult, ledger: Ledger) -> None:
    client = FakeClient([])
    result = AgentLoop(spec, CircuitBreaker(turn_limit=0), ledger, client).run("never")
    assert (result.success, result.turns, result.total_tokens, result.breach_reason) == (
        False,
        1,
        0,
        "turn_ceiling",
    )
    assert client.calls == []


def test_system_prompt_is_built_from_the_spec(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply()])
    AgentLoop(spec, breaker, ledger, client).run("task")
    assert client.calls[0]["system"] == (
        "You are an agent working on a tightly-scoped task.\n\n"
        "What this does: audit one URL\n"
        "What this does NOT do: render JS\n"
        "Done looks like: report printed\n"
    )


def test_defaults_are_claude_sonnet_4_6_and_1024(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply()])
    loop = AgentLoop(spec, breaker, ledger, client)
    loop.run("task")
    assert (loop.model, loop.max_tokens) == ("claude-sonnet-4-6", 1024)
    assert (client.calls[0]["model"], client.calls[0]["max_tokens"]) == ("claude-sonnet-4-6", 1024)


def test_model_and_max_tokens_are_passed_through(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply()])
    AgentLoop(spec, breaker, ledger, client, model="claude-opus-4-8", max_tokens=2048).run("task")
    assert (client.calls[0]["model"], client.calls[0]["max_tokens"]) == ("claude-opus-4-8", 2048)


def test_messages_grow_with_assistant_text_and_continue(
    spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger
) -> None:
    client = FakeClient([reply(text="first", stop_reason="tool_use"), reply(text="second")])
    AgentLoop(spec, breaker, ledger, client).run("starter")
    assert client.calls[0]["messages"] == [{"role": "user", "content": "starter"}]
    assert client.calls[1]["messages"] == [
        {"role": "user", "content": "starter"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "continue"},
    ]


def test_missing_stop_reason_counts_as_end_turn(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([MinimalResponse(FakeUsage(5, 5), [FakeBlock("ok")])])
    result = AgentLoop(spec, breaker, ledger, client).run("task")
    assert (result.success, result.turns, result.total_tokens) == (True, 1, 10)


def test_stop_reason_none_is_not_end_turn(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    client = FakeClient([reply(stop_reason=None), reply()])
    result = AgentLoop(spec, breaker, ledger, client).run("task")
    assert result.turns == 2


def test_empty_content_and_non_text_blocks_give_empty_assistant_text(
    spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger
) -> None:
    @dataclass
    class ImageBlock:
        type: str = "image"

    client = FakeClient(
        [
            FakeResponse(FakeUsage(1, 1), [], "tool_use"),
            FakeResponse(FakeUsage(1, 1), [ImageBlock()], "tool_use"),
            reply(),
        ]
    )
    result = AgentLoop(spec, breaker, ledger, client).run("task")
    assert result.success is True
    assert [m["content"] for m in client.calls[2]["messages"] if m["role"] == "assistant"] == ["", ""]


def test_missing_token_counts_count_as_zero(spec: SpecResult, breaker: CircuitBreaker, ledger: Ledger) -> None:
    @dataclass
    class OutputOnly:
        output_tokens: int

    client = FakeClient([FakeResponse(OutputOnly(7), [FakeBlock("x")])])  # type: ignore[arg-type]
    assert AgentLoop(spec, breaker, ledger, client).run("task").total_tokens == 7


def test_loop_result_is_frozen() -> None:
    r = LoopResult(success=True, turns=1, total_tokens=0, session_id="s")
    assert r.breach_reason is None
    with pytest.raises(AttributeError):
        r.turns = 99  # type: ignore[misc]


def test_fake_client_satisfies_the_protocols() -> None:
    client = FakeClient([])
    assert isinstance(client, LLMClient)
    assert isinstance(client.messages, MessagesEndpoint)
    assert not isinstance(object(), LLMClient)
