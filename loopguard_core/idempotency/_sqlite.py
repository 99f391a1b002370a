"""Idempotency records in one SQLite file: durable, shared by every thread and process on the host.

WAL mode, ``synchronous=FULL`` by default (a completed record survives a power cut, not only a crash), one
connection per thread and per process, and every claim decided inside ``BEGIN IMMEDIATE`` (one writer at a
time, the others wait up to ``busy_timeout``): the read and the write of a claim cannot interleave with
another's. No transaction is open while a body runs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from .._sqlite_wal import is_busy, use_wal
from ..errors import StoreError
from ._base import (
    Claim,
    SideEffectRecord,
    WallClock,
    check_claim,
    check_clock,
    check_completion,
    check_key,
    check_seconds,
    check_token,
    completed,
    decide,
)

__all__ = ["SQLiteSideEffects", "sqlite_path"]

_T = TypeVar("_T")
_PURGE_EVERY = 60.0
_SYNC = ("OFF", "NORMAL", "FULL", "EXTRA")
_TABLE = "loopguard_side_effects"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    key TEXT PRIMARY KEY,
    args_digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    token TEXT NOT NULL,
    outcome BLOB,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    lease_expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {_TABLE}_expires ON {_TABLE} (expires_at);
"""
_COLUMNS = "key, args_digest, state, created_at, expires_at, lease_expires_at, outcome, token"
_SELECT = f"SELECT {_COLUMNS} FROM {_TABLE} WHERE key = ?"
_UPSERT = f"INSERT OR REPLACE INTO {_TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

_MAX_IDLE = 4  # idle connections kept per store (a connection is held for one operation, never across a body)
_LIVE: weakref.WeakSet[SQLiteSideEffects] = weakref.WeakSet()
# Connections inherited across a fork: kept referenced and never used or closed in the child.
_INHERITED: list[sqlite3.Connection] = []


def _after_fork() -> None:
    # SQLite connections must not cross a fork: the child opens its own and leaves the parent's alone.
    for store in list(_LIVE):
        _INHERITED.extend(store._idle)
        store._idle = []
        store._pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def sqlite_path(path_or_url: str | os.PathLike[str]) -> str:
    """``effects.db``, ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` -> a file path."""
    text = os.fspath(path_or_url)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or os.PathLike[str], got {path_or_url!r}")
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"bad SQLite URL {text!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")
        text = rest[1:]
    if not text or text == ":memory:" or text.startswith("file:"):
        raise ValueError(
            f"path must name a file, got {text!r}: an in-memory SQLite database is private to one connection; "
            "use MemorySideEffects() for records that live in this process only"
        )
    return text


def _record(row: tuple[Any, ...] | None) -> SideEffectRecord | None:
    if row is None:
        return None
    key, digest, state, created, expires, lease, outcome, token = row
    return SideEffectRecord(
        key=key,
        args_digest=digest,
        state=state,
        created_at=float(created),
        expires_at=float(expires),
        lease_expires_at=float(lease),
        outcome=None if outcome is None else bytes(outcome),
        token=token,
    )


def _row(record: SideEffectRecord) -> tuple[Any, ...]:
    return (
        record.key,
        record.args_digest,
        record.state,
        record.created_at,
        record.expires_at,
        record.lease_expires_at,
        record.outcome,
        record.token,
    )


class SQLiteSideEffects:
    """Records in the SQLite file at ``path`` (a path or ``sqlite:///`` URL; the folder must exist).

    ``busy_timeout``: seconds a claim waits for another writer before :class:`StoreError`. ``synchronous``:
    SQLite's durability setting (``FULL`` default). ``clock``: wall-clock epoch seconds (tests inject one).
    The file is opened (and its table created) here, so a path this process cannot write fails at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "FULL",
        clock: WallClock | None = None,
    ) -> None:
        self.path = sqlite_path(path)
        self._timeout = check_seconds("busy_timeout", busy_timeout)
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNC:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC)}, got {synchronous!r}")
        self._sync = synchronous.upper()
        self._clock: WallClock = check_clock(clock) or time.time
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._last_purge = float("-inf")
        self._closed = False
        _LIVE.add(self)
        self._guard(self._init_schema)

    # -- connections ------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            use_wal(conn, self._timeout)
            conn.execute(f"PRAGMA synchronous = {self._sync}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: an idle one, or a new one; kept for reuse when it went well."""
        if self._closed:
            raise StoreError(f"the side-effect store {self.path!r} is closed")
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._pool_lock:
            if not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, turning sqlite3 errors into a StoreError that says what to fix."""
        try:
            return fn()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        folder = os.path.dirname(os.path.abspath(self.path))
        if is_busy(exc):
            return StoreError(
                f"the side-effect store {self.path!r} stayed locked for more than busy_timeout={self._timeout:g} s "
                f"({text}): another process holds a write transaction on it; find that process, or raise "
                "busy_timeout="
            )
        if "readonly" in text or "read-only" in text or "unable to open" in text or "disk I/O" in text:
            if not os.path.isdir(folder):
                fix = f"its folder {folder!r} does not exist: create it, or choose another path"
            else:
                fix = (
                    f"this process may not write the file or its folder {folder!r}: give it write access to both "
                    "(SQLite writes -wal and -shm files beside the file), or choose another path"
                )
            return StoreError(f"cannot write the side-effect store {self.path!r} ({text}): {fix}")
        return StoreError(f"the side-effect store {self.path!r} failed: {text}")

    # -- the protocol -----------------------------------------------------------------------------
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

        def run() -> Claim:
            with self._write() as conn:
                now = self._clock()
                if now - self._last_purge >= _PURGE_EVERY:
                    self._last_purge = now
                    conn.execute(f"DELETE FROM {_TABLE} WHERE expires_at <= ?", (now,))
                existing = _record(conn.execute(_SELECT, (key,)).fetchone())
                state, record, write = decide(
                    existing,
                    key=key,
                    args_digest=args_digest,
                    token=token,
                    now=now,
                    lease_seconds=lease,
                    ttl_seconds=ttl,
                    take_over=bool(take_over),
                )
                if write and record is not None:
                    conn.execute(_UPSERT, _row(record))
            return Claim(state, record)

        return self._guard(run)

    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool:
        ttl = check_completion(key, token, outcome, ttl_seconds)

        def run() -> bool:
            with self._write() as conn:
                record = _record(conn.execute(_SELECT, (key,)).fetchone())
                if record is None or record.token != token:
                    return False
                conn.execute(_UPSERT, _row(completed(record, outcome, self._clock(), ttl)))
                return True

        return self._guard(run)

    def release(self, key: str, token: str | None = None) -> bool:
        check_key(key)
        check_token(token, optional=True)
        params: tuple[str, ...]
        if token is None:
            sql, params = f"DELETE FROM {_TABLE} WHERE key = ?", (key,)
        else:
            sql = f"DELETE FROM {_TABLE} WHERE key = ? AND token = ? AND state = 'in_flight'"
            params = (key, token)

        def run() -> bool:
            with self._write() as conn:
                return conn.execute(sql, params).rowcount > 0

        return self._guard(run)

    def get(self, key: str) -> SideEffectRecord | None:
        check_key(key)

        def run() -> SideEffectRecord | None:
            with self._connection() as conn:
                record = _record(conn.execute(_SELECT, (key,)).fetchone())
            if record is None or record.expires_at <= self._clock():
                return None
            return record

        return self._guard(run)

    def purge_expired(self) -> int:
        def run() -> int:
            with self._write() as conn:
                now = self._clock()
                self._last_purge = now
                return conn.execute(f"DELETE FROM {_TABLE} WHERE expires_at <= ?", (now,)).rowcount

        return self._guard(run)

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its operation ends."""
        self._closed = True
        with self._pool_lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            with suppress(sqlite3.Error):  # a connection of another thread mid-statement
                conn.close()

    def __repr__(self) -> str:
        return f"SQLiteSideEffects({self.path!r})"
