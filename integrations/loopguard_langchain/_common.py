"""Small translations from LangChain objects to the breaker's vocabulary (shared with loopguard_langgraph)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from langgraph.config import get_config

from loopguard_core import estimate_tokens
from loopguard_core.tokens import History, message_chars

__all__ = [
    "agent_name",
    "estimate_history",
    "estimate_messages",
    "history_input",
    "message_digest_input",
    "message_history",
    "message_view",
    "model_cap",
    "model_facts",
    "model_name",
    "tool_outcome",
    "usage_of",
]

# Attribute names chat models use for their output cap (Anthropic/OpenAI/Google/Mistral integrations).
_CAP_ATTRS = ("max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens", "num_predict")
_NAME_ATTRS = ("model_name", "model", "model_id", "deployment_name")
_FACT_ATTRS = _NAME_ATTRS + _CAP_ATTRS
_BINDING = ("bound", "kwargs")  # a RunnableBinding's model and its bound kwargs


def agent_name(metadata: Mapping[str, Any] | None = None) -> str | None:
    """The agent a call belongs to: ``lc_agent_name`` (create_agent's ``name=``), else the enclosing
    subgraph's node name, else the graph node itself."""
    if metadata is None:
        try:
            metadata = get_config().get("metadata") or {}
        except (RuntimeError, KeyError):  # outside a runnable context
            return None
    name = metadata.get("lc_agent_name")
    if name:
        return str(name)
    # A node of a subgraph ("writer:<id>|tools:<id>"): the agent is the subgraph the node belongs to.
    namespace = str(metadata.get("langgraph_checkpoint_ns") or "")
    if "|" in namespace:  # (without one, no second part: a top-level node)
        parts = [part.split(":", 1)[0] for part in namespace.split("|") if part]
        if len(parts) >= 2:
            return parts[-2]
    node = metadata.get("langgraph_node")
    return str(node) if node else None


_MISSING = object()
_PLANS: dict[tuple[type, str], int] = {}
_PLAIN, _DICT, _PYDANTIC = 0, 1, 2


def _plan(cls: type, name: str) -> int:
    """How ``getattr(obj, name, None)`` can be answered for instances of ``cls``, decided once per class."""
    plan = _PLAIN
    if not hasattr(cls, name) and cls.__getattribute__ is object.__getattribute__:  # type: ignore[comparison-overlap]
        getter = getattr(cls, "__getattr__", None)
        if getter is None:
            plan = _DICT  # only the instance's own attributes can hold it
        else:
            try:
                from pydantic import BaseModel
            except ImportError:  # pragma: no cover - langchain requires pydantic
                BaseModel = None  # type: ignore[assignment,misc]
            private = getattr(cls, "__private_attributes__", None) or {}
            if BaseModel is not None and getter is BaseModel.__getattr__ and name not in private:
                plan = _PYDANTIC  # a field (instance dict) or an extra; nothing else
    if len(_PLANS) > 4_096:
        _PLANS.clear()
    _PLANS[(cls, name)] = plan
    return plan


def read_attr(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)`` without paying for a failed lookup: a pydantic model raises (and formats) an
    AttributeError for every attribute it lacks, a few microseconds each, and a chat model is asked for a dozen
    names it mostly lacks on every call. Same answer: the plan per class sends anything unusual (properties, class
    attributes, a custom ``__getattr__``) to ``getattr`` itself."""
    cls = type(obj)
    plan = _PLANS.get((cls, name))
    if plan is None:
        plan = _plan(cls, name)
    if plan == _PLAIN:
        return getattr(obj, name, None)
    attrs = getattr(obj, "__dict__", None)
    if attrs is not None:
        value = attrs.get(name, _MISSING)
        if value is not _MISSING:
            return value
    if plan == _PYDANTIC:
        extra = getattr(obj, "__pydantic_extra__", None)
        if extra and name in extra:
            return extra[name]
    return None


_READERS: dict[tuple[type, tuple[str, ...]], int] = {}


def _values(obj: Any, names: tuple[str, ...]) -> list[Any] | None:
    """``[read_attr(obj, name) for name in names]`` in one pass over the instance's own attributes, where its class
    lets every name be read there (a field or an extra of a pydantic model, a plain instance attribute); None where
    a name needs ``getattr`` itself (then the caller reads them one by one)."""
    cls = type(obj)
    kind = _READERS.get((cls, names))
    if kind is None:
        plans = [_plan(cls, name) for name in names]
        kind = _PLAIN if _PLAIN in plans else max(plans)
        if len(_READERS) > 4_096:
            _READERS.clear()
        _READERS[(cls, names)] = kind
    if kind == _PLAIN:
        return None
    attrs = getattr(obj, "__dict__", None) or {}
    values = list(map(attrs.get, names))  # (no bytecode per name)
    extra = getattr(obj, "__pydantic_extra__", None) if kind == _PYDANTIC else None
    if extra:  # read_attr's order: the instance's own attribute, then the extra of that name
        values = [extra.get(n) if v is None and n not in attrs else v for n, v in zip(names, values, strict=True)]
    return values


def _unbind(model: Any) -> tuple[Any, Mapping[str, Any]]:
    """Peel RunnableBinding layers (``model.bind(max_tokens=...)``, ``bind_tools``) keeping their kwargs."""
    kwargs: dict[str, Any] = {}
    for _ in range(8):
        values = _values(model, _BINDING)
        bound, extra = values if values is not None else (read_attr(model, "bound"), read_attr(model, "kwargs"))
        if bound is None or not isinstance(extra, Mapping):
            break
        for key, value in extra.items():
            kwargs.setdefault(key, value)
        model = bound
    return model, kwargs


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_cap(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _first(obj: Any, names: tuple[str, ...], accept: Callable[[Any], bool]) -> Any:
    """The first of ``read_attr(obj, name)`` for ``names`` that ``accept`` takes (never None), else None; where a
    name needs ``getattr`` it reads no further than the answer (a property past it is never run)."""
    values = _values(obj, names)
    if values is not None:
        return _accepted(values, accept)
    for name in names:
        value = read_attr(obj, name)
        if accept(value):
            return value
    return None


def _accepted(values: list[Any], accept: Callable[[Any], bool]) -> Any:
    for value in values:
        if value is not None and accept(value):
            return value
    return None


def _first_of(source: Mapping[str, Any], names: tuple[str, ...], accept: Callable[[Any], bool]) -> Any:
    for name in names:
        value = source.get(name)
        if accept(value):
            return value
    return None


def model_facts(model: Any, settings: Mapping[str, Any] | None = None) -> tuple[str | None, int]:
    """``(model_name(model), model_cap(model, settings))`` with the binding layers peeled once: a name or cap bound
    with ``.bind(...)`` (or, for the cap, passed in ``settings``) wins over the model's own."""
    inner, bound = _unbind(model)
    name = _first_of(bound, _NAME_ATTRS, _is_name) if bound else None
    cap = _first_of(settings, _CAP_ATTRS, _is_cap) if settings else None
    if cap is None and bound:
        cap = _first_of(bound, _CAP_ATTRS, _is_cap)
    if name is not None and cap is not None:
        return name, cap
    values = _values(inner, _FACT_ATTRS)  # both kinds in one pass over the model's own attributes
    if values is None:  # a name needs getattr: one by one, reading no further than each answer
        if name is None:
            name = _first(inner, _NAME_ATTRS, _is_name)
        if cap is None:
            cap = _first(inner, _CAP_ATTRS, _is_cap)
        return name, cap or 0
    if name is None:
        name = _accepted(values[: len(_NAME_ATTRS)], _is_name)
    if cap is None:
        cap = _accepted(values[len(_NAME_ATTRS) :], _is_cap)
    return name, cap or 0


def model_cap(model: Any, settings: Mapping[str, Any] | None = None) -> int:
    """The request's own output cap (``max_tokens`` and friends), 0 when the model sets none."""
    return model_facts(model, settings)[1]


def model_name(model: Any) -> str | None:
    return model_facts(model)[0]


def estimate_messages(messages: Iterable[Any], system: Any = None) -> int:
    """Pre-flight input estimate: the messages (plus the system message) at ~4 characters per token."""
    items = list(messages)
    if system is not None:
        items.insert(0, system)
    return estimate_tokens(items)


def message_view(message: Any) -> dict[str, Any]:
    """A plain view of one message (type, content, tool calls' names and arguments), as it is digested."""
    entry: dict[str, Any] = {"type": getattr(message, "type", type(message).__name__)}
    content = getattr(message, "content", _MISSING)
    entry["content"] = str(message) if content is _MISSING else content  # (str() only when needed: it is costly)
    calls = read_attr(message, "tool_calls")  # a ToolMessage has none: a failed getattr costs microseconds
    if calls:
        entry["tool_calls"] = [{"name": c.get("name"), "args": c.get("args")} for c in calls]
    return entry


def message_digest_input(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """A plain view of the messages (one :func:`message_view` each), e.g. for ``after_model(input=...)``."""
    return [message_view(message) for message in messages]


def message_history() -> History:
    """Per-hook running totals of the conversations it sees (LangChain hands the same message objects every turn):
    each turn estimates and digests only the messages added since the last, not the whole history again."""
    return History(view=message_view)


def estimate_history(history: History, messages: Any, system: Any = None) -> int:
    """``estimate_messages(messages, system)``, reading only the messages ``history`` has not seen yet."""
    if not isinstance(messages, (list, tuple)):
        return estimate_messages(messages, system)
    return history.estimate(messages, 0 if system is None else message_chars(system))


def history_input(history: History, messages: Any) -> dict[str, Any]:
    """What ``after_model(input=...)`` gets for the ledger: ``{"messages": n, "sha256": ...}``, a chained digest of
    every message's :func:`message_view` (``loopguard_core.tokens.history_digest(messages, message_view)``
    recomputes it), hashed into the ledger row and never stored. Only the new messages are hashed each turn."""
    if not isinstance(messages, (list, tuple)):
        messages = list(messages)
    return history.digest(messages)


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
    # (A ToolMessage first: asking a pydantic message for an attribute it lacks raises inside, ~3 us a call.)
    update = None if hasattr(output, "tool_call_id") else getattr(output, "update", None)
    if update is not None:
        messages = update.get("messages") if isinstance(update, Mapping) else None
        found = [m for m in messages or () if hasattr(m, "tool_call_id")]
        if not found:
            return repr(update), None
        message = found[-1]
    content = getattr(message, "content", message)
    if getattr(message, "status", None) == "error":
        return None, content if content else "error"
    return content, None
