"""Watch a streamed response as the caller reads it: check each tool call the moment it is complete and
record the usage at the end, *before* the bytes that complete them are handed on.

Chat Completions: a tool call is complete when a later tool call (a higher ``index``) starts, when its
choice's ``finish_reason`` arrives, or at ``[DONE]``; usage comes from the final chunk when the request set
``stream_options={"include_usage": true}``, and is estimated otherwise. Responses: a call is complete at its
``response.output_item.done`` event; usage comes with ``response.completed`` (or ``incomplete`` / ``failed``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._body import Endpoint, ToolCall, Usage, chat_tool_call, responses_tool_call, usage_of

__all__ = ["StreamWatch"]

_CHARS_PER_TOKEN = 4


@dataclass
class _Pending:
    id: str = ""
    name: str = ""
    kind: str = "function"
    arguments: str = ""


@dataclass
class StreamWatch:
    """Parses server-sent events; ``feed`` returns what became decidable, ``finish`` what the end decides."""

    kind: Endpoint
    #: estimates the request's input tokens (default 0): called only when no usage arrives
    estimated_input: Callable[[], int] = int
    model: str | None = None
    usage_done: bool = False
    _usage: Usage | None = None
    _buffer: bytes = b""
    _open: dict[tuple[int, int], _Pending] = field(default_factory=dict)
    _output_chars: int = 0

    def feed(self, chunk: bytes) -> list[ToolCall | Usage]:
        self._buffer += chunk
        text = self._buffer.replace(b"\r\n", b"\n")
        steps: list[ToolCall | Usage] = []
        while b"\n\n" in text:
            raw, text = text.split(b"\n\n", 1)
            steps.extend(self._event(raw))
        self._buffer = text
        return steps

    def finish(self) -> list[ToolCall | Usage]:
        """At the end of the stream: calls still open, then the usage if it was not recorded yet."""
        steps: list[ToolCall | Usage] = []
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            steps.extend(self._event(rest.replace(b"\r\n", b"\n")))
        return steps + self._end()

    def feed_event(self, data: dict[str, Any]) -> list[ToolCall | Usage]:
        """One decoded event (a chat chunk or a Responses event), for SDKs that hand over objects, not bytes."""
        return self._chat(data) if self.kind == "chat" else self._responses(data)

    def end(self) -> list[ToolCall | Usage]:
        """The stream ended (``[DONE]`` or exhausted): calls still open, then the usage if not recorded."""
        return self._end()

    def _end(self) -> list[ToolCall | Usage]:
        steps = self._close_calls(lambda key: True)
        if not self.usage_done:
            steps.append(self.take_usage())
        return steps

    def take_usage(self) -> Usage:
        """The usage known so far (estimated if no count arrived); marks it recorded."""
        self.usage_done = True
        if self._usage is not None:
            return self._usage
        output = -(-self._output_chars // _CHARS_PER_TOKEN)
        return Usage(self.estimated_input(), output, self.model, True)

    # -- events ---------------------------------------------------------------------------------------
    def _event(self, raw: bytes) -> list[ToolCall | Usage]:
        lines = [
            line[5:].lstrip(" ") for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("data:")
        ]
        if not lines:
            return []
        payload = "\n".join(lines)
        if payload.strip() == "[DONE]":
            return self._end()
        try:
            data = json.loads(payload)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        return self._chat(data) if self.kind == "chat" else self._responses(data)

    def _chat(self, data: dict[str, Any]) -> list[ToolCall | Usage]:
        steps: list[ToolCall | Usage] = []
        model = data.get("model")
        if isinstance(model, str) and model:
            self.model = model
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = int(choice.get("index") or 0)
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                self._output_chars += len(content)
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                position = int(call.get("index") or 0)
                # a later call of the same choice started: the earlier ones are complete
                steps.extend(self._close_calls(lambda key, i=index, p=position: key[0] == i and key[1] < p))
                pending = self._open.setdefault((index, position), _Pending())
                pending.id = call.get("id") or pending.id
                if call.get("type") == "custom" or "custom" in call:
                    pending.kind = "custom"
                    part = call.get("custom") or {}
                    pending.name = part.get("name") or pending.name
                    text = part.get("input")
                else:
                    part = call.get("function") or {}
                    pending.name = part.get("name") or pending.name
                    text = part.get("arguments")
                if isinstance(text, str):
                    pending.arguments += text
                    self._output_chars += len(text)
            if choice.get("finish_reason"):
                steps.extend(self._close_calls(lambda key, i=index: key[0] == i))
        usage = usage_of("chat", data)
        if usage is not None:
            self._usage = Usage(usage.input_tokens, usage.output_tokens, usage.model or self.model)
        return steps

    def _close_calls(self, which: Any) -> list[ToolCall | Usage]:
        done: list[ToolCall | Usage] = []
        for key in sorted(k for k in self._open if which(k)):
            pending = self._open.pop(key)
            if pending.kind == "custom":
                raw = {"type": "custom", "id": pending.id, "custom": {"name": pending.name, "input": pending.arguments}}
            else:
                raw = {"id": pending.id, "function": {"name": pending.name, "arguments": pending.arguments}}
            call = chat_tool_call(raw)
            if call is not None:
                done.append(call)
        return done

    def _responses(self, data: dict[str, Any]) -> list[ToolCall | Usage]:
        kind = data.get("type")
        response = data.get("response")
        if isinstance(response, dict):
            model = response.get("model")
            if isinstance(model, str) and model:
                self.model = model
        if kind == "response.output_text.delta" or kind == "response.function_call_arguments.delta":
            delta = data.get("delta")
            if isinstance(delta, str):
                self._output_chars += len(delta)
        elif kind == "response.output_item.done":
            call = responses_tool_call(data.get("item"))
            if call is not None:
                return [call]
        elif kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(response, dict):
            usage = usage_of("responses", response)
            if usage is not None:
                self._usage = Usage(usage.input_tokens, usage.output_tokens, usage.model or self.model)
            if not self.usage_done:
                return [self.take_usage()]
        return []
