"""Small translations from LangChain objects to the breaker's vocabulary (shared with loopguard_langgraph)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loopguard_core import estimate_tokens

__all__ = [
    "agent_name",
    "estimate_messages",
    "message_digest_input",
    "model_cap",
    "model_name",
    "tool_outcome",
    "usage_of",
]

# Attribute names chat models use for their output cap (Anthropic/OpenAI/Google/Mistral integrations).
_CAP_ATTRS = ("max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens", "num_predict")
_NAME_ATTRS = ("model_name", "model", "model_id", "deployment_name")


def agent_name(metadata: Mapping[str, Any] | None = None) -> str | None:
    """The agent a call belongs to: ``lc_agent_name`` (create_agent's ``name=``), else the enclosing
    subgraph's node name, else the graph node itself."""
    if metadata is None:
        try:
            from langgraph.config import get_config

            metadata = get_config().get("metadata") or {}
        except (RuntimeError, ImportError, KeyError):  # outside a runnable context
            return None
    name = metadata.get("lc_agent_name")
    if name:
        return str(name)
    # A node of a subgraph ("writer:<id>|tools:<id>"): the agent is the subgraph the node belongs to.
    namespace = metadata.get("langgraph_checkpoint_ns") or ""
    parts = [part.split(":", 1)[0] for part in str(namespace).split("|") if part]
    if len(parts) >= 2:
        return parts[-2]
    node = metadata.get("langgraph_node")
    return str(node) if node else None


def _unbind(model: Any) -> tuple[Any, Mapping[str, Any]]:
    """Peel RunnableBinding layers (``model.bind(max_tokens=...)``, ``bind_tools``) keeping their kwargs."""
    kwargs: dict[str, Any] = {}
    for _ in range(8):
        bound = getattr(model, "bound", None)
        extra = getattr(model, "kwargs", None)
        if bound is None or not isinstance(extra, Mapping):
            break
        for key, value in extra.items():
            kwargs.setdefault(key, value)
        model = bound
    return model, kwargs


def model_cap(model: Any, settings: Mapping[str, Any] | None = None) -> int:
    """The request's own output cap (``max_tokens`` and friends), 0 when the model sets none."""
    inner, bound = _unbind(model)
    for source in (settings or {}, bound):
        for attr in _CAP_ATTRS:
            value = source.get(attr)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    for attr in _CAP_ATTRS:
        value = getattr(inner, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def model_name(model: Any) -> str | None:
    inner, bound = _unbind(model)
    for source in (bound, {a: getattr(inner, a, None) for a in _NAME_ATTRS}):
        for attr in _NAME_ATTRS:
            value = source.get(attr)
            if isinstance(value, str) and value:
                return value
    return None


def estimate_messages(messages: Iterable[Any], system: Any = None) -> int:
    """Pre-flight input estimate: the messages (plus the system message) at ~4 characters per token."""
    items = list(messages)
    if system is not None:
        items.insert(0, system)
    return estimate_tokens(items)


def message_digest_input(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """A plain view of the messages for ``after_model(input=...)``: hashed into the ledger, never stored."""
    view = []
    for message in messages:
        entry: dict[str, Any] = {"type": getattr(message, "type", type(message).__name__)}
        entry["content"] = getattr(message, "content", str(message))
        calls = getattr(message, "tool_calls", None)
        if calls:
            entry["tool_calls"] = [{"name": c.get("name"), "args": c.get("args")} for c in calls]
        view.append(entry)
    return view


def usage_of(messages: Iterable[Any]) -> tuple[int, int] | None:
    """``(input_tokens, output_tokens)`` from the last message carrying ``usage_metadata``."""
    for message in reversed(list(messages)):
        usage = getattr(message, "usage_metadata", None)
        if usage:
            return int(usage.get("input_tokens", 0) or 0), int(usage.get("output_tokens", 0) or 0)
    return None


def tool_outcome(output: Any) -> tuple[Any, Any]:
    """``(result, error)`` of a tool node's answer: a ToolMessage, a Command carrying one, or anything else."""
    message = output
    update = getattr(output, "update", None)
    if update is not None and not hasattr(output, "tool_call_id"):
        messages = update.get("messages") if isinstance(update, Mapping) else None
        found = [m for m in messages or () if hasattr(m, "tool_call_id")]
        if not found:
            return repr(update), None
        message = found[-1]
    content = getattr(message, "content", message)
    if getattr(message, "status", None) == "error":
        return None, content if content else "error"
    return content, None
