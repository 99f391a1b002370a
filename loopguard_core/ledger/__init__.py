"""The tamper-evident ledger: one hash-chained row per model turn, tool call and breaker trip.

::

    from loopguard_core.ledger import Ledger

    ledger = Ledger("ledger.db")                       # SQLite, WAL mode
    ledger.record(session_id="s1", origin="model", turn=1, input_text=prompt, input_tokens=812)
    result = ledger.verify()                           # re-hash every row, check every link
    assert result.ok, result.problems

See docs/ledger.md for the schema, what verification proves and what it cannot.
"""

from __future__ import annotations

from ._backend import LedgerBackend, ReadView
from ._chain import HASHED_COLUMNS, canonical, genesis_hash, row_hash
from ._checkpoint import Checkpoint
from ._errors import CheckpointError, LedgerBusy, LedgerConfigError, LedgerError, LedgerUnavailable, LedgerUnreachable
from ._keys import generate_signing_key, load_public_key, load_signing_key
from ._ledger import Ledger
from ._model import COLUMNS, ORIGINS, CheckpointCheck, LedgerRow, Problem, SessionSummary, VerifyResult
from ._sqlite import APPEND_ONLY_MESSAGE

__all__ = [
    "APPEND_ONLY_MESSAGE",
    "COLUMNS",
    "HASHED_COLUMNS",
    "ORIGINS",
    "Checkpoint",
    "CheckpointCheck",
    "CheckpointError",
    "Ledger",
    "LedgerBackend",
    "LedgerBusy",
    "LedgerConfigError",
    "LedgerError",
    "LedgerRow",
    "LedgerUnavailable",
    "LedgerUnreachable",
    "Problem",
    "ReadView",
    "SessionSummary",
    "VerifyResult",
    "canonical",
    "generate_signing_key",
    "genesis_hash",
    "load_public_key",
    "load_signing_key",
    "row_hash",
]
