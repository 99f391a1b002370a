"""loopguard: stop runaway AI-agent loops before they spend money.

The public surface is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

import typing as _typing

from .agent_loop import AgentLoop, AgentResult
from .approvals import ApprovalQueue, ApprovalRequest
from .breaker import Breaker
from .clock import Clock, SystemClock
from .errors import (
    ApprovalError,
    ApprovalRequired,
    IllegalTransition,
    LoopGuardError,
    LoopGuardTripped,
    LoopGuardWarning,
    MissingExtra,
    SpecError,
    StoreError,
)
from .idempotency import SideEffects, side_effect
from .ledger import Ledger, LedgerError, VerifyResult
from .limits import Limits, LoopDetection
from .pricing import GenaiPrices, StaticPrices
from .signatures import call_signature, canonical_text, outcome_digest
from .spec import Spec, SpecCheck, SpecResult, SpecStore, SpecWriter, validate_spec
from .state import TRANSITIONS, BreakerState
from .stores import MemoryStore, RunSnapshot, SQLiteStore, Store
from .tokens import estimate_tokens
from .tools import ToolPolicy

__all__ = [
    "TRANSITIONS",
    "AgentLoop",
    "AgentResult",
    "ApprovalError",
    "ApprovalQueue",
    "ApprovalRequest",
    "ApprovalRequired",
    "Breaker",
    "BreakerState",
    "Clock",
    "GenaiPrices",
    "IllegalTransition",
    "Ledger",
    "LedgerError",
    "Limits",
    "LoopDetection",
    "LoopGuardError",
    "LoopGuardTripped",
    "LoopGuardWarning",
    "MemoryStore",
    "MissingExtra",
    "RunSnapshot",
    "SQLiteStore",
    "SideEffects",
    "Spec",
    "SpecCheck",
    "SpecError",
    "SpecResult",
    "SpecStore",
    "SpecWriter",
    "StaticPrices",
    "Store",
    "StoreError",
    "SystemClock",
    "ToolPolicy",
    "VerifyResult",
    "call_signature",
    "canonical_text",
    "estimate_tokens",
    "outcome_digest",
    "side_effect",
    "validate_spec",
]


def __getattr__(name: str) -> _typing.Any:
    # The version comes from the installed metadata, so it can never disagree with the wheel.
    if name == "__version__":
        from importlib.metadata import version

        return version("loopguard-core")
    raise AttributeError(f"module 'loopguard_core' has no attribute {name!r}")
