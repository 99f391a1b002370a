"""Errors of the review surface."""

from __future__ import annotations

from ..errors import LoopGuardError

__all__ = ["AttestationRequired", "SessionNotFound"]


class SessionNotFound(LoopGuardError, KeyError):
    """The session has no spec or no ledger rows, so there is nothing to review."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class AttestationRequired(LoopGuardError, PermissionError):
    """Nobody has attested the session's current frame; downstream must not receive the result yet."""
