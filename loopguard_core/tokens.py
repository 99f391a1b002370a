"""A dependency-free token estimate for pre-flight projections.

Adapters pass the provider's own count when they have one; otherwise about four characters per token
(rounded up) is the usual rule of thumb for English text and JSON. It only has to be good enough to
stop a call that would clearly cross a ceiling; the real usage is recorded after the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["estimate_tokens"]

_CHARS_PER_TOKEN = 4
_PER_MESSAGE_OVERHEAD = 4


def estimate_tokens(content: Any) -> int:
    """Estimate the tokens in a string, a message dict, or a list of messages/content blocks."""
    return -(-_count_chars(content, 0) // _CHARS_PER_TOKEN)


def _count_chars(content: Any, depth: int) -> int:
    if depth > 16 or content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Mapping):
        total = _PER_MESSAGE_OVERHEAD * _CHARS_PER_TOKEN if "role" in content else 0
        for key in ("content", "text", "input", "system", "arguments", "args"):
            if key in content:
                value = content[key]
                total += _count_chars(value if not isinstance(value, Mapping) else str(value), depth + 1)
        return total
    if isinstance(content, (list, tuple)):
        return sum(_count_chars(item, depth + 1) for item in content)
    text = getattr(content, "content", None)
    if text is not None:
        return _count_chars(text, depth + 1) + _PER_MESSAGE_OVERHEAD * _CHARS_PER_TOKEN
    return len(str(content))
