"""Idempotency records in this process's memory: for one process with many threads or tasks, and for tests."""

from __future__ import annotations

import threading
import time

from ._base import (
    Claim,
    SideEffectRecord,
    WallClock,
    check_claim,
    check_clock,
    check_completion,
    check_key,
    check_token,
    completed,
    decide,
)

__all__ = ["MemorySideEffects"]

_PURGE_EVERY = 60.0  # seconds (of the store's clock) between two lazy purges


class MemorySideEffects:
    """Records in a dict behind a lock held only while a claim is decided (never while a body runs).

    Nothing survives the process: a crash forgets every record, so use SQLite, Redis or PostgreSQL when a
    restarted process must not repeat a side effect. ``clock`` gives wall-clock epoch seconds (tests inject one).
    """

    def __init__(self, *, clock: WallClock | None = None) -> None:
        self._clock: WallClock = check_clock(clock) or time.time
        self._records: dict[str, SideEffectRecord] = {}
        self._lock = threading.Lock()
        self._last_purge = float("-inf")

    def claim(
        self,
        key: str,
        args_digest: str,
        token: str,
        *,
        lease_seconds: float,
        ttl_seconds: float,
        take_over: bool = False,
    ) -> Claim:
        lease, ttl = check_claim(key, args_digest, token, lease_seconds, ttl_seconds)
        with self._lock:
            now = self._clock()
            if now - self._last_purge >= _PURGE_EVERY:
                self._purge(now)
            state, record, write = decide(
                self._records.get(key),
                key=key,
                args_digest=args_digest,
                token=token,
                now=now,
                lease_seconds=lease,
                ttl_seconds=ttl,
                take_over=bool(take_over),
            )
            if write and record is not None:
                self._records[key] = record
        return Claim(state, record)

    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool:
        ttl = check_completion(key, token, outcome, ttl_seconds)
        with self._lock:
            record = self._records.get(key)
            if record is None or record.token != token:
                return False
            self._records[key] = completed(record, outcome, self._clock(), ttl)
            return True

    def release(self, key: str, token: str | None = None) -> bool:
        check_key(key)
        check_token(token, optional=True)
        with self._lock:
            record = self._records.get(key)
            if record is None:
                return False
            if token is not None and (record.token != token or record.state != "in_flight"):
                return False
            del self._records[key]
            return True

    def get(self, key: str) -> SideEffectRecord | None:
        check_key(key)
        with self._lock:
            record = self._records.get(key)
            if record is None or record.expires_at <= self._clock():
                return None
            return record

    def purge_expired(self) -> int:
        with self._lock:
            return self._purge(self._clock())

    def _purge(self, now: float) -> int:
        self._last_purge = now
        gone = [key for key, record in self._records.items() if record.expires_at <= now]
        for key in gone:
            del self._records[key]
        return len(gone)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemorySideEffects(records={len(self._records)})"
