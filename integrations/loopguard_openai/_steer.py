"""``on_trip="steer"`` for an OpenAI client: answer a refused tool call in the caller's place.

A client has no run to steer: the caller's own loop executes every tool call it is handed. So a refused call is
never handed over. The guard answers it itself, with the text of ``Breaker.steer`` as the call's result (a
``role: "tool"`` message in Chat Completions, a ``function_call_output`` item in Responses), and keeps the
caller's history true:

- every tool call of a reply refused: the guard asks the model again at once, with the reply and the refusals
  appended to the request (a model call like any other: checked pre-flight, its usage recorded), and hands the
  caller the answer to that;
- some refused, some admitted: the caller gets the reply without the refused calls and runs the others;
- either way, what the caller never saw (the refused calls, their refusals, the re-asked exchange) is put back
  into each later request of that conversation, found by the ids of the tool calls (and, in Responses, of the
  output items) the caller did get, so the model's view of the conversation stays what really happened.

A Responses request that continues a stored response (``previous_response_id``) carries only the new items: the
server already holds a re-asked exchange (it was sent with the re-ask), and the refusals answering a reply the
caller got without its refused calls are added to the request's input, found by that reply's id.

A Chat Completions reply that ends the conversation (no tool call left) has nothing to find it by: the refusals
it followed are then not put back if the caller continues that conversation with its full history.

Not steered (a refusal is raised, as with ``on_trip="raise"``): streamed replies (the caller holds the call's
first bytes before it is complete enough to judge), a chat reply with several choices (``n > 1``), and a
Responses request in a server-side ``conversation`` (the server appends the refused reply to it by itself).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._body import Endpoint

__all__ = ["Splice", "Steering", "Verdict", "call_key", "steerable"]

_MAX_SPLICES = 4_096
_CALL_TYPES = ("function_call", "custom_tool_call")
_ASSISTANT_FIELDS = ("content", "refusal", "tool_calls", "name")
_OUTPUT_TYPES = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output"}


def steerable(kind: Endpoint, body: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether a complete reply to ``body`` can be steered (else a refusal is raised)."""
    if body.get("stream"):
        return False
    if kind == "chat":
        return len(data.get("choices") or ()) <= 1
    return body.get("conversation") is None


def call_key(kind: Endpoint, raw: Mapping[str, Any]) -> str:
    """The id a tool call is answered by: ``id`` of a chat tool call, ``call_id`` of a Responses item."""
    return str(raw.get("id" if kind == "chat" else "call_id") or "")


def reply_calls(kind: Endpoint, data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The raw tool calls of a complete reply, in order (chat: of its only choice)."""
    if kind == "chat":
        return [call for call in (_message(data).get("tool_calls") or ()) if isinstance(call, Mapping)]
    return [item for item in data.get("output") or () if isinstance(item, Mapping) and item.get("type") in _CALL_TYPES]


def as_param(obj: Any) -> Any:
    """A response object as a request object: the same JSON without the fields a reply leaves null."""
    if isinstance(obj, Mapping):
        return {key: as_param(value) for key, value in obj.items() if value is not None}
    if isinstance(obj, list):
        return [as_param(value) for value in obj]
    return obj


def refusal_result(kind: Endpoint, raw: Mapping[str, Any], text: str) -> dict[str, Any]:
    """What answers a refused call: a tool message, or the ``*_call_output`` item of the call's type."""
    if kind == "chat":
        return {"role": "tool", "tool_call_id": call_key(kind, raw), "content": text}
    output_type = _OUTPUT_TYPES.get(str(raw.get("type")), "function_call_output")
    return {"type": output_type, "call_id": call_key(kind, raw), "output": text}


def reply_bytes(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Splice:
    """What to put back around the part of the caller's history built from one reply."""

    before: tuple[dict[str, Any], ...] = ()  # re-asked exchanges, inserted before that reply
    calls: tuple[dict[str, Any], ...] = ()  # refused calls of that very reply, added back to it
    results: tuple[dict[str, Any], ...] = ()  # their refusals, added after the caller's own results
    order: tuple[str, ...] = ()  # the ids of that reply's calls as the model sent them (chat puts them back so)


@dataclass(frozen=True)
class Verdict:
    """What to do with a judged reply: hand over ``reply`` (None: the reply as received), or ask ``reask``."""

    reply: dict[str, Any] | None  # the reply without its refused calls
    reask: dict[str, Any] | None  # the request to send again, when every call of the reply was refused
    exchanges: list[dict[str, Any]]
    refused: frozenset[str] = frozenset()  # the ids of the calls answered here


@dataclass
class Steering:
    """The splices of one guarded client, by the ids of what the caller was handed (bounded, thread-safe)."""

    _by_anchor: OrderedDict[str, Splice] = field(default_factory=OrderedDict)
    _by_reply: OrderedDict[str, Splice] = field(default_factory=OrderedDict)  # by a Responses reply's id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- judging a reply -----------------------------------------------------------------------------------------
    def judge(
        self,
        kind: Endpoint,
        body: Mapping[str, Any],
        data: Mapping[str, Any],
        refused: Mapping[str, str],
        exchanges: list[dict[str, Any]],
    ) -> Verdict:
        """``refused``: call id -> what to tell the model. ``exchanges``: what earlier re-asks of ``body`` added."""
        raw = reply_calls(kind, data)
        if not refused:
            if exchanges:  # the caller sees only this reply: put the refused exchanges back before it later
                self._keep(_anchors(kind, data), Splice(before=tuple(exchanges)))
            return Verdict(None, None, exchanges)
        results = tuple(
            refusal_result(kind, call, refused[call_key(kind, call)]) for call in raw if _in(kind, call, refused)
        )
        if any(not _in(kind, call, refused) for call in raw):  # the caller runs these; the rest comes back later
            trimmed = _without(kind, data, set(refused))
            calls = tuple(as_param(call) for call in raw if _in(kind, call, refused))
            order = tuple(call_key(kind, call) for call in raw)
            reply_id = data.get("id") if kind == "responses" else None
            self._keep(_anchors(kind, trimmed), Splice(tuple(exchanges), calls, results, order), reply_id=reply_id)
            return Verdict(trimmed, None, exchanges, frozenset(refused))
        exchanges = [*exchanges, *_reply_items(kind, data), *results]
        return Verdict(None, _extended(kind, body, exchanges), exchanges, frozenset(refused))

    def _keep(self, anchors: Sequence[str], splice: Splice, *, reply_id: Any = None) -> None:
        with self._lock:
            for anchor in anchors:
                if anchor:
                    self._by_anchor[anchor] = splice
            if isinstance(reply_id, str) and reply_id and splice.results:
                self._by_reply[reply_id] = splice
            for table in (self._by_anchor, self._by_reply):
                while len(table) > _MAX_SPLICES:
                    table.popitem(last=False)

    # -- restoring a request -------------------------------------------------------------------------------------
    def restore(self, kind: Endpoint, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """``body`` with what the caller never saw put back, or None when nothing in it needs that."""
        with self._lock:
            if not (self._by_anchor or self._by_reply):
                return None
        return self._restore_chat(body) if kind == "chat" else self._restore_responses(body)

    def _find(self, keys: Sequence[Any]) -> Splice | None:
        with self._lock:
            for key in keys:
                splice = self._by_anchor.get(key) if isinstance(key, str) and key else None
                if splice is not None:
                    return splice
        return None

    def _restore_chat(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        restored: list[Any] = []
        changed = False
        index = 0
        while index < len(messages):
            message = messages[index]
            index += 1
            listed = message.get("tool_calls") if _is(message, "role", "assistant") else None
            calls: list[Any] = listed if isinstance(listed, list) else []
            splice = self._find([call.get("id") for call in calls if isinstance(call, Mapping)]) if calls else None
            if splice is None:
                restored.append(message)
                continue
            present = {call.get("id") for call in calls if isinstance(call, Mapping)}
            missing = [call for call in splice.calls if call.get("id") not in present]
            restored.extend(splice.before)
            if missing:
                ordered = sorted([*calls, *missing], key=lambda call: _position(splice.order, call))
                message = {**message, "tool_calls": ordered}
            restored.append(message)
            answered: set[Any] = set()
            while index < len(messages) and _is(messages[index], "role", "tool"):  # the caller's results
                answered.add(messages[index].get("tool_call_id"))
                restored.append(messages[index])
                index += 1
            ids = present | {call.get("id") for call in missing}
            results = [r for r in splice.results if r["tool_call_id"] in ids and r["tool_call_id"] not in answered]
            restored.extend(results)
            changed = changed or bool(splice.before or missing or results)
        return {**body, "messages": restored} if changed else None

    def _restore_responses(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        items = body.get("input")
        listed = items if isinstance(items, list) else None
        changed = False
        if listed is not None:
            owners = [self._owner(item) for item in listed]
            last = {id(splice): n for n, splice in enumerate(owners) if splice is not None}
            present = {item.get("call_id") for item in listed if isinstance(item, Mapping) and _is_call(item)}
            answered = {item.get("call_id") for item in listed if isinstance(item, Mapping) and _is_output(item)}
            restored: list[Any] = []
            started: set[int] = set()
            for n, (item, splice) in enumerate(zip(listed, owners)):
                if splice is not None and id(splice) not in started:
                    started.add(id(splice))
                    restored.extend(splice.before)
                    changed = changed or bool(splice.before)
                restored.append(item)
                if splice is not None and last[id(splice)] == n:
                    added = [call for call in splice.calls if call.get("call_id") not in present]
                    added += [result for result in splice.results if result["call_id"] not in answered]
                    restored.extend(added)
                    changed = changed or bool(added)
            listed = restored
        previous = body.get("previous_response_id")
        with self._lock:
            continued = self._by_reply.get(previous) if isinstance(previous, str) else None
        if continued is not None:  # the server holds that reply, refused calls included: answer them
            current = listed if listed is not None else ([] if items is None else [{"role": "user", "content": items}])
            answered = {item.get("call_id") for item in current if isinstance(item, Mapping) and _is_output(item)}
            missing = [result for result in continued.results if result["call_id"] not in answered]
            if missing:
                listed = [*missing, *current]
                changed = True
        return {**body, "input": listed} if changed else None

    def _owner(self, item: Any) -> Splice | None:
        """The splice of the reply an input item came from (an output item the caller was handed back)."""
        if not isinstance(item, Mapping) or _is_output(item) or item.get("role") in ("user", "system", "developer"):
            return None
        return self._find([item.get("call_id") if _is_call(item) else None, item.get("id")])


def _position(order: Sequence[str], call: Any) -> int:
    key = call.get("id") if isinstance(call, Mapping) else None
    return order.index(key) if key in order else len(order)


def _message(data: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = data.get("choices") or ()
    first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    message = first.get("message")
    return message if isinstance(message, Mapping) else {}


def _in(kind: Endpoint, call: Mapping[str, Any], refused: Mapping[str, str]) -> bool:
    return call_key(kind, call) in refused


def _is(obj: Any, key: str, value: str) -> bool:
    return isinstance(obj, Mapping) and obj.get(key) == value


def _is_call(item: Mapping[str, Any]) -> bool:
    return item.get("type") in _CALL_TYPES


def _is_output(item: Mapping[str, Any]) -> bool:
    return item.get("type") in _OUTPUT_TYPES.values()


def _anchors(kind: Endpoint, data: Mapping[str, Any]) -> list[str]:
    """What finds the caller's copy of a reply: its tool call ids (Responses: and its output item ids)."""
    if kind == "chat":
        return [call_key(kind, call) for call in reply_calls(kind, data)]
    anchors: list[str] = []
    for item in data.get("output") or ():
        if isinstance(item, Mapping):
            anchors += [str(item[key]) for key in ("call_id", "id") if item.get(key)]
    return anchors


def _without(kind: Endpoint, data: Mapping[str, Any], ids: set[str]) -> dict[str, Any]:
    """The reply ``data`` without the tool calls whose id is in ``ids``."""
    if kind == "responses":
        output = [
            item for item in data.get("output") or () if not (_is_call_item(item) and call_key(kind, item) in ids)
        ]
        return {**data, "output": output}
    choices = list(data.get("choices") or ())
    message = _message(data)
    calls = [call for call in message.get("tool_calls") or () if call_key(kind, call) not in ids]
    choices[0] = {**choices[0], "message": {**message, "tool_calls": calls}}
    return {**data, "choices": choices}


def _is_call_item(item: Any) -> bool:
    return isinstance(item, Mapping) and _is_call(item)


def _reply_items(kind: Endpoint, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A reply as it goes back into a request: the assistant message, or the output items."""
    if kind == "chat":  # the fields an assistant message of a request has (not a reply's annotations, say)
        message = as_param(_message(data))
        return [{"role": "assistant", **{key: message[key] for key in _ASSISTANT_FIELDS if key in message}}]
    return [as_param(item) for item in data.get("output") or () if isinstance(item, Mapping)]


def _extended(kind: Endpoint, body: Mapping[str, Any], exchanges: list[dict[str, Any]]) -> dict[str, Any]:
    """``body`` asked again with ``exchanges`` after its own history."""
    if kind == "chat":
        return {**body, "messages": [*(body.get("messages") or ()), *exchanges]}
    items = body.get("input")
    if isinstance(items, list):
        history: list[Any] = items
    else:
        history = [] if items is None else [{"role": "user", "content": items}]
    return {**body, "input": [*history, *exchanges]}
