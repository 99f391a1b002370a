"""Read what the breaker needs from a Messages API request body and response (plain JSON, no SDK types).

Works the same for ``client.messages`` and ``client.beta.messages``: both post to ``/v1/messages``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loopguard_core import estimate_tokens

__all__ = [
    "ToolResult",
    "ToolUse",
    "estimate_input_tokens",
    "is_messages_call",
    "max_output_tokens",
    "tool_results",
    "tool_uses",
    "usage_tokens",
]


@dataclass(frozen=True)
class ToolUse:
    """A ``tool_use`` block of a response: a tool call the caller (or the tool runner) would execute."""

    id: str
    name: str
    input: Any


@dataclass(frozen=True)
class ToolResult:
    """A ``tool_result`` block of a request: what a tool call returned (or how it failed)."""

    tool_use_id: str
    content: Any
    is_error: bool


def is_messages_call(method: str, url: str) -> bool:
    """A POST to ``/v1/messages`` (``?beta=true`` included), not count_tokens or batches."""
    path = url.split("?", 1)[0].rstrip("/")
    return method.lower() == "post" and path.endswith("/v1/messages")


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Estimated input tokens: messages, the system prompt and the tool definitions (schemas included)."""
    total = estimate_tokens(body.get("messages") or [])
    total += estimate_tokens(body.get("system"))
    tools = body.get("tools")
    if tools:
        total += estimate_tokens(json.dumps(tools, default=str, ensure_ascii=False))
    return total


def max_output_tokens(body: Mapping[str, Any]) -> int:
    value = body.get("max_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def tool_results(body: Mapping[str, Any]) -> Iterator[ToolResult]:
    """Every ``tool_result`` block the request carries back to the model."""
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "tool_result":
                tool_use_id = block.get("tool_use_id")
                if isinstance(tool_use_id, str):
                    yield ToolResult(tool_use_id, block.get("content"), bool(block.get("is_error")))


def tool_uses(content: Any) -> list[ToolUse]:
    """The client-side ``tool_use`` blocks of a response's content (server tools run at Anthropic)."""
    found = []
    for block in content or ():
        if isinstance(block, Mapping) and block.get("type") == "tool_use":
            found.append(ToolUse(str(block.get("id", "")), str(block.get("name", "")), block.get("input")))
    return found


def usage_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """``(input, cache_creation, cache_read, output)`` tokens of a response's ``usage``."""
    if not usage:
        return 0, 0, 0, 0

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return (
        count("input_tokens"),
        count("cache_creation_input_tokens"),
        count("cache_read_input_tokens"),
        count("output_tokens"),
    )
