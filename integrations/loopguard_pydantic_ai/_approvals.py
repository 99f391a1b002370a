"""Approval gates through Pydantic AI's own deferred tools, and ``approvals_for`` to resume them.

A gated call (``ToolPolicy(irreversible=True)``, or a tool registered with ``requires_approval=True``, which the
capability declares as irreversible) is not run while it waits for a person: the capability raises Pydantic AI's
``ApprovalRequired`` with loopguard's request in its metadata, so ``agent.run`` ends with a
``DeferredToolRequests`` output, as it does for Pydantic AI's own approvals. A person decides in loopguard's queue
(``loopguard approvals approve ID``, ``breaker.decide(...)``, another host); ``approvals_for(breaker, result)``
turns those decisions into the ``DeferredToolResults`` of the next run. That run hands the call back to the
capability, which asks the breaker again: approved runs (with edited arguments, if the person gave some),
rejected is refused (the model reads the reason under ``on_trip="steer"``, else the trip reaches the caller).
One decision, loopguard's: Pydantic AI's approval only carries it, so a ``requires_approval`` tool is never asked
about twice, and approving it in ``DeferredToolResults`` without a decision in the queue does not run it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved

from loopguard_core import ApprovalRequired, Breaker

__all__ = ["METADATA_KEY", "approval_metadata", "approvals_for", "asked_in", "run_of"]

#: where loopguard's request rides in ``DeferredToolRequests.metadata`` / ``DeferredToolResults.metadata``
METADATA_KEY = "loopguard"


def approval_metadata(waiting: ApprovalRequired) -> dict[str, Any]:
    """What a deferred call carries: loopguard's request (id, tool, preview, agent, spend) and its run."""
    facts = waiting.facts
    spend = facts.get("spend")
    return {
        METADATA_KEY: {
            "request_id": waiting.request_id,
            "run_id": facts.get("session_id"),
            "tool": waiting.tool,
            "agent": waiting.agent,
            "preview": facts.get("preview"),
            "spend": dict(spend) if isinstance(spend, Mapping) else None,
            "message": str(waiting),
        }
    }


def run_of(metadata: Any) -> str | None:
    """The breaker run that asked for the approval carried in a call's metadata, if any."""
    info = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    run = info.get("run_id") if isinstance(info, Mapping) else None
    return run if isinstance(run, str) and run else None


def asked_in(breaker: Breaker, tool: str, call_id: str | None) -> str | None:
    """The run whose open approval request this tool call made (results built without ``approvals_for``)."""
    if not call_id:
        return None
    request = breaker.find_approval(tool, call_id)
    return request.session_id if request is not None and request.status in ("approved", "rejected", "pending") else None


def approvals_for(breaker: Breaker, result: Any) -> DeferredToolResults:
    """The ``DeferredToolResults`` for the next run, from the decisions people made in loopguard's queue.

    ``result`` is the run result whose output is a ``DeferredToolRequests`` (or that output itself). Every gated
    call a person decided (approved, rejected, or left to expire) is handed back, so the next run lets the
    capability act on the decision exactly once; calls still pending are left out (``requests.remaining(results)``
    lists them: wait, or resume with the others and let them be asked again). Deferred calls that are not
    loopguard's (Pydantic AI tools the breaker does not gate) are left for you to answer.
    """
    requests = getattr(result, "output", result)
    if not isinstance(requests, DeferredToolRequests):
        raise TypeError(
            "approvals_for needs an agent run result whose output is DeferredToolRequests (or that output), got "
            f"{type(requests).__name__}; give the agent output_type=[str, DeferredToolRequests]"
        )
    queue = breaker.approvals
    now = getattr(queue, "wall_clock", time.time)()
    results = DeferredToolResults()
    for call in requests.approvals:
        info = (requests.metadata.get(call.tool_call_id) or {}).get(METADATA_KEY)
        if not isinstance(info, Mapping) or not isinstance(info.get("request_id"), str):
            continue
        request_id = str(info["request_id"])
        request = queue.get(request_id)
        if request is None or request.effective_status(now) in ("pending", "used"):
            continue
        results.approvals[call.tool_call_id] = ToolApproved()  # the capability acts on the decision itself
        results.metadata[call.tool_call_id] = {METADATA_KEY: {"request_id": request_id, "run_id": info.get("run_id")}}
    return results
