"""One approval request: what a person is asked to allow, and what they decided."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["DECIDED", "OPEN", "STATUSES", "ApprovalRequest"]

#: pending: waiting for a person; approved / rejected: decided, not yet acted on by the run;
#: used: the run acted on the decision (ran the call, or told the model it was rejected); expired: nobody
#: decided in time.
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "used", "expired")
#: statuses of a request the run has not acted on yet: asking again for the same call finds it
OPEN: frozenset[str] = frozenset({"pending", "approved", "rejected"})
DECIDED: frozenset[str] = frozenset({"approved", "rejected"})


@dataclass(frozen=True)
class ApprovalRequest:
    """A call that waits for a person. Holds no raw arguments: their digest, and a preview only when the tool's
    policy chose one (``ToolPolicy(preview=...)``). Edited arguments a person gives on approval are kept only
    until the run picks them up."""

    id: str
    scope: str
    session_id: str
    tool: str
    args_digest: str
    agent: str | None = None
    call_id: str | None = None
    preview: str | None = None
    #: the run's spend when it asked: cost_usd, tokens, turns, tool_calls
    spend: dict[str, Any] = field(default_factory=dict)
    turn: int = 0
    status: str = "pending"
    #: wall-clock seconds since the epoch (UTC)
    created_at: float = 0.0
    expires_at: float | None = None
    decided_at: float | None = None
    decided_by: str | None = None
    #: why it was rejected (the model is told), or a note on the approval
    reason: str | None = None
    #: JSON of the arguments a person edited on approval, until the run uses them
    edited_args: str | None = None

    def with_status(self, status: str, **changes: Any) -> ApprovalRequest:
        return replace(self, status=status, **changes)

    def effective_status(self, now: float) -> str:
        """``expired`` once a pending request outlived ``expires_at``."""
        if self.status == "pending" and self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return self.status

    def args(self) -> Any:
        """The edited arguments, or ``None`` when the call runs with the model's own."""
        return None if self.edited_args is None else json.loads(self.edited_args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApprovalRequest:
        data = dict(row)
        spend = data.get("spend")
        if isinstance(spend, str):
            data["spend"] = json.loads(spend) if spend else {}
        return cls(**data)
