"""AgentLoop: a minimal, guarded tool-use loop over an Anthropic-shaped client.

Any provider works through a small adapter that offers ``client.messages.create(model=, max_tokens=,
system=, messages=, tools=)`` and returns a message with ``content`` blocks (``text`` / ``tool_use``),
``stop_reason`` and ``usage.input_tokens/output_tokens`` (objects or dicts). Every model call and every
tool call goes through the breaker pre-flight; the spec's three answers become the system prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .breaker import Breaker
from .errors import LoopGuardTripped
from .spec import Spec
from .tokens import estimate_tokens

__all__ = ["AgentLoop", "AgentResult", "LLMClient", "MessagesEndpoint"]


@runtime_checkable
class MessagesEndpoint(Protocol):
    def create(self, **kwargs: Any) -> Any: ...


@runtime_checkable
class LLMClient(Protocol):
    """Anything with ``.messages.create(...)`` shaped like the Anthropic SDK."""

    @property
    def messages(self) -> MessagesEndpoint: ...


@dataclass(frozen=True)
class AgentResult:
    """How a run ended. ``trip`` is set when the breaker refused a call (its body never ran)."""

    success: bool
    stop_reason: str
    turns: int
    total_tokens: int
    cost_usd: float
    session_id: str
    tool_calls: int
    final_text: str = ""
    trip: LoopGuardTripped | None = None
    transcript: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def breach_reason(self) -> str | None:
        return None if self.trip is None else self.trip.reason


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _block_dict(block: Any) -> dict[str, Any]:
    kind = _get(block, "type")
    if kind == "text":
        return {"type": "text", "text": _get(block, "text", "")}
    if kind == "tool_use":
        return {"type": "tool_use", "id": _get(block, "id"), "name": _get(block, "name"), "input": _get(block, "input")}
    return {"type": str(kind)}


def _schema_for(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    params = {}
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    required = []
    for param in signature.parameters.values() if signature else ():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        params[param.name] = {"type": "string" if param.annotation in (str, "str") else "object"}
        if param.default is param.empty:
            required.append(param.name)
    return {
        "name": name,
        "description": (inspect.getdoc(fn) or name).splitlines()[0],
        "input_schema": {"type": "object", "properties": params, "required": required},
    }


class AgentLoop:
    """Runs a task to ``end_turn`` (or to the breaker's refusal), executing tool_use blocks."""

    def __init__(
        self,
        client: LLMClient,
        breaker: Breaker,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        spec: Spec | None = None,
        model: str = "claude-sonnet-4-5",
        max_tokens: int = 1024,
        tool_schemas: Sequence[Mapping[str, Any]] | None = None,
        agent: str = "agent",
        raise_on_trip: bool = False,
    ) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"breaker must be a loopguard_core.Breaker, got {type(breaker).__name__}")
        if not hasattr(client, "messages") or not callable(getattr(client.messages, "create", None)):
            raise TypeError("client must offer client.messages.create(...) like the Anthropic SDK")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError(f"max_tokens must be an int > 0, got {max_tokens!r}")
        self.client = client
        self.breaker = breaker
        self.tools = dict(tools or {})
        for name, fn in self.tools.items():
            if not callable(fn):
                raise TypeError(f"tool {name!r} must be callable, got {type(fn).__name__}")
        self.spec = spec
        self.model = model
        self.max_tokens = max_tokens
        self.tool_schemas = (
            [dict(s) for s in tool_schemas]
            if tool_schemas is not None
            else [_schema_for(n, f) for n, f in self.tools.items()]
        )
        self.agent = agent
        self.raise_on_trip = raise_on_trip

    def system_prompt(self) -> str:
        return self.spec.system_prompt() if self.spec is not None else ""

    def run(self, task: str) -> AgentResult:
        with self.breaker.run(self.spec.session_id if self.spec is not None else None):
            return self._run(task)

    def _run(self, task: str) -> AgentResult:
        messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
        system = self.system_prompt()
        final_text = ""
        trip: LoopGuardTripped | None = None
        stop_reason = "end_turn"
        try:
            while True:
                self.breaker.before_model(
                    model=self.model,
                    estimated_input_tokens=estimate_tokens(messages) + estimate_tokens(system),
                    max_output_tokens=self.max_tokens,
                    agent=self.agent,
                )
                kwargs: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}
                if system:
                    kwargs["system"] = system
                if self.tool_schemas:
                    kwargs["tools"] = self.tool_schemas
                try:
                    response = self.client.messages.create(**kwargs)
                except Exception as exc:
                    self.breaker.model_failed(model=self.model, agent=self.agent, error=exc)
                    raise
                usage = _get(response, "usage")
                self.breaker.after_model(
                    input_tokens=int(_get(usage, "input_tokens", 0) or 0),
                    output_tokens=int(_get(usage, "output_tokens", 0) or 0),
                    model=self.model,
                    agent=self.agent,
                    input=messages,
                )
                blocks = [_block_dict(b) for b in (_get(response, "content") or [])]
                messages.append({"role": "assistant", "content": blocks})
                texts = [b["text"] for b in blocks if b["type"] == "text"]
                if texts:
                    final_text = texts[-1]
                uses = [b for b in blocks if b["type"] == "tool_use"]
                stop_reason = _get(response, "stop_reason") or "end_turn"
                if not uses or stop_reason != "tool_use":
                    break
                messages.append({"role": "user", "content": [self._call_tool(use) for use in uses]})
        except LoopGuardTripped as error:
            if self.raise_on_trip:
                raise
            trip, stop_reason = error, "tripped"
        snapshot = self.breaker.usage()
        return AgentResult(
            success=trip is None,
            stop_reason=stop_reason,
            turns=snapshot.turns,
            total_tokens=snapshot.tokens,
            cost_usd=snapshot.cost_usd,
            session_id=self.breaker.session_id,
            tool_calls=snapshot.tool_calls,
            final_text=final_text,
            trip=trip,
            transcript=tuple(messages),
        )

    def _call_tool(self, use: dict[str, Any]) -> dict[str, Any]:
        name, args, call_id = use["name"], use.get("input") or {}, use.get("id")
        self.breaker.before_tool(name, args, agent=self.agent, call_id=call_id)
        fn = self.tools.get(name)
        try:
            if fn is None:
                raise LookupError(f"unknown tool {name!r}")
            result = fn(**args) if isinstance(args, Mapping) else fn(args)
        except LoopGuardTripped:
            raise
        except Exception as exc:
            self.breaker.after_tool(name, args, error=exc, agent=self.agent, call_id=call_id)
            return {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": f"{type(exc).__name__}: {exc}",
                "is_error": True,
            }
        self.breaker.after_tool(name, args, result=result, agent=self.agent, call_id=call_id)
        return {"type": "tool_result", "tool_use_id": call_id, "content": str(result)}
