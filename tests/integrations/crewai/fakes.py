"""A scripted fake CrewAI LLM and counted tools for driving the real CrewAI runtime (no network, no key).

``ScriptedLLM`` is a real ``crewai.llms.base_llm.BaseLLM`` subclass. Each call answers from ``script``:
a ``(tool, args)`` pair (or a list of them) is a tool call, a ``str`` is the final answer. When the script
runs out it repeats ``loop`` (when set) up to ``cap`` calls: a runaway agent with a bounded blast radius,
so a guard that fails shows up as a wrong count rather than a hung test.

- ``native=True`` (default) answers with OpenAI-style tool-call dicts, the shape CrewAI's native
  function-calling path executes; ``native=False`` answers with ReAct text (``Action:`` /
  ``Action Input:``), the text path.
- Every call records token usage through ``_track_token_usage_internal`` exactly as CrewAI's own
  providers do, so ``llm.get_token_usage_summary()`` grows call by call, and it runs the provider-side
  ``_invoke_before_llm_call_hooks`` seam (a no-op when the executor already dispatched the hooks).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.tools import BaseTool, tool
from crewai.utilities.types import LLMMessage
from pydantic import Field, PrivateAttr

from loopguard_core import estimate_tokens

__all__ = ["BodyCounter", "Recorder", "ScriptedLLM", "counted_tool", "one_agent_crew"]

_ids = itertools.count(1)


class ScriptedLLM(BaseLLM):
    """A CrewAI LLM that plays back a script of tool calls and final answers, with token usage."""

    model: str = "fake-scripted"
    script: list[Any] = Field(default_factory=list)
    loop: Any = None
    cap: int = 30
    native: bool = True
    prompt_tokens: int = 100
    completion_tokens: int = 20

    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _seen_messages: list[int] = PrivateAttr(default_factory=list)

    def __init__(self, **data: Any) -> None:
        data.setdefault("model", "fake-scripted")  # BaseLLM's validator insists on an explicit model name
        super().__init__(**data)

    @property
    def calls(self) -> int:
        """How many times the model was really called (a refused call is not one)."""
        return self._calls

    def supports_function_calling(self) -> bool:
        return self.native

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return estimate_tokens(messages)  # BaseLLM's fallback logs a warning on every call

    def _next_turn(self) -> Any:
        with self._lock:
            index = self._calls
            self._calls += 1
        if index < len(self.script):
            return self.script[index]
        if self.loop is not None and index < self.cap:
            return self.loop
        return "Final Answer: done"

    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> str | Any:
        with llm_call_context():
            formatted = self._format_messages(messages)
            self._invoke_before_llm_call_hooks(formatted, from_agent)
            self._emit_call_started_event(messages=formatted, tools=tools, from_task=from_task, from_agent=from_agent)
            turn = self._next_turn()
            self._seen_messages.append(len(formatted))
            self._track_token_usage_internal(
                {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens,
                    "total_tokens": self.prompt_tokens + self.completion_tokens,
                }
            )
            answer = self._render(turn)
            from crewai.events.types.llm_events import LLMCallType

            call_type = LLMCallType.TOOL_CALL if isinstance(answer, list) else LLMCallType.LLM_CALL
            self._emit_call_completed_event(
                response=answer, call_type=call_type, from_task=from_task, from_agent=from_agent, messages=formatted
            )
            return answer

    async def acall(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> str | Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent, response_model)

    def _render(self, turn: Any) -> Any:
        if isinstance(turn, str):
            text = turn if "Final Answer:" in turn else f"Final Answer: {turn}"
            return text.split("Final Answer:", 1)[1].strip() if self.native else f"Thought: done\n{text}"
        calls = [turn] if isinstance(turn, tuple) else list(turn)
        if self.native:
            return [
                {
                    "id": f"call_{next(_ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for name, args in calls
            ]
        name, args = calls[0]  # the ReAct text format carries one action per turn
        return f"Thought: I should use a tool.\nAction: {name}\nAction Input: {json.dumps(args)}"


class BodyCounter:
    """Counts how many times tool bodies really ran (thread-safe), per tool and in total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: list[tuple[str, dict[str, Any]]] = []

    def hit(self, name: str, args: dict[str, Any]) -> None:
        with self._lock:
            self.runs.append((name, dict(args)))

    @property
    def total(self) -> int:
        return len(self.runs)

    def of(self, name: str) -> int:
        return sum(1 for tool_name, _ in self.runs if tool_name == name)


def counted_tool(
    counter: BodyCounter,
    name: str = "lookup",
    answer: Callable[[str], str] | None = None,
) -> BaseTool:
    """A CrewAI ``@tool`` whose body records each run; it answers ``answer(q)`` (default: a fixed text)."""

    def body(q: str) -> str:
        counter.hit(name, {"q": q})
        return answer(q) if answer is not None else f"no news about {q}"

    body.__name__ = name
    body.__doc__ = f"Look something up ({name})."
    return tool(name)(body)


class Recorder:
    """A ledger sink for tests: keeps the rows a breaker writes (``Breaker(ledger=Recorder())``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []

    def record(self, **row: Any) -> int:
        with self._lock:
            self.rows.append(row)
            return len(self.rows)

    def of(self, origin: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["origin"] == origin]


def one_agent_crew(tools: list[Any], llm: ScriptedLLM, *, role: str = "researcher", **agent_kwargs: Any) -> Any:
    """A one-agent, one-task crew around ``llm`` (the smallest real CrewAI run)."""
    from crewai import Agent, Crew, Task

    agent = Agent(role=role, goal="answer the question", backstory="careful", llm=llm, tools=tools, **agent_kwargs)
    task = Task(description="Find what is known about the topic.", expected_output="a short answer", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False)
