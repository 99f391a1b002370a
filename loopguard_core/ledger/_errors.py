"""Errors the ledger raises; all are part of loopguard's one error tree."""

from __future__ import annotations

from ..errors import LoopGuardError

__all__ = [
    "CheckpointError",
    "LedgerBusy",
    "LedgerConfigError",
    "LedgerError",
    "LedgerUnavailable",
    "LedgerUnreachable",
]


class LedgerError(LoopGuardError, RuntimeError):
    """The ledger could not do what was asked (base of every ledger error)."""


class LedgerBusy(LedgerError):
    """Another writer held the ledger longer than the busy timeout; nothing was written by this call."""


class LedgerConfigError(LedgerError, ValueError):
    """The ledger was opened or called with a configuration that cannot work (wrong key, bad URL, bad value)."""


class LedgerUnavailable(LedgerError, NotImplementedError):
    """The requested ledger backend does not exist in this version of loopguard-core."""


class LedgerUnreachable(LedgerError, ConnectionError):
    """The ledger's database server could not be reached (or the connection was lost); the message names
    the URL without its password and says whether the row was written."""


class CheckpointError(LedgerError, ValueError):
    """A checkpoint note is malformed or does not belong to this ledger."""
