"""Scripted fake chat model and counted tools for driving the real LangChain / LangGraph runtime.

No network, no API key. ``ScriptedChatModel`` answers each model call from a script: a list of tool calls
(``[("lookup", {"q": "x"})]``) becomes an ``AIMessage`` with ``tool_calls``, a ``str`` a final answer.
When the script runs out it repeats ``loop`` (if set) up to ``cap`` calls: a runaway agent with a
bounded blast radius, so a guard that fails shows up as a wrong count rather than a hung test.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import Field, PrivateAttr

__all__ = ["BodyCounter", "Recorder", "ScriptedChatModel", "answered_every_tool_call", "counted_tools", "user"]

Turn = Any  # list[tuple[str, dict]] | str
_ids = itertools.count(1)


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays back a script of tool calls and answers, with ``usage_metadata``."""

    script: list[Any] = Field(default_factory=list)
    loop: tuple[str, dict[str, Any]] | None = None
    cap: int = 30
    input_tokens: int = 100
    output_tokens: int = 20
    max_tokens: int | None = None
    model_name: str = "fake-scripted"

    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def calls(self) -> int:
        """How many times the model was really called (a pre-flight refusal does not count)."""
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _next_turn(self) -> Turn:
        with self._lock:
            index = self._calls
            self._calls += 1
        if index < len(self.script):
            return self.script[index]
        if self.loop is not None and index < self.cap:
            return [self.loop]
        return "done"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = self._next_turn()
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        if isinstance(turn, str):
            message = AIMessage(content=turn, usage_metadata=usage)
        else:
            calls = [
                {"name": name, "args": args, "id": f"call_{next(_ids)}", "type": "tool_call"} for name, args in turn
            ]
            message = AIMessage(content="", tool_calls=calls, usage_metadata=usage)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": usage, "model_name": self.model_name},
        )


class BodyCounter:
    """Counts how often each tool body really ran (thread-safe: ToolNode runs calls on worker threads)."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, name: str) -> None:
        with self._lock:
            self.runs[name] = self.runs.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.runs.get(name, 0)

    @property
    def total(self) -> int:
        return sum(self.runs.values())


def counted_tools(counter: BodyCounter) -> list[Any]:
    """``lookup`` (same answer for the same query), ``fetch_page`` (a different page each time) and
    ``alookup`` (an ``async def`` twin of lookup), each counting its body runs in ``counter``."""

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup")
        return f"result for {q}"

    @tool
    def fetch_page(page: int) -> str:
        """Fetch one page of results."""
        counter.hit("fetch_page")
        return f"page {page}: items {page * 10}..{page * 10 + 9}"

    @tool
    async def alookup(q: str) -> str:
        """Look something up (async)."""
        counter.hit("alookup")
        return f"result for {q}"

    return [lookup, fetch_page, alookup]


class Recorder:
    """A ledger double: keeps the rows the breaker writes (``Breaker(ledger=Recorder())``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, **row: Any) -> int:
        with self._lock:
            self.rows.append(row)
            return len(self.rows)

    def of(self, origin: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["origin"] == origin]


def user(text: str = "go") -> dict[str, Any]:
    """The input of one agent invocation."""
    return {"messages": [{"role": "user", "content": text}]}


def answered_every_tool_call(messages: list[Any]) -> bool:
    """True when every tool call of every AIMessage has a ToolMessage answer (providers require it)."""
    asked = {c["id"] for m in messages for c in (getattr(m, "tool_calls", None) or [])}
    answered = {m.tool_call_id for m in messages if getattr(m, "type", "") == "tool"}
    return asked <= answered
