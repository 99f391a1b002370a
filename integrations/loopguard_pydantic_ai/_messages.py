"""Turn a Pydantic AI model request into what the breaker needs: a token estimate and a hashable digest.

Pydantic AI messages are dataclasses (``ModelRequest`` / ``ModelResponse`` holding parts), which
``estimate_tokens`` does not know; this flattens them to ``{"role", "content"}`` dicts first.
Nothing here is stored: the digest is hashed into the ledger, never written out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from loopguard_core import estimate_tokens

__all__ = ["estimate_request_tokens", "flatten_messages", "max_output_tokens", "model_name"]


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
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def flatten_messages(messages: Iterable[Any]) -> list[dict[str, str]]:
    """``[{"role": part_kind, "content": text}]`` for every part of every message."""
    flat: list[dict[str, str]] = []
    for message in messages:
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


def estimate_request_tokens(request_context: Any) -> int:
    """Estimated input tokens: messages, instructions and the tool schemas the model is shown."""
    total = estimate_tokens(flatten_messages(request_context.messages))
    params = getattr(request_context, "model_request_parameters", None)
    if params is not None:
        parts = getattr(params, "instruction_parts", None) or ()
        total += estimate_tokens([_text(getattr(part, "content", None)) for part in parts])
        tools = list(getattr(params, "function_tools", None) or ()) + list(getattr(params, "output_tools", None) or ())
        for tool in tools:
            schema = getattr(tool, "parameters_json_schema", None)
            total += estimate_tokens(
                [getattr(tool, "name", ""), getattr(tool, "description", None) or "", _text(schema)]
            )
    return total


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
