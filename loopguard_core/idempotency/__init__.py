"""Idempotent side effects: a tool that refunds, emails or deploys runs at most once per idempotency key.

::

    from loopguard_core.idempotency import side_effect

    @side_effect("sqlite:///effects.db", breaker=breaker)
    def send_refund(order_id: str, amount_cents: int) -> dict:
        return payments.refund(order_id, amount_cents)

The key is a digest of the run id, the tool and the canonical arguments (or a key you give; never the time).
The first execution's outcome is recorded before it is returned; a repeat with the same key (a framework retry,
a crash and resume, two processes racing, the model asking twice) gets the recorded outcome and the body does
not run again. A repeat while the first is still running waits or is refused (``side_effect_in_flight``); one
whose first never recorded an outcome (a crash, ``kill -9``) is refused (``side_effect_unknown``); the same
key with other arguments is refused (``side_effect_conflict``). Records live in memory, SQLite, Redis or
PostgreSQL and expire after 24 h by default. See docs/idempotency.md.
"""

from __future__ import annotations

from ._base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_TTL_SECONDS,
    DEFAULT_WAIT_SECONDS,
    Claim,
    ClaimState,
    RecordState,
    SideEffectRecord,
    SideEffectStore,
)
from ._decorator import side_effect
from ._keys import args_digest, idempotency_key, user_key
from ._memory import MemorySideEffects
from ._postgres import PostgresSideEffects
from ._redis import RedisSideEffects
from ._runner import KeyOption, SideEffects, current_key
from ._serializer import JSONSerializer, Serializer
from ._sqlite import SQLiteSideEffects
from ._url import side_effect_store

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_TTL_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "Claim",
    "ClaimState",
    "JSONSerializer",
    "KeyOption",
    "MemorySideEffects",
    "PostgresSideEffects",
    "RecordState",
    "RedisSideEffects",
    "SQLiteSideEffects",
    "Serializer",
    "SideEffectRecord",
    "SideEffectStore",
    "SideEffects",
    "args_digest",
    "current_key",
    "idempotency_key",
    "side_effect",
    "side_effect_store",
    "user_key",
]
