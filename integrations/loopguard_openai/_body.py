"""Read what the breaker needs from OpenAI request bodies and responses (plain JSON, no SDK types).

Two endpoints are guarded: Chat Completions (``POST …/chat/completions``) and Responses (``POST …/responses``),
on api.openai.com and on Azure OpenAI (``/openai/deployments/{name}/chat/completions``, ``/openai/v1/responses``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from loopguard_core import estimate_tokens

__all__ = [
    "Endpoint",
    "ToolCall",
    "ToolResult",
    "Usage",
    "endpoint",
    "estimate_input_tokens",
    "max_output_tokens",
    "parse_arguments",
    "response_steps",
    "tool_results",
]

Endpoint = Literal["chat", "responses"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call in a response: what the caller (or its agent loop) would execute next."""

    id: str
    name: str
    arguments: Any


@dataclass(frozen=True)
class ToolResult:
    """A tool result a request carries back to the model, answering ``call_id``."""

    call_id: str
    content: Any


@dataclass(frozen=True)
class Usage:
    """A response's token usage and the model that answered (``estimated`` when no count arrived)."""

    input_tokens: int
    output_tokens: int
    model: str | None
    estimated: bool = False


def endpoint(method: str, path: str) -> Endpoint | None:
    """``"chat"`` or ``"responses"`` for a guarded model call, ``None`` for anything else."""
    if method.upper() != "POST":
        return None
    clean = path.split("?", 1)[0].rstrip("/")
    if clean.endswith("/chat/completions"):
        return "chat"
    if clean.endswith("/responses"):  # not /responses/{id}, /responses/input_tokens, /responses/{id}/cancel
        return "responses"
    return None


def estimate_input_tokens(kind: Endpoint, body: Mapping[str, Any]) -> int:
    """Estimated input tokens: the messages (or input and instructions) plus the tool definitions."""
    if kind == "chat":
        total = estimate_tokens(body.get("messages") or [])
    else:
        total = estimate_tokens(body.get("input")) + estimate_tokens(body.get("instructions"))
    tools = body.get("tools")
    if tools:
        total += estimate_tokens(json.dumps(tools, default=str, ensure_ascii=False))
    return total


def max_output_tokens(kind: Endpoint, body: Mapping[str, Any]) -> int:
    """The request's own output cap: ``max_completion_tokens`` / ``max_tokens`` or ``max_output_tokens``."""
    keys = ("max_completion_tokens", "max_tokens") if kind == "chat" else ("max_output_tokens",)
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            choices = body.get("n") if kind == "chat" else 1
            n = choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1 else 1
            return value * n  # every choice may use the whole cap
    return 0


def tool_results(kind: Endpoint, body: Mapping[str, Any]) -> Iterator[ToolResult]:
    """Every tool result the request carries (chat ``role: tool`` messages, Responses ``*_call_output`` items)."""
    if kind == "chat":
        for message in body.get("messages") or ():
            if isinstance(message, Mapping) and message.get("role") == "tool":
                call_id = message.get("tool_call_id")
                if isinstance(call_id, str):
                    yield ToolResult(call_id, message.get("content"))
        return
    items = body.get("input")
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, Mapping) and item.get("type") in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if isinstance(call_id, str):
                yield ToolResult(call_id, item.get("output"))


def parse_arguments(raw: Any) -> Any:
    """Tool arguments as the tool will receive them: the decoded JSON object, or the raw text."""
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def _count(usage: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def usage_of(kind: Endpoint, data: Mapping[str, Any]) -> Usage | None:
    """The ``usage`` of a response (or of a stream's final chunk / completed event), if it has one."""
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return None
    model = data.get("model")
    if kind == "chat":
        # prompt_tokens includes cached input; completion_tokens includes reasoning
        tokens = (_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))
    else:
        tokens = (_count(usage, "input_tokens"), _count(usage, "output_tokens"))
    return Usage(tokens[0], tokens[1], model if isinstance(model, str) else None)


def response_tool_calls(kind: Endpoint, data: Mapping[str, Any]) -> list[ToolCall]:
    """The client-side tool calls of a complete response (hosted tools run at OpenAI and are not listed)."""
    calls: list[ToolCall] = []
    if kind == "chat":
        for choice in data.get("choices") or ():
            message = choice.get("message") if isinstance(choice, Mapping) else None
            for call in (message or {}).get("tool_calls") or ():
                found = chat_tool_call(call)
                if found is not None:
                    calls.append(found)
        return calls
    for item in data.get("output") or ():
        found = responses_tool_call(item)
        if found is not None:
            calls.append(found)
    return calls


def chat_tool_call(call: Any) -> ToolCall | None:
    if not isinstance(call, Mapping):
        return None
    call_id = str(call.get("id") or "")
    if call.get("type") == "custom":
        custom = call.get("custom") or {}
        return ToolCall(call_id, str(custom.get("name", "")), custom.get("input"))
    function = call.get("function") or {}
    return ToolCall(call_id, str(function.get("name", "")), parse_arguments(function.get("arguments")))


def responses_tool_call(item: Any) -> ToolCall | None:
    if not isinstance(item, Mapping):
        return None
    if item.get("type") == "function_call":
        return ToolCall(
            str(item.get("call_id") or ""), str(item.get("name", "")), parse_arguments(item.get("arguments"))
        )
    if item.get("type") == "custom_tool_call":
        return ToolCall(str(item.get("call_id") or ""), str(item.get("name", "")), item.get("input"))
    return None


def response_steps(kind: Endpoint, data: Mapping[str, Any], fallback: Usage) -> list[ToolCall | Usage]:
    """What a complete (non-streamed) response asks the breaker to check, in order: usage, then tool calls."""
    usage = usage_of(kind, data)
    if usage is None:
        model = data.get("model")
        usage = Usage(fallback.input_tokens, fallback.output_tokens, model if isinstance(model, str) else None, True)
    return [usage, *response_tool_calls(kind, data)]
