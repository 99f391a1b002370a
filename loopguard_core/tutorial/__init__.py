"""Drop-in replacements for the primitives of the "Production-Safe Agent Loop" tutorial.

Code written against the tutorial's flat modules (``spec_writer``, ``circuit_breaker``, ``ledger``,
``agent_loop``, ``review_surface``, ``attestation_fingerprint``) runs unchanged after one import line::

    from loopguard_core.tutorial import AgentLoop, CircuitBreaker, Ledger, ReviewSurface, SpecWriter

Behaviour is the tutorial's, observable detail for detail (table schemas, strict limits, the checkpoint
banner, render layout, frame hash). One thing is added: the ledger, attestation, fingerprint and diff-report
tables refuse UPDATE and DELETE in the database itself. Standard library only.

The attestation fingerprint's own ``DiffResult`` is exported here as ``FingerprintDiffResult`` (the
review surface's ``DiffResult`` keeps the plain name); both modules also keep their tutorial names.
"""

from __future__ import annotations

from .agent_loop import AgentLoop, LLMClient, LoopResult, MessagesEndpoint
from .attestation_fingerprint import (
    AttestationFingerprint,
    BucketAggregate,
    DriftAlert,
    DriftFinding,
    Fingerprint,
    ThresholdConfig,
    UsageRecord,
    UsageRecordsClient,
)
from .attestation_fingerprint import DiffResult as FingerprintDiffResult
from .circuit_breaker import CircuitBreaker, CircuitBreakerError
from .ledger import Ledger, LedgerRow
from .review_surface import (
    AttestationResult,
    DiffResult,
    ReviewFrame,
    ReviewSurface,
    SessionNotFoundError,
    frame_hash,
)
from .spec_writer import QUESTIONS, SpecResult, SpecWriter

__all__ = [
    "QUESTIONS",
    "AgentLoop",
    "AttestationFingerprint",
    "AttestationResult",
    "BucketAggregate",
    "CircuitBreaker",
    "CircuitBreakerError",
    "DiffResult",
    "DriftAlert",
    "DriftFinding",
    "Fingerprint",
    "FingerprintDiffResult",
    "LLMClient",
    "Ledger",
    "LedgerRow",
    "LoopResult",
    "MessagesEndpoint",
    "ReviewFrame",
    "ReviewSurface",
    "SessionNotFoundError",
    "SpecResult",
    "SpecWriter",
    "ThresholdConfig",
    "UsageRecord",
    "UsageRecordsClient",
    "frame_hash",
]
