"""Approval gates, tool declarations and side effects for one LangChain / LangGraph tool call.

Shared by ``LoopGuardMiddleware`` (``create_agent``), ``loopguard_langgraph.guarded_tool_node`` and
``loopguard_langgraph.guard_node``:

- **declarations**: the first time a tool object is seen, its ``BaseTool.metadata`` goes to
  ``Breaker.declare_tool`` (loopguard's own keys ``{"loopguard": {"irreversible": True}}``, and MCP annotations,
  which langchain-mcp-adapters copies into the metadata as ``readOnlyHint`` / ``destructiveHint`` / ...). Once per
  tool object and breaker: a dict lookup on the hot path.
- **approval gates**: a gated call (``ToolPolicy(irreversible=True)``) raises ``ApprovalRequired`` until a person
  decides. Inside a graph with a checkpointer the call then suspends the graph with LangGraph's own
  ``interrupt(payload)`` instead; on ``Command(resume=...)`` the node runs again and asks the breaker again:
  approved (with edited arguments, if the person changed them), rejected (a steerable trip) or still pending
  (interrupted again). The resume value itself is not read: the decision lives in loopguard's queue, so it can
  come from another process (``loopguard approvals approve ID``) or host. Without a checkpointer,
  ``ApprovalRequired`` reaches the caller.
- **the run a resumed invocation belongs to**: a resumed graph invocation is a new LangGraph invocation, but the
  gated call belongs to the breaker run that asked. The approval request holds the tool call id (kept in the
  checkpointed ``AIMessage``), so the call finds its run in the queue and the invocation continues that run.
- **side effects**: a ``ToolPolicy(side_effect=True)`` tool's body runs through ``Breaker.run_tool_body``: at most
  once per idempotency key; a repeat gets a ``ToolMessage`` carrying the recorded content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.messages import ToolMessage

from loopguard_core import ApprovalRequired, Breaker, ToolPolicy
from loopguard_core.approvals import ApprovalRequest

__all__ = [
    "ToolDeclarations",
    "acheck_tool",
    "approval_payload",
    "arun_body",
    "atool_body",
    "can_interrupt",
    "check_tool",
    "declare",
    "declare_named",
    "resumed_run",
    "run_body",
    "tool_body",
    "with_edits",
]

_DECLARED = "loopguard_langchain.declared"
_CHECKPOINTER_KEY = "__pregel_checkpointer"  # langgraph._internal._constants.CONFIG_KEY_CHECKPOINTER
_SCRATCHPAD_KEY = "__pregel_scratchpad"  # langgraph._internal._constants.CONFIG_KEY_SCRATCHPAD
_MEMORY = 4_096
_OPEN = ("approved", "rejected", "pending")


def _seen(breaker: Breaker) -> dict[str, Any]:
    return breaker.attachment(_DECLARED, dict)


def declare(breaker: Breaker, tool: Any) -> None:
    """Hand a LangChain tool's metadata to ``breaker.declare_tool``, once per tool object."""
    name = getattr(tool, "name", None)
    if not isinstance(name, str) or not name:
        return
    seen = _seen(breaker)
    if seen.get(name) is tool:
        return
    metadata = getattr(tool, "metadata", None)
    if isinstance(metadata, Mapping) and metadata:
        breaker.declare_tool(name, metadata)
    if len(seen) >= _MEMORY:
        seen.clear()
    seen[name] = tool


class ToolDeclarations:
    """:func:`declare` for one hook object: the breaker's registry of declared tools read once, not on every call
    (one dict read per call of a tool declared already)."""

    __slots__ = ("_breaker", "_seen")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._seen = _seen(breaker)  # (the same dict for the breaker's life: cleared in place)

    def __call__(self, tool: Any) -> None:
        # The breaker's registry, not one of this hook's own: another hook may have declared another tool object
        # under this name since, and this call runs under its own tool's declaration.
        if self._seen.get(getattr(tool, "name", None)) is not tool:
            declare(self._breaker, tool)


def declare_named(breaker: Breaker, name: str, metadata: Mapping[str, Any] | None) -> None:
    """Declare from metadata seen by name only (a callback gets the tool's metadata merged into the run's)."""
    seen = _seen(breaker)
    if name in seen:
        return
    if isinstance(metadata, Mapping) and metadata:
        breaker.declare_tool(name, metadata)
    if len(seen) >= _MEMORY:
        seen.clear()
    seen[name] = True


def can_interrupt() -> bool:
    """True inside a LangGraph node whose graph has a checkpointer (``interrupt`` can suspend and resume it)."""
    try:
        from langgraph.config import get_config

        configurable = get_config().get("configurable") or {}
    except (RuntimeError, ImportError, KeyError):
        return False
    return configurable.get(_CHECKPOINTER_KEY) is not None and configurable.get(_SCRATCHPAD_KEY) is not None


def resumed_run(breaker: Breaker, tool: str, call_id: str | None) -> str | None:
    """The run whose open approval request this tool call made (a resumed invocation), if any."""
    if not call_id:
        return None
    request = breaker.find_approval(tool, call_id)
    return request.session_id if request is not None and request.status in _OPEN else None


def approval_payload(waiting: ApprovalRequired) -> dict[str, Any]:
    """What ``interrupt`` shows the client: everything a person needs to decide, and how to decide."""
    facts = waiting.facts
    request_id = waiting.request_id
    spend = facts.get("spend")
    return {
        "loopguard": {
            "kind": "approval",
            "request_id": request_id,
            "tool": waiting.tool,
            "agent": waiting.agent,
            "preview": facts.get("preview"),
            "spend": dict(spend) if isinstance(spend, Mapping) else None,
            "run_id": facts.get("session_id"),
            "message": str(waiting),
            "decide": f"loopguard approvals approve {request_id} (or: reject {request_id} --reason ...)",
        }
    }


def check_tool(
    breaker: Breaker, name: str, args: Any, agent: str | None, call_id: str | None, batch: str | None = None
) -> ApprovalRequest | None:
    """``before_tool``, suspending the graph with ``interrupt`` while a gated call waits for a person. ``batch``
    names the model answer the call came in (``_batch``): parallel siblings are judged as the model saw them."""
    while True:
        try:
            return breaker.before_tool(name, args, agent=agent, call_id=call_id, batch=batch)
        except ApprovalRequired as waiting:
            if not can_interrupt():
                raise
            from langgraph.types import interrupt

            interrupt(approval_payload(waiting))  # suspends; on resume returns, and we ask the breaker again


async def acheck_tool(
    breaker: Breaker, name: str, args: Any, agent: str | None, call_id: str | None, batch: str | None = None
) -> ApprovalRequest | None:
    while True:
        try:
            return await breaker.abefore_tool(name, args, agent=agent, call_id=call_id, batch=batch)
        except ApprovalRequired as waiting:
            if not can_interrupt():
                raise
            from langgraph.types import interrupt

            interrupt(approval_payload(waiting))


def with_edits(request: Any, args: Any, approval: ApprovalRequest | None) -> tuple[Any, Any]:
    """The arguments and ``ToolCallRequest`` to run: a person's edited arguments replace the model's."""
    changed = None if approval is None else approval.args()
    if changed is None:
        return args, request
    return changed, request.override(tool_call={**request.tool_call, "args": changed})


def _record(output: Any) -> dict[str, Any]:
    """What a side effect's outcome is stored as: the answer's content and status (JSON)."""
    message = output
    update = getattr(output, "update", None)
    if not hasattr(output, "tool_call_id") and isinstance(update, Mapping):
        found = [m for m in update.get("messages") or () if hasattr(m, "tool_call_id")]
        message = found[-1] if found else None
    if message is None or not hasattr(message, "content"):
        return {"content": str(output), "status": "success"}
    return {"content": message.content, "status": getattr(message, "status", "success") or "success"}


def _rebuild(record: Any, name: str, call_id: str | None) -> ToolMessage:
    content = record.get("content", "") if isinstance(record, Mapping) else str(record)
    status = record.get("status", "success") if isinstance(record, Mapping) else "success"
    return ToolMessage(
        content=content,
        tool_call_id=call_id or "",
        name=name,
        status="error" if status == "error" else "success",
        response_metadata={"loopguard_side_effect": "recorded outcome"},
    )


def run_body(breaker: Breaker, name: str, args: Any, call_id: str | None, run: Callable[[], Any]) -> Any:
    """Run the tool body as its policy says: a side effect at most once per key (a repeat gets the recorded
    content in a ToolMessage answering this call), anything else as it is."""
    if not breaker.tool_policy(name).side_effect:
        return run()
    produced: list[Any] = []

    def body() -> dict[str, Any]:
        output = run()
        produced.append(output)
        return _record(output)

    record = breaker.run_tool_body(name, args, body)
    return produced[0] if produced else _rebuild(record, name, call_id)


async def arun_body(
    breaker: Breaker, name: str, args: Any, call_id: str | None, run: Callable[[], Awaitable[Any]]
) -> Any:
    if not breaker.tool_policy(name).side_effect:
        return await run()
    produced: list[Any] = []

    async def body() -> dict[str, Any]:
        output = await run()
        produced.append(output)
        return _record(output)

    record = await breaker.arun_tool_body(name, args, body)
    return produced[0] if produced else _rebuild(record, name, call_id)


def tool_body(
    breaker: Breaker,
    name: str,
    args: Any,
    call_id: str | None,
    handler: Callable[[Any], Any],
    policy: ToolPolicy | None = None,
) -> Callable[[Any], Any]:
    """What runs the tool, called with the ``ToolCallRequest``: ``handler``, through :func:`run_body` when the tool's
    body is a side effect (``policy``: the tool's, when the caller read it already)."""
    if not (policy or breaker.tool_policy(name)).side_effect:
        return handler  # (no wrapper around the body of every other call)
    return lambda request: run_body(breaker, name, args, call_id, lambda: handler(request))


def atool_body(
    breaker: Breaker,
    name: str,
    args: Any,
    call_id: str | None,
    handler: Callable[[Any], Awaitable[Any]],
    policy: ToolPolicy | None = None,
) -> Callable[[Any], Awaitable[Any]]:
    """:func:`tool_body` for an async handler."""
    if not (policy or breaker.tool_policy(name)).side_effect:
        return handler
    return lambda request: arun_body(breaker, name, args, call_id, lambda: handler(request))
