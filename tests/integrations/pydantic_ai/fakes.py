"""Scripted fake models for driving the real Pydantic AI runtime (no network, no API key).

``ScriptedModel`` wraps Pydantic AI's own ``FunctionModel``: each model request answers the next step
of ``script``: a ``(tool, args)`` pair (or a list of them, for parallel calls) is a tool call, a
``str`` is the final answer. When the script runs out it repeats ``loop`` (when set) up to ``cap``
requests, so a guard that fails shows up as a wrong count rather than a hung test. Every response
carries ``RequestUsage`` like a real provider's. ``stream=True`` answers through the streaming path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.usage import RequestUsage

__all__ = ["BodyCounter", "Recorder", "ScriptedModel"]

Step = Any  # (tool, args) | list[(tool, args)] | str


class ScriptedModel:
    """A scripted model; ``.model`` is the ``FunctionModel`` to hand to ``Agent``."""

    def __init__(
        self,
        script: list[Step] | None = None,
        *,
        loop: Step = None,
        cap: int = 30,
        usage: tuple[int, int] = (100, 20),
        stream: bool = False,
        name: str = "scripted",
    ) -> None:
        self.script = list(script or [])
        self.loop = loop
        self.cap = cap
        self.usage = usage
        self.requests = 0
        self.seen_settings: list[dict[str, Any] | None] = []
        self._lock = threading.Lock()
        if stream:
            self.model = FunctionModel(stream_function=self._stream, model_name=name)
        else:
            self.model = FunctionModel(self._answer, model_name=name)

    def _next(self, info: AgentInfo) -> Step:
        with self._lock:
            index = self.requests
            self.requests += 1
            self.seen_settings.append(dict(info.model_settings) if info.model_settings else None)
        if index < len(self.script):
            return self.script[index]
        if self.loop is not None and index < self.cap:
            return self.loop
        return "done"

    def _answer(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = self._next(info)
        usage = RequestUsage(input_tokens=self.usage[0], output_tokens=self.usage[1])
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)], usage=usage)
        calls = step if isinstance(step, list) else [step]
        return ModelResponse(parts=[ToolCallPart(tool, dict(args)) for tool, args in calls], usage=usage)

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        step = self._next(info)
        if isinstance(step, str):
            yield step
            return
        calls = step if isinstance(step, list) else [step]
        yield {i: DeltaToolCall(name=tool, json_args=json.dumps(args)) for i, (tool, args) in enumerate(calls)}


class BodyCounter:
    """Counts how many times each tool body really ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def hit(self, tool: str, args: Any = None) -> None:
        with self._lock:
            self.calls.append((tool, args))

    def count(self, tool: str | None = None) -> int:
        with self._lock:
            return sum(1 for name, _ in self.calls if tool is None or name == tool)


class Recorder:
    """A ledger stand-in: keeps every row the breaker writes (``record(**row)``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, **row: Any) -> int:
        with self._lock:
            self.rows.append(row)
            return len(self.rows)

    def where(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]
