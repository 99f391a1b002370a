"""Which model answer a tool call came in (its *batch*), so that parallel siblings are judged as the model saw them.

A model that answers with several tool calls at once saw none of their results, and LangGraph runs them in
parallel (``create_agent`` sends each call to the tools node on its own; a plain ``ToolNode`` runs a batch's sync
calls on worker threads). Passed as ``Breaker.before_tool(..., call_id=..., batch=...)``, the batch makes each
sibling's verdict independent of which sibling finished first (see ``docs/loop-detection.md``, "Parallel calls of
one answer"). The batch is the id of the ``AIMessage`` whose ``tool_calls`` hold the call (LangGraph's
``add_messages`` gives every message an id); a message without one is named by its tool call ids instead.

A call repeated within its own answer (the same tool and arguments twice or more) gets the batch too: an identical
sibling that already reported counts as a call still in flight, so it is a repeat whatever the timing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["batch_of", "batch_of_state", "message_batch"]

_ANSWERS = 8  # model answers with tool calls looked at from the end: a running call came in one of the last


def message_batch(message: Any) -> str | None:
    """The batch name of a model message that carries tool calls: its id, else its tool call ids joined."""
    calls = getattr(message, "tool_calls", None) if getattr(message, "type", None) == "ai" else None
    if not calls:
        return None
    found = getattr(message, "id", None)
    if isinstance(found, str) and found:
        return found
    ids = [call.get("id") for call in calls if isinstance(call, Mapping)]
    return "calls:" + "|".join(str(i) for i in ids) if ids and all(ids) else None


def batch_of(messages: Sequence[Any] | None, call_id: str | None) -> str | None:
    """The batch of tool call ``call_id``: the last model message in ``messages`` whose tool calls hold it (None
    when there is none, or when the call is the only one of its answer, and then the call is judged on its own)."""
    if not call_id or not messages or isinstance(messages, (str, bytes)):
        return None
    answers = 0
    for message in reversed(messages):
        if getattr(message, "type", None) != "ai":
            continue
        calls = getattr(message, "tool_calls", None)
        if not calls:
            continue
        for call in calls:  # (a loop, not any(): no generator per message)
            if (type(call) is dict or isinstance(call, Mapping)) and call.get("id") == call_id:
                # A call alone in its answer has no sibling to be judged beside: no batch to keep for it.
                return message_batch(message) if len(calls) > 1 else None
        answers += 1
        if answers >= _ANSWERS:  # not among the last answers: not from this history (never a whole-history walk)
            return None
    return None


def batch_of_state(state: Any, call_id: str | None, messages_key: str = "messages") -> str | None:
    """:func:`batch_of` over a graph state: a mapping or object with ``messages_key``, or a list of messages."""
    if not call_id or state is None:
        return None
    # (the exact built-in types skip the ABC checks: this runs on every tool call)
    if type(state) is dict or isinstance(state, Mapping):
        messages = state.get(messages_key)
    elif type(state) is list or (isinstance(state, Sequence) and not isinstance(state, (str, bytes))):
        messages = state
    else:
        messages = getattr(state, messages_key, None)
    return batch_of(messages, call_id) if type(messages) is list or isinstance(messages, Sequence) else None
