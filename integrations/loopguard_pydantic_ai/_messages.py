"""Turn a Pydantic AI model request into what the breaker needs: a token estimate and a hashable digest.

Pydantic AI messages are dataclasses (``ModelRequest`` / ``ModelResponse`` holding parts), which
``estimate_tokens`` does not know; this flattens them to ``{"role", "content"}`` dicts first.
Nothing here is stored: the digest is hashed into the ledger, never written out.

A request carries the whole history, and Pydantic AI hands the same message objects every turn, so
:func:`message_history` keeps running totals per conversation and each request reads only the messages added
since the last (see ``loopguard_core.tokens.History``); the tool schemas, the same every turn, are counted once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loopguard_core import estimate_tokens
from loopguard_core.tokens import History, message_chars

__all__ = [
    "estimate_request_tokens",
    "flatten_message",
    "flatten_messages",
    "max_output_tokens",
    "message_history",
    "model_name",
]


# json.dumps(value, default=str, ensure_ascii=False), without building a new encoder for every value.
_JSON_TEXT = json.JSONEncoder(default=str, ensure_ascii=False).encode


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(_text(item) for item in value)
    if isinstance(value, (bytes, bytearray)):
        return ""  # binary content (images, audio) is priced by the provider, not by characters
    try:
        return _JSON_TEXT(value)
    except (TypeError, ValueError):
        return str(value)


def flatten_message(message: Any) -> list[dict[str, str]]:
    """``[{"role": part_kind, "content": text}]`` for every part of one message (its instructions first)."""
    flat: list[dict[str, str]] = []
    instructions = getattr(message, "instructions", None)
    if instructions:
        flat.append({"role": "instructions", "content": _text(instructions)})
    for part in getattr(message, "parts", ()) or ():
        kind = str(getattr(part, "part_kind", type(part).__name__))
        if hasattr(part, "tool_name") and hasattr(part, "args"):
            text = getattr(part, "tool_name", "") + " " + _text(getattr(part, "args", None))
        else:
            text = _text(getattr(part, "content", None))
        flat.append({"role": kind, "content": text})
    return flat


def flatten_messages(messages: Iterable[Any]) -> list[dict[str, str]]:
    """``[{"role": part_kind, "content": text}]`` for every part of every message."""
    return [entry for message in messages for entry in flatten_message(message)]


def _message_chars(message: Any) -> int:
    # What estimate_tokens(flatten_messages(...)) counts for this message's entries.
    return sum(message_chars(entry) for entry in flatten_message(message))


def message_history() -> History:
    """Running totals of the conversations one capability sees: each request estimates (and, with a ledger,
    digests) only the messages added since the last. The digest is of every message's :func:`flatten_message`."""
    return History(_message_chars, view=flatten_message)


class _ToolCounts:
    """The estimated tokens of each tool definition shown to the model, counted once per definition. Pydantic AI
    builds fresh ``ToolDefinition`` objects for every request, but their JSON schemas are the same objects request
    after request: a definition is known by its name and the identity of its schema (and its description)."""

    def __init__(self, capacity: int = 512) -> None:
        self._counts: dict[tuple[str, int], tuple[Any, str, int]] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ToolCounts, (self._capacity,))  # a copy starts empty

    def __call__(self, tool: Any) -> int:
        name = getattr(tool, "name", "")
        description = getattr(tool, "description", None) or ""
        schema = getattr(tool, "parameters_json_schema", None)
        key = (name, id(schema))
        known = self._counts.get(key)
        if known is not None and known[0] is schema and known[1] == description:
            return known[2]
        count = estimate_tokens([name, description, _text(schema)])
        with self._lock:
            if len(self._counts) >= self._capacity:
                self._counts.clear()
            self._counts[key] = (schema, description, count)  # holds the schema: its id stays its own
        return count


def estimate_request_tokens(
    request_context: Any, history: History | None = None, tools: _ToolCounts | None = None
) -> int:
    """Estimated input tokens: messages, instructions and the tool schemas the model is shown. With ``history``
    (and ``tools``), only what is new since the last request is read; the figure is the same."""
    messages = request_context.messages
    if history is not None and isinstance(messages, Sequence):
        total = history.estimate(messages)
    else:
        total = estimate_tokens(flatten_messages(messages))
    params = getattr(request_context, "model_request_parameters", None)
    if params is not None:
        parts = getattr(params, "instruction_parts", None) or ()
        if parts:
            total += estimate_tokens([_text(getattr(part, "content", None)) for part in parts])
        count = tools if tools is not None else _count_tool
        for group in (getattr(params, "function_tools", None), getattr(params, "output_tools", None)):
            for tool in group or ():
                total += count(tool)
    return total


def _count_tool(tool: Any) -> int:
    schema = getattr(tool, "parameters_json_schema", None)
    return estimate_tokens([getattr(tool, "name", ""), getattr(tool, "description", None) or "", _text(schema)])


def max_output_tokens(settings: Mapping[str, Any] | None) -> int:
    """The request's own output cap (``model_settings["max_tokens"]``), 0 when it sets none."""
    if not settings:
        return 0
    value = settings.get("max_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def model_name(model: Any) -> str | None:
    name = getattr(model, "model_name", None)
    return name if isinstance(name, str) and name else None
