"""Read what the breaker needs from a Messages API request body and response (plain JSON, no SDK types).

Works the same for ``client.messages`` and ``client.beta.messages``: both post to ``/v1/messages``.

Every request carries the whole conversation, so nothing here reads all of it on every request: the estimate is
kept per conversation (:class:`BodyReader`, only the messages added since the last request are counted), and the
tool results looked for are those of the latest exchange, at the end of the history.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from loopguard_core import estimate_tokens
from loopguard_core.tokens import History

__all__ = [
    "BodyReader",
    "ToolResult",
    "ToolUse",
    "estimate_input_tokens",
    "is_messages_call",
    "latest_tool_results",
    "max_output_tokens",
    "tool_results",
    "tool_uses",
    "usage_tokens",
]


# NamedTuples, not frozen dataclasses: one of each is built on every turn, and a frozen dataclass sets each field
# through object.__setattr__ (several times the cost).
class ToolUse(NamedTuple):
    """A ``tool_use`` block of a response: a tool call the caller (or the tool runner) would execute."""

    id: str
    name: str
    input: Any


class ToolResult(NamedTuple):
    """A ``tool_result`` block of a request: what a tool call returned (or how it failed)."""

    tool_use_id: str
    content: Any
    is_error: bool


# A NamedTuple's own constructor is a Python function; tuple.__new__ builds the same object without it (every turn).
_new_use: Callable[[type[ToolUse], tuple[str, str, Any]], ToolUse] = tuple.__new__
_new_result: Callable[[type[ToolResult], tuple[str, Any, bool]], ToolResult] = tuple.__new__


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


class BodyReader:
    """Per-client running totals of the conversations its requests carry.

    The SDK sends a fresh copy of the body with every request, so a message is recognised by equality, not
    identity: a request continues a conversation seen before when its first message, the last one seen then and
    a few spread between are equal to what was sent then (see ``loopguard_core.tokens.History``); the tool
    definitions, usually the same list every request, are counted again only when they change.
    """

    def __init__(self) -> None:
        self.history = History(same=operator.eq)
        self._tools: tuple[Any, int] | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (BodyReader, ())  # a copy starts with nothing remembered

    def estimate(self, body: Mapping[str, Any]) -> int:
        """``estimate_input_tokens(body)``, reading only what is new since the conversation's last request."""
        messages = body.get("messages") or []
        if type(messages) is list or (isinstance(messages, Sequence) and not isinstance(messages, (str, bytes))):
            total = self.history.estimate(messages)
        else:
            total = estimate_tokens(messages)
        total += estimate_tokens(body.get("system"))
        tools = body.get("tools")
        if tools:
            total += self._tool_tokens(tools)
        return total

    def _tool_tokens(self, tools: Any) -> int:
        known = self._tools
        try:
            if known is not None and known[0] == tools:
                return known[1]
        except Exception:  # an odd value whose comparison fails: count it
            pass
        count = estimate_tokens(json.dumps(tools, default=str, ensure_ascii=False))
        with self._lock:
            self._tools = (tools, count)
        return count

    def digest(self, messages: Any) -> Any:
        """What the ledger hashes for a request's messages: ``{"messages": n, "sha256": ...}``, a chained digest of
        every message (``loopguard_core.tokens.history_digest(messages)`` recomputes it), of which each request
        hashes only the messages added since the conversation's last."""
        if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
            return self.history.digest(messages)
        return messages


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
            if (type(block) is dict or isinstance(block, Mapping)) and block.get("type") == "tool_result":
                tool_use_id = block.get("tool_use_id")
                if isinstance(tool_use_id, str):
                    yield ToolResult(tool_use_id, block.get("content"), bool(block.get("is_error")))


def latest_tool_results(body: Mapping[str, Any]) -> list[ToolResult]:
    """The ``tool_result`` blocks of the latest exchange: those after the last assistant message that called a
    tool, which is where a request answers the calls of the reply before it (the API refuses a tool_use left
    unanswered in the next message). Read from the end, so a long history costs nothing more. (A list, not a
    generator: this runs on every request.)"""
    messages = body.get("messages") or ()
    if type(messages) is not list and (not isinstance(messages, Sequence) or isinstance(messages, (str, bytes))):
        return list(tool_results(body))
    found: list[ToolResult] = []
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if type(message) is not dict and not isinstance(message, Mapping):  # (dict: no ABC check)
            continue
        content = message.get("content")
        if message.get("role") == "assistant":
            if isinstance(content, list) and _calls_a_tool(content):
                break
            continue
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        batch = []
        for block in content:
            if (type(block) is dict or isinstance(block, Mapping)) and block.get("type") == "tool_result":
                tool_use_id = block.get("tool_use_id")
                if isinstance(tool_use_id, str):
                    result = (tool_use_id, block.get("content"), bool(block.get("is_error")))
                    batch.append(_new_result(ToolResult, result))
        found[:0] = batch  # keep the order they were sent in
    return found


def _calls_a_tool(content: list[Any]) -> bool:
    for block in content:  # (a loop, not any() over a generator: this runs on every request)
        if (type(block) is dict or isinstance(block, Mapping)) and block.get("type") == "tool_use":
            return True
    return False


def tool_uses(content: Any) -> list[ToolUse]:
    """The client-side ``tool_use`` blocks of a response's content (server tools run at Anthropic), each with its
    own copy of the input: the SDK may build the caller's reply from the same parse (see ``_lend_parse``), and a
    tool that changes its arguments in place must not change what the breaker records."""
    found = []
    for block in content or ():
        if (type(block) is dict or isinstance(block, Mapping)) and block.get("type") == "tool_use":
            use = (str(block.get("id", "")), str(block.get("name", "")), own_copy(block.get("input")))
            found.append(_new_use(ToolUse, use))
    return found


def own_copy(value: Any) -> Any:
    """A copy of JSON data: its dicts and lists copied all the way down, the rest (immutable) shared."""
    try:
        return _copied(value)
    except RecursionError:  # nested past Python's limit: a deep copy cannot do it either
        return value


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    return value


def usage_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """``(input, cache_creation, cache_read, output)`` tokens of a response's ``usage``."""
    if not usage:
        return 0, 0, 0, 0
    get = usage.get  # read once a turn: four lookups and one test, no call per count
    counts = (
        get("input_tokens", 0),
        get("cache_creation_input_tokens", 0),
        get("cache_read_input_tokens", 0),
        get("output_tokens", 0),
    )
    a, b, c, d = counts
    if type(a) is int and type(b) is int and type(c) is int and type(d) is int and min(counts) >= 0:
        return counts  # the usual reply: every count present and sane (bool is not int's type)
    return _count(a), _count(b), _count(c), _count(d)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
