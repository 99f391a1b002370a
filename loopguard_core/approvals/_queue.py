"""The approval queue: where requests wait for a person, possibly in another process or on another host."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import ApprovalError
from ._request import DECIDED, OPEN, STATUSES, ApprovalRequest

__all__ = ["ApprovalQueue", "MemoryApprovals", "decide", "edited_json"]

WallClock = Callable[[], float]


@runtime_checkable
class ApprovalQueue(Protocol):
    """Requests by id; at most one open request per (scope, run, tool, arguments digest).

    ``submit`` returns the open request for the same call if there is one (asking twice never queues twice);
    ``decide`` moves a pending request to approved or rejected (once); ``mark_used`` records that the run acted
    on the decision and erases any edited arguments.
    """

    url: str

    def submit(self, request: ApprovalRequest) -> ApprovalRequest: ...

    def get(self, request_id: str) -> ApprovalRequest | None: ...

    def find_open(self, scope: str, session_id: str, tool: str, args_digest: str) -> ApprovalRequest | None: ...

    def find_by_call(self, scope: str, tool: str, call_id: str) -> ApprovalRequest | None:
        """The newest request for the framework's call id (a checkpointed tool call resumed in a new invocation)."""
        ...

    def list(self, status: str | None = None, limit: int = 100) -> list[ApprovalRequest]: ...

    def decide(
        self,
        request_id: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        args: Any = None,
    ) -> ApprovalRequest: ...

    def mark_used(self, request_id: str) -> ApprovalRequest: ...

    def close(self) -> None: ...


def edited_json(args: Any) -> str | None:
    """Edited arguments as JSON (they cross processes), or a clear error when they cannot be."""
    if args is None:
        return None
    try:
        return json.dumps(args, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ApprovalError(f"edited arguments must be JSON (a dict of the tool's arguments): {exc}") from None


def decide(
    current: ApprovalRequest | None,
    request_id: str,
    *,
    approve: bool,
    by: str,
    reason: str | None,
    args: Any,
    now: float,
) -> ApprovalRequest:
    """The one rule for a decision: only a pending, unexpired request can be decided, and only once."""
    if not isinstance(by, str) or not by.strip():
        raise ApprovalError("a decision needs who made it (by='alice')")
    if reason is not None and not isinstance(reason, str):
        raise ApprovalError(f"reason must be text, got {type(reason).__name__}")
    if current is None:
        raise ApprovalError(f"no approval request {request_id!r}: `loopguard approvals list` shows the pending ones")
    status = current.effective_status(now)
    if status != "pending":
        raise ApprovalError(
            f"approval request {request_id} is {status}"
            + (f" (by {current.decided_by})" if current.decided_by else "")
            + ": only a pending request can be decided"
        )
    if not approve and args is not None:
        raise ApprovalError("edited arguments go with an approval, not a rejection")
    return current.with_status(
        "approved" if approve else "rejected",
        decided_at=now,
        decided_by=by.strip()[:200],
        reason=None if reason is None else reason[:2_000],
        edited_args=edited_json(args) if approve else None,
    )


def used(current: ApprovalRequest | None, request_id: str, now: float) -> ApprovalRequest:
    """The run acted on a decision (or on a request nobody decided in time, which becomes ``expired``)."""
    if current is None:
        raise ApprovalError(f"no approval request {request_id!r}")
    status = current.effective_status(now)
    if status == "expired" and current.status == "pending":
        return current.with_status("expired")
    if status not in DECIDED:
        raise ApprovalError(f"approval request {request_id} is {status}: only a decided request can be used")
    return current.with_status("used", edited_args=None)


def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ApprovalError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")


class MemoryApprovals:
    """Requests in this process only: a person decides through ``breaker.approvals`` in the same process
    (tests, notebooks). Use ``sqlite:///path`` or the PostgreSQL ledger database to decide from elsewhere."""

    url = "memory://"

    def __init__(self, *, wall_clock: WallClock = time.time) -> None:
        self._requests: dict[str, ApprovalRequest] = {}
        self._lock = threading.Lock()
        self.wall_clock = wall_clock

    def submit(self, request: ApprovalRequest) -> ApprovalRequest:
        with self._lock:
            existing = self._open(request.scope, request.session_id, request.tool, request.args_digest)
            if existing is not None:
                return existing
            self._requests[request.id] = request
            return request

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            return self._requests.get(request_id)

    def find_open(self, scope: str, session_id: str, tool: str, args_digest: str) -> ApprovalRequest | None:
        with self._lock:
            return self._open(scope, session_id, tool, args_digest)

    def _open(self, scope: str, session_id: str, tool: str, args_digest: str) -> ApprovalRequest | None:
        for request in self._requests.values():
            if request.status in OPEN and (request.scope, request.session_id, request.tool, request.args_digest) == (
                scope,
                session_id,
                tool,
                args_digest,
            ):
                return request
        return None

    def find_by_call(self, scope: str, tool: str, call_id: str) -> ApprovalRequest | None:
        with self._lock:
            found = [r for r in self._requests.values() if (r.scope, r.tool, r.call_id) == (scope, tool, call_id)]
        return max(found, key=lambda r: r.created_at) if found else None

    def list(self, status: str | None = None, limit: int = 100) -> list[ApprovalRequest]:
        check_status(status)
        now = self.wall_clock()
        with self._lock:
            found = [r for r in self._requests.values() if status is None or r.effective_status(now) == status]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def decide(
        self, request_id: str, *, approve: bool, by: str, reason: str | None = None, args: Any = None
    ) -> ApprovalRequest:
        with self._lock:
            decided = decide(
                self._requests.get(request_id),
                request_id,
                approve=approve,
                by=by,
                reason=reason,
                args=args,
                now=self.wall_clock(),
            )
            self._requests[request_id] = decided
            return decided

    def mark_used(self, request_id: str) -> ApprovalRequest:
        with self._lock:
            done = used(self._requests.get(request_id), request_id, self.wall_clock())
            self._requests[request_id] = done
            return done

    def close(self) -> None:
        pass
