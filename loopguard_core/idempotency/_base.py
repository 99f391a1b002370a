"""The store protocol, the record it keeps, and the one rule every store applies to decide a claim."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_TTL_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "Claim",
    "ClaimState",
    "RecordState",
    "SideEffectRecord",
    "SideEffectStore",
    "WallClock",
]

#: How long a completed record answers repeats (Stripe keeps idempotency keys 24 h; Powertools defaults to 1 h).
DEFAULT_TTL_SECONDS = 24 * 3600.0
#: How long a claim may stay in flight before a repeat calls its outcome unknown.
DEFAULT_LEASE_SECONDS = 300.0
#: How long a repeat waits for a claim in flight before it is refused.
DEFAULT_WAIT_SECONDS = 30.0

#: What a claim found: it is ours now, another is running, it is done, or it started and never finished.
ClaimState = Literal["claimed", "in_flight", "completed", "unknown"]
#: What a record says at rest (``unknown`` is an ``in_flight`` record whose lease has run out).
RecordState = Literal["in_flight", "completed"]
#: Wall-clock seconds since the epoch (UTC), e.g. ``time.time``; injected in tests.
WallClock = Callable[[], float]

# Every store key is a digest made by _keys: refuse anything else, so raw text never becomes a key by mistake.
_KEY = re.compile(r"[0-9a-f]{16,128}\Z")


@dataclass(frozen=True)
class SideEffectRecord:
    """One idempotency record. Holds digests and the outcome, never the call's arguments.

    Times are wall-clock seconds since the epoch (UTC). ``outcome`` is the serialized result (with a one-byte
    tag loopguard adds) once ``state`` is ``"completed"``; ``token`` identifies the claim that owns the record.
    """

    key: str
    args_digest: str
    state: RecordState
    created_at: float
    expires_at: float
    lease_expires_at: float
    outcome: bytes | None = field(default=None, repr=False)
    token: str = field(default="", repr=False)


class Claim(NamedTuple):
    """The answer of :meth:`SideEffectStore.claim`: a state, and the record it is about (None only when absent)."""

    state: ClaimState
    record: SideEffectRecord | None


@runtime_checkable
class SideEffectStore(Protocol):
    """Where idempotency records live. Every method is atomic on its own; none holds a lock after it returns.

    - ``claim``: take ``key`` for ``token`` if it is free (absent or expired; or in flight with its lease run out
      and ``take_over``), else report what holds it. Claiming again with the same token returns ``claimed`` (a
      resent request must not see itself as a rival).
    - ``complete``: store the outcome of the claim ``token`` owns; False when the claim is no longer its own.
    - ``release``: remove the record: only ``token``'s claim in flight, or (no token) whatever is there.
    - ``get``: the record, or None when absent or expired.
    - ``purge_expired``: delete expired records now; returns how many (stores also purge lazily on claim).
    """

    def claim(
        self,
        key: str,
        args_digest: str,
        token: str,
        *,
        lease_seconds: float,
        ttl_seconds: float,
        take_over: bool = False,
    ) -> Claim: ...

    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool: ...

    def release(self, key: str, token: str | None = None) -> bool: ...

    def get(self, key: str) -> SideEffectRecord | None: ...

    def purge_expired(self) -> int: ...


def state_of(record: SideEffectRecord, now: float, token: str) -> ClaimState:
    """What an existing, unexpired record means to the caller holding ``token``."""
    if record.state == "completed":
        return "completed"
    if record.token == token:
        return "claimed"
    return "in_flight" if record.lease_expires_at > now else "unknown"


def decide(
    existing: SideEffectRecord | None,
    *,
    key: str,
    args_digest: str,
    token: str,
    now: float,
    lease_seconds: float,
    ttl_seconds: float,
    take_over: bool,
) -> tuple[ClaimState, SideEffectRecord | None, bool]:
    """The claim rule shared by the memory and SQLite stores (Redis and PostgreSQL apply the same in Lua / SQL).

    Returns the state, the record it is about, and whether that record must be written.
    """
    if existing is not None and existing.expires_at > now:
        state = state_of(existing, now, token)
        if not (state == "unknown" and take_over and existing.args_digest == args_digest):
            return state, existing, False
    fresh = SideEffectRecord(
        key=key,
        args_digest=args_digest,
        state="in_flight",
        created_at=now,
        expires_at=now + max(ttl_seconds, lease_seconds),
        lease_expires_at=now + lease_seconds,
        token=token,
    )
    return "claimed", fresh, True


def completed(record: SideEffectRecord, outcome: bytes, now: float, ttl_seconds: float) -> SideEffectRecord:
    """``record`` once its body finished: the outcome kept for ``ttl_seconds`` from now."""
    return SideEffectRecord(
        key=record.key,
        args_digest=record.args_digest,
        state="completed",
        created_at=record.created_at,
        expires_at=now + ttl_seconds,
        lease_expires_at=now,
        outcome=outcome,
        token=record.token,
    )


def check_key(key: object, param: str = "key") -> str:
    """A store key: a lowercase hex digest (what :func:`idempotency_key` returns)."""
    if not isinstance(key, str):
        raise TypeError(f"{param} must be a str (a digest from idempotency_key()), got {type(key).__name__}")
    if not _KEY.match(key):
        raise ValueError(f"{param} must be a hex digest from idempotency_key() or user_key(), got {key[:40]!r}")
    return key


def check_token(token: object, *, optional: bool = False) -> str | None:
    if token is None and optional:
        return None
    if not isinstance(token, str) or not token or len(token) > 128:
        raise TypeError(f"token must be a non-empty str of at most 128 characters, got {token!r}")
    return token


def check_seconds(param: str, value: object, *, allow_zero: bool = False) -> float:
    """A positive, finite number of seconds (or zero when allowed); TypeError/ValueError naming ``param``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{param} must be {bound} and finite, got {value!r}")
    return seconds


def check_claim(
    key: object, args_digest: object, token: object, lease_seconds: object, ttl_seconds: object
) -> tuple[float, float]:
    """The arguments of ``SideEffectStore.claim``, checked alike by every store: ``(lease, ttl)`` in seconds."""
    check_key(key)
    check_key(args_digest, "args_digest")
    check_token(token)
    return check_seconds("lease_seconds", lease_seconds), check_seconds("ttl_seconds", ttl_seconds)


def check_completion(key: object, token: object, outcome: object, ttl_seconds: object) -> float:
    """The arguments of ``SideEffectStore.complete``, checked alike by every store: the ttl in seconds."""
    check_key(key)
    check_token(token)
    ttl = check_seconds("ttl_seconds", ttl_seconds)
    if not isinstance(outcome, bytes):
        raise TypeError(f"outcome must be bytes, got {type(outcome).__name__}")
    return ttl


def check_clock(clock: object) -> WallClock | None:
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a callable returning epoch seconds (like time.time), got {clock!r}")
    return clock
