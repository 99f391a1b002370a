"""``on_trip="steer"`` for a Messages API client: answer a refused ``tool_use`` in the caller's place.

A client has no run to steer: the caller's own loop (or the beta tool runner) executes every ``tool_use`` block it
is handed. So a refused block is never handed over. The middleware answers it itself, with a ``tool_result``
(``is_error: true``, the text of ``Breaker.steer``), and keeps the caller's history consistent:

- every block of a reply refused: the middleware asks the model again at once, with the reply and the refusals
  appended to the request (a model call like any other: checked pre-flight, its usage recorded), and hands the
  caller the answer to that;
- some refused, some admitted: the caller gets the reply without the refused blocks and runs the others;
- either way, what the caller never saw (the refused blocks, their refusals, the re-asked exchange) is put back
  into each later request of that conversation, found by the ids of the ``tool_use`` blocks the caller did get,
  so the model's view of the conversation stays what really happened.

A request that continues a server-side thread (``"thread": {"type": "continue", "previous_message_id": ...}``,
what the beta tool runner sends) carries only the new messages: the server already holds the re-asked exchange
(it was sent with the re-ask), and the refusals answering a reply the caller got without its refused blocks are
added to the request's first user message, found by that reply's message id.

A reply that ends the conversation (no ``tool_use`` left) has nothing to find it by: the refusals it followed
are then not put back if the caller continues that conversation with its full history.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._body import ToolUse

__all__ = ["Splice", "Splices", "as_param", "refusal_result", "reply_bytes", "with_inputs", "without_blocks"]

_MAX_SPLICES = 4_096


def as_param(block: Any) -> Any:
    """A response content block as a request block: the same JSON without the fields a reply leaves null."""
    if isinstance(block, Mapping):
        return {key: value for key, value in block.items() if value is not None}
    return block


def refusal_result(use: ToolUse, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": use.id, "content": text, "is_error": True}


def without_blocks(data: Mapping[str, Any], ids: set[str]) -> dict[str, Any]:
    """The reply ``data`` without the ``tool_use`` blocks whose id is in ``ids``."""
    content = [
        block
        for block in data.get("content") or ()
        if not (isinstance(block, Mapping) and block.get("type") == "tool_use" and block.get("id") in ids)
    ]
    return {**data, "content": content}


def with_inputs(data: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The reply ``data`` with the ``input`` of the ``tool_use`` blocks named in ``inputs`` (by id) replaced."""
    content = [
        {**block, "input": inputs[block["id"]]}
        if isinstance(block, Mapping) and block.get("type") == "tool_use" and block.get("id") in inputs
        else block
        for block in data.get("content") or ()
    ]
    return {**data, "content": content}


@dataclass(frozen=True)
class Splice:
    """What to put back around the assistant message the caller built from one reply."""

    before: tuple[dict[str, Any], ...] = ()  # re-asked exchanges, inserted before that message
    uses: tuple[Any, ...] = ()  # refused blocks of that very reply, added back to it
    results: tuple[dict[str, Any], ...] = ()  # their refusals, added to the user message that follows it


@dataclass
class Splices:
    """Splices by the id of every ``tool_use`` block the caller was handed (bounded, thread-safe)."""

    _by_id: OrderedDict[str, Splice] = field(default_factory=OrderedDict)
    _by_reply: OrderedDict[str, Splice] = field(default_factory=OrderedDict)  # by the reply's message id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, anchors: Sequence[str], splice: Splice, *, reply_id: Any = None) -> None:
        with self._lock:
            for anchor in anchors:
                if anchor:
                    self._by_id[anchor] = splice
            if isinstance(reply_id, str) and reply_id and splice.results:
                self._by_reply[reply_id] = splice
            for table in (self._by_id, self._by_reply):
                while len(table) > _MAX_SPLICES:
                    table.popitem(last=False)

    def _find(self, message: Any) -> Splice | None:
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            return None
        content = message.get("content")
        if not isinstance(content, list):
            return None
        with self._lock:
            for block in content:
                if isinstance(block, Mapping) and block.get("type") == "tool_use":
                    splice = self._by_id.get(str(block.get("id", "")))
                    if splice is not None:
                        return splice
        return None

    def restore(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """``body`` with what the caller never saw put back, or None when nothing in it needs that."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not (self._by_id or self._by_reply):
            return None
        continued = self._continued(body, messages)
        if continued is not None:
            return continued
        restored: list[Any] = []
        changed = False
        index = 0
        while index < len(messages):
            message = messages[index]
            splice = self._find(message)
            if splice is None:
                restored.append(message)
                index += 1
                continue
            changed = True
            restored.extend(splice.before)
            following = messages[index + 1] if index + 1 < len(messages) else None
            if splice.uses and isinstance(message, Mapping) and isinstance(following, Mapping) and _is_user(following):
                restored.append({**message, "content": [*message["content"], *splice.uses]})
                restored.append({**following, "content": _with_results(following.get("content"), splice.results)})
                index += 2
                continue
            restored.append(message)
            index += 1
        return {**body, "messages": restored} if changed else None

    def _continued(self, body: Mapping[str, Any], messages: list[Any]) -> dict[str, Any] | None:
        """A server-side thread continued after a reply whose refused blocks the caller never got: answer them."""
        thread = body.get("thread")
        if not isinstance(thread, Mapping) or thread.get("type") != "continue":
            return None
        with self._lock:
            splice = self._by_reply.get(str(thread.get("previous_message_id", "")))
        if splice is None or not messages or not _is_user(messages[0]):
            return None
        first = messages[0]
        assert isinstance(first, Mapping)
        answered = {
            block.get("tool_use_id")
            for block in first.get("content") or ()
            if isinstance(block, Mapping) and block.get("type") == "tool_result"
        }
        missing = [result for result in splice.results if result["tool_use_id"] not in answered]
        if not missing:
            return None
        patched = {**first, "content": _with_results(first.get("content"), missing)}
        return {**body, "messages": [patched, *messages[1:]]}


def _is_user(message: Any) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "user"


def _with_results(content: Any, results: Sequence[dict[str, Any]]) -> list[Any]:
    """A user message's content with ``results`` after its last tool_result (tool results come first)."""
    if isinstance(content, str):
        return [*results, {"type": "text", "text": content}]
    blocks = list(content or ())
    last = max(
        (n for n, block in enumerate(blocks) if isinstance(block, Mapping) and block.get("type") == "tool_result"),
        default=-1,
    )
    return [*blocks[: last + 1], *results, *blocks[last + 1 :]]


def reply_bytes(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()
