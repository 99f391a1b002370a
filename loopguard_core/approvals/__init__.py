"""Approval gates: a person allows each call of an irreversible tool before it runs.

A tool declared ``ToolPolicy(irreversible=True)`` (or Pydantic AI ``requires_approval=True``) is gated: the
first time the run asks for it, the breaker queues an :class:`ApprovalRequest` (tool, arguments digest, the
preview the tool's policy allows, agent, the run's spend so far) and raises
:class:`~loopguard_core.errors.ApprovalRequired`; adapters turn that into the framework's own suspension
(LangGraph ``interrupt``, Pydantic AI deferred tools). A person approves (optionally with edited arguments)
or rejects with a reason, from this process, the CLI (``loopguard approvals``) or another host; when the run
asks for the same call again it goes ahead, or the model is told the reason.

Queues: ``memory://`` (this process), ``sqlite:///path`` (the default: the ledger's file when it is SQLite),
``postgresql://...`` (the ledger's database when it is PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path

from ._queue import ApprovalQueue, MemoryApprovals
from ._request import STATUSES, ApprovalRequest
from ._sql import PostgresApprovals, SQLiteApprovals

__all__ = [
    "STATUSES",
    "ApprovalQueue",
    "ApprovalRequest",
    "MemoryApprovals",
    "PostgresApprovals",
    "SQLiteApprovals",
    "approval_queue",
]


def approval_queue(url: str | Path) -> ApprovalQueue:
    """A queue from a URL: ``memory://``, ``sqlite:///path/to/file.db`` (or a plain path), ``postgresql://...``."""
    if isinstance(url, Path):
        return SQLiteApprovals(url)
    if not isinstance(url, str) or not url:
        raise TypeError(f"approvals must be an ApprovalQueue or a URL such as 'sqlite:///runs.db', got {url!r}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryApprovals()
    if scheme == "sqlite":
        return SQLiteApprovals(url.split("://", 1)[1].removeprefix("/") or ":memory:")
    if scheme in ("postgres", "postgresql"):
        return PostgresApprovals(url)
    if scheme == "":
        return SQLiteApprovals(url)
    raise ValueError(f"unknown approval queue URL {url!r}: use 'memory://', 'sqlite:///PATH' or 'postgresql://...'")
