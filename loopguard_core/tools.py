"""Tool policies: what kind of tool a call goes to, declared once and used everywhere.

One :class:`ToolPolicy` per tool answers every question loopguard asks about it:

- **loop detection** reads ``poll`` (patience while waiting), ``noop`` (never progress), ``paging`` (meant to
  show something new each time), ``read_only`` / ``destructive`` / ``idempotent``;
- **approval gates** read ``irreversible`` (a person approves the call before it runs) and ``preview`` (what of
  the arguments that person may see);
- **idempotent side effects** read ``side_effect`` (run at most once per key), ``idempotency_key`` and
  ``ttl_seconds``.

Declarations come from you (``Breaker(tools={...})``, ``breaker.declare_tool``) and from what the framework
already carries (MCP ``readOnlyHint`` / ``destructiveHint`` / ``idempotentHint``, Pydantic AI
``requires_approval``, LangChain / CrewAI tool metadata). Yours win, field by field; the tool's name fills in
what nobody declared (``job_status`` is a poll, ``think`` a no-op, ``scroll_down`` paging).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["ArgsPreview", "KeyFunction", "ToolPolicy", "policy_mapping"]

#: builds the text a person sees when asked to approve a call, from its arguments (keep secrets out)
ArgsPreview = Callable[[Any], str]
#: builds an idempotency key from a call's arguments (e.g. ``lambda args: args["order_id"]``)
KeyFunction = Callable[[Any], str]

_FLAGS = ("read_only", "destructive", "idempotent", "poll", "noop", "paging", "irreversible", "side_effect")


@dataclass(frozen=True)
class ToolPolicy:
    """Facts and options for one tool; ``None`` means "not declared" (inference or the default decides)."""

    #: only reads (MCP ``readOnlyHint``)
    read_only: bool | None = None
    #: may destroy or overwrite something (MCP ``destructiveHint``)
    destructive: bool | None = None
    #: calling it again with the same arguments has no further effect (MCP ``idempotentHint``)
    idempotent: bool | None = None
    #: reports the status of something that changes on its own (a job, a deploy): patience while waiting
    poll: bool | None = None
    #: does nothing and learns nothing (``echo``, a comment, a ``think`` tool): never progress
    noop: bool | None = None
    #: each call is meant to show the next part of something (``scroll_down``, ``next_page``)
    paging: bool | None = None
    #: cannot be undone (a payment, an email, a deletion): a person approves each call before it runs
    irreversible: bool | None = None
    #: has an effect outside the run that must happen at most once per idempotency key
    side_effect: bool | None = None
    #: what a person asked to approve may see of the arguments (default: only their digest)
    preview: ArgsPreview | None = None
    #: the idempotency key from the arguments (default: run id + tool + canonical arguments)
    idempotency_key: KeyFunction | None = None
    #: how long a side effect's recorded outcome answers repeats (default: the idempotency store's)
    ttl_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in _FLAGS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"ToolPolicy.{name} must be True, False or None, got {value!r}")
        for name in ("preview", "idempotency_key"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"ToolPolicy.{name} must be a callable taking the arguments, got {value!r}")
        ttl = self.ttl_seconds
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
                raise TypeError(f"ToolPolicy.ttl_seconds must be a number of seconds, got {ttl!r}")
            if not (math.isfinite(ttl) and ttl > 0):
                raise ValueError(f"ToolPolicy.ttl_seconds must be > 0 and finite, got {ttl!r}")

    @property
    def needs_approval(self) -> bool:
        """Whether a person must approve each call before it runs."""
        return self.irreversible is True

    def over(self, base: ToolPolicy) -> ToolPolicy:
        """These declarations, with ``base`` filling in what they leave undeclared."""
        changes = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(base, **changes) if changes else base

    def describe(self) -> dict[str, Any]:
        """The declared fields, JSON-ready (callables by name): for logs and the ledger header."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = getattr(value, "__qualname__", repr(value)) if callable(value) else value
        return out

    @classmethod
    def from_mcp(cls, annotations: Any) -> ToolPolicy:
        """From MCP tool annotations (a mapping or an object with ``readOnlyHint`` ... attributes)."""
        return cls(
            read_only=_hint(annotations, "readOnlyHint", "read_only_hint"),
            destructive=_hint(annotations, "destructiveHint", "destructive_hint"),
            idempotent=_hint(annotations, "idempotentHint", "idempotent_hint"),
        )

    @classmethod
    def from_metadata(cls, metadata: Any) -> ToolPolicy:
        """From a framework's tool metadata: MCP annotation keys, an ``annotations`` entry holding them,
        and loopguard's own keys (``{"loopguard": {"irreversible": True}}`` or top-level ``poll`` / ``noop`` ...)."""
        if not isinstance(metadata, Mapping):
            return cls()
        declared = cls.from_mcp(metadata)
        nested = metadata.get("annotations")
        if nested is not None:
            declared = declared.over(cls.from_mcp(nested))
        if metadata.get("requires_approval") is True:  # Pydantic AI's flag, when handed over as metadata
            declared = cls(irreversible=True).over(declared)
        own = metadata.get("loopguard")
        source = own if isinstance(own, Mapping) else metadata
        values = {name: source.get(name) for name in _FLAGS if isinstance(source.get(name), bool)}
        if isinstance(own, Mapping):
            ttl = own.get("ttl_seconds")
            if ttl is not None:
                values["ttl_seconds"] = ttl
            for name in ("preview", "idempotency_key"):
                if callable(own.get(name)):
                    values[name] = own[name]
        return cls(**values).over(declared) if values else declared


def policy_mapping(param: str, value: object) -> Mapping[str, ToolPolicy]:
    """Checks ``{tool name: ToolPolicy or metadata mapping}`` and returns it with metadata read."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{param} must map tool names to ToolPolicy, got {type(value).__name__}")
    checked: dict[str, ToolPolicy] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{param} keys must be tool names (non-empty str), got {key!r}")
        if isinstance(item, Mapping):
            item = ToolPolicy.from_metadata(item)
        if not isinstance(item, ToolPolicy):
            raise TypeError(f"{param}[{key!r}] must be a ToolPolicy, got {type(item).__name__}")
        checked[key] = item
    return checked


def _hint(annotations: Any, *names: str) -> bool | None:
    for name in names:
        value = annotations.get(name) if isinstance(annotations, Mapping) else getattr(annotations, name, None)
        if isinstance(value, bool):
            return value
    return None
