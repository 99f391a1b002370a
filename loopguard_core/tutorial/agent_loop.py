"""The tutorial's agent loop: call the model until it ends its turn or the circuit breaker trips.

Each turn: count it, check the breaker (with the tokens spent so far), call ``client.messages.create``,
write a ledger row. A trip is written as a ``circuit_breaker`` row and returned as a failed
:class:`LoopResult`; it is not raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .circuit_breaker import CircuitBreaker, CircuitBreakerError
from .ledger import Ledger
from .spec_writer import SpecResult

__all__ = ["AgentLoop", "LLMClient", "LoopResult", "MessagesEndpoint"]


@runtime_checkable
class MessagesEndpoint(Protocol):
    """The one method the loop calls (Anthropic's ``client.messages``)."""

    # ``messages`` is typed loosely so that SDK clients with their own message types still match.
    def create(self, *, model: str, max_tokens: int, system: str, messages: Any) -> object: ...


@runtime_checkable
class LLMClient(Protocol):
    """Anything with a ``.messages`` endpoint, such as ``anthropic.Anthropic()`` or a scripted fake."""

    @property
    def messages(self) -> MessagesEndpoint: ...


@dataclass(frozen=True)
class LoopResult:
    success: bool
    turns: int
    total_tokens: int
    session_id: str
    breach_reason: str | None = None


class AgentLoop:
    """``AgentLoop(spec, circuit_breaker, ledger, client, model="claude-sonnet-4-6", max_tokens=1024)``."""

    def __init__(
        self,
        spec: SpecResult,
        circuit_breaker: CircuitBreaker,
        ledger: Ledger,
        client: LLMClient,
        model: str = "claude-sonnet-4-6",
        max_tokens: int = 1024,
    ) -> None:
        self.spec = spec
        self.circuit_breaker = circuit_breaker
        self.ledger = ledger
        self.client = client
        self.model = model
        self.max_tokens = max_tokens

    def run(self, task: str) -> LoopResult:
        """Run ``task`` to ``end_turn`` (success) or to a breaker trip (``success=False``)."""
        session_id = self.spec.session_id
        messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
        turn = 0
        total_tokens = 0
        try:
            while True:
                turn += 1
                self.circuit_breaker.check(turn, total_tokens)

                started = time.perf_counter()
                response: Any = self.client.messages.create(
                    model=self.model,
                    max_tokens=self.max_tokens,
                    system=self._system_prompt(),
                    messages=messages,
                )
                elapsed_ms = int((time.perf_counter() - started) * 1000)

                usage = response.usage
                turn_tokens: int = getattr(usage, "input_tokens", 0) + getattr(usage, "output_tokens", 0)
                total_tokens += turn_tokens
                messages.append({"role": "assistant", "content": self._text_from(response)})

                # The tutorial hashes the task on every row, so input_hash is constant within a session.
                self.ledger.write(
                    session_id=session_id,
                    turn_count=turn,
                    state_origin="llm",
                    input_str=task,
                    token_delta=turn_tokens,
                    execution_time_ms=elapsed_ms,
                    pass_fail=True,
                )

                # A response without stop_reason counts as finished.
                if getattr(response, "stop_reason", "end_turn") == "end_turn":
                    return LoopResult(success=True, turns=turn, total_tokens=total_tokens, session_id=session_id)
                messages.append({"role": "user", "content": "continue"})
        except CircuitBreakerError as err:
            self.ledger.write(
                session_id=session_id,
                turn_count=turn,
                state_origin="circuit_breaker",
                input_str=task,
                token_delta=0,
                execution_time_ms=0,
                pass_fail=False,
                breach_reason=err.reason,
            )
            return LoopResult(
                success=False,
                turns=turn,
                total_tokens=total_tokens,
                session_id=session_id,
                breach_reason=err.reason,
            )

    def _system_prompt(self) -> str:
        return (
            "You are an agent working on a tightly-scoped task.\n\n"
            f"What this does: {self.spec.what_it_does}\n"
            f"What this does NOT do: {self.spec.what_it_does_not}\n"
            f"Done looks like: {self.spec.done_looks_like}\n"
        )

    @staticmethod
    def _text_from(response: object) -> str:
        """The first content block's ``text``, or ``""`` when there is none."""
        content = getattr(response, "content", None)
        if not content:
            return ""
        text = getattr(content[0], "text", "")
        return str(text) if text else ""
