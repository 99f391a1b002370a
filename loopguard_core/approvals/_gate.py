"""The approval gate a breaker runs before a gated tool call: ask, wait, and act on the decision once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ApprovalError, ApprovalRequired, LoopGuardTripped
from ..signatures import canonical_text
from ..tools import ToolPolicy
from ..typing import LedgerSink
from ._queue import ApprovalQueue, MemoryApprovals
from ._request import ApprovalRequest

__all__ = ["Gate", "record_decision"]

logger = logging.getLogger("loopguard")

_PREVIEW_CHARS = 2_000
_POLL_SECONDS = (0.05, 1.0)  # first and longest pause between two looks at the queue while waiting


def record_decision(ledger: LedgerSink | None, request: ApprovalRequest) -> None:
    """The ledger row of a decision: who decided, when (the row's time), which request, for which tool."""
    if ledger is None:
        return
    ledger.record(
        session_id=request.session_id,
        origin="approval",
        turn=request.turn,
        agent=request.decided_by,
        tool=request.tool,
        input_text=request.args_digest,
        passed=request.status == "approved",
        breach_reason=f"{request.status}:{request.id}",
    )


class Gate:
    """Asks once per call, finds the decision when the run asks again, and hands it over exactly once."""

    def __init__(
        self,
        queue: ApprovalQueue,
        *,
        wait_seconds: float,
        expire_seconds: float | None,
        ledger: LedgerSink | None,
    ) -> None:
        self.queue = queue
        self.wait_seconds = wait_seconds
        self.expire_seconds = expire_seconds
        self._ledger = ledger
        self._now: Callable[[], float] = getattr(queue, "wall_clock", time.time)  # the queue's idea of "now"
        self._hash: Callable[[str], str] = getattr(ledger, "hash_input", None) or _sha256

    def digest(self, tool: str, args: Any) -> str:
        """The arguments as the queue knows them: a digest (keyed like the ledger's inputs when it is keyed)."""
        return self._hash(f"{tool}\x00{canonical_text(args, loose=False)}")

    def ask(
        self,
        *,
        scope: str,
        session_id: str,
        tool: str,
        args: Any,
        policy: ToolPolicy,
        agent: str | None,
        call_id: str | None,
        spend: Callable[[], tuple[int, dict[str, Any]]],
    ) -> ApprovalRequest:
        """The open request for this call, queued now if there is none."""
        digest = self.digest(tool, args)
        found = self.queue.find_open(scope, session_id, tool, digest)
        if found is not None:
            return found
        turn, so_far = spend()
        now = self._now()
        request = ApprovalRequest(
            id=uuid.uuid4().hex,
            scope=scope,
            session_id=session_id,
            tool=tool,
            args_digest=digest,
            agent=agent,
            call_id=call_id,
            preview=_preview(policy, args),
            spend=so_far,
            turn=turn,
            created_at=now,
            expires_at=None if self.expire_seconds is None else now + self.expire_seconds,
        )
        queued = self.queue.submit(request)
        if queued.id == request.id and self._ledger is not None:
            self._ledger.record(
                session_id=session_id,
                origin="approval",
                turn=turn,
                agent=agent,
                tool=tool,
                input_text=canonical_text(args, loose=False),
                passed=True,
                breach_reason=f"requested:{request.id}",
            )
            logger.warning("loopguard: %r waits for a person's approval (request %s)", tool, request.id)
        return queued

    def wait(self, request: ApprovalRequest) -> ApprovalRequest:
        """Polls the queue until the request is decided or ``wait_seconds`` ran out (no lock is held)."""
        deadline, pause = time.monotonic() + self.wait_seconds, _POLL_SECONDS[0]
        while request.effective_status(self._now()) == "pending" and time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            request = self.queue.get(request.id) or request
            pause = min(pause * 2, _POLL_SECONDS[1])
        return request

    async def await_(self, request: ApprovalRequest) -> ApprovalRequest:
        deadline, pause = time.monotonic() + self.wait_seconds, _POLL_SECONDS[0]
        while request.effective_status(self._now()) == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            request = self.queue.get(request.id) or request
            pause = min(pause * 2, _POLL_SECONDS[1])
        return request

    def settle(self, request: ApprovalRequest, facts: dict[str, Any], *, accept_edits: bool = True) -> ApprovalRequest:
        """Acts on the request's status: returns it when approved (and marks it used), raises otherwise."""
        status = request.effective_status(self._now())
        facts = {**facts, "request_id": request.id, "tool": request.tool}
        if status == "pending":
            raise ApprovalRequired(**facts, preview=request.preview, spend=request.spend)
        if status == "approved" and request.edited_args is not None and not accept_edits:
            raise ApprovalError(
                f"approval request {request.id} was approved with edited arguments, which this integration cannot "
                f"apply to {request.tool!r} (it cannot change a call's arguments); the approval stays unused: "
                "approve the call as asked, or use an integration that can run edited arguments"
            )
        if status == "approved":
            self.queue.mark_used(request.id)  # exactly once: a second taker gets ApprovalError and asks anew
            return request
        if status == "expired":  # nobody decided in time: refused like a rejection; asking again asks anew
            self.queue.mark_used(request.id)
            facts.update(decided_by="nobody", decision_reason=f"no decision within {self.expire_seconds} s")
            raise LoopGuardTripped("approval_rejected", **facts)
        # rejected: the model is told once; asking again queues a new request for a person
        self.queue.mark_used(request.id)
        facts.update(decided_by=request.decided_by or "a person", decision_reason=request.reason or "no reason given")
        raise LoopGuardTripped("approval_rejected", **facts)


def default_queue(ledger: LedgerSink | None) -> ApprovalQueue:
    """The ledger's own database when there is one (SQLite file or PostgreSQL), else this process only."""
    from . import approval_queue

    url = getattr(ledger, "url", None)
    if isinstance(url, str) and url and url != ":memory:":
        return approval_queue(url)
    logger.warning(
        "loopguard: a tool needs approval but the breaker has no ledger database and no approvals= queue; "
        "requests are kept in this process only (pass approvals='sqlite:///approvals.db' to decide elsewhere)"
    )
    return MemoryApprovals()


def check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _preview(policy: ToolPolicy, args: Any) -> str | None:
    if policy.preview is None:
        return None
    try:
        text = policy.preview(args)
    except Exception as exc:  # a preview that fails must not block the request: the person sees why
        return f"<preview failed: {type(exc).__name__}>"
    return str(text)[:_PREVIEW_CHARS]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
