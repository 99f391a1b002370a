"""Idempotency records in PostgreSQL (psycopg 3, extra ``postgres``): the multi-host durable store.

One row per key in ``loopguard_side_effects`` (created if missing, in the URL's ``schema=`` if given). A claim
is one transaction: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE <the existing record has expired, or
may be taken over>``; when nothing was written, the conflicting row (locked by the ``ON CONFLICT``) is read in
the same transaction. Two workers can never both claim a key, and no transaction is open while a body runs.
Time is the server's ``clock_timestamp()`` (one clock for every host) unless a ``clock`` is injected.

URL: ``postgresql://user@host:port/db?schema=name&table=name&connect_timeout=5``; ``schema`` and ``table`` are
loopguard's own parameters, the rest goes to libpq.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._extras import require
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
    state_of,
)

__all__ = ["PostgresSideEffects"]

_T = TypeVar("_T")
_PURPOSE = "The PostgreSQL side-effect store (PostgresSideEffects / side_effect_store('postgresql://...'))"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_PURGE_EVERY = 60.0
_MAX_IDLE = 4  # idle connections kept per store (a connection is held for one operation, never across a body)
_COLUMNS = "key, args_digest, state, created_at, expires_at, lease_expires_at, outcome, token"
# A schema-creation lock key of our own, so processes creating the table together do not collide.
_SCHEMA_LOCK = 0x6C67_7365_6666_6563  # "lgseffec"

_LIVE: weakref.WeakSet[PostgresSideEffects] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_LIVE):
        store._forget_inherited()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable PostgreSQL URL>"
    if not parts.scheme:
        return re.sub(r"password\s*=\s*\S+", "password=***", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/:,"), ""))


def _record(row: tuple[Any, ...]) -> SideEffectRecord:
    key, digest, state, created, expires, lease, outcome, token = row[:8]
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


class PostgresSideEffects:
    """Records in the PostgreSQL database at ``dsn`` (a URL or a libpq ``key=value`` string).

    ``table`` / ``schema`` name where they live (both also settable in the URL's query string); ``clock``
    replaces the server's clock (tests); ``connect_timeout`` bounds how long a connection attempt waits. The
    table is created here, so a server that cannot be reached fails at once with :class:`StoreError`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "loopguard_side_effects",
        schema: str | None = None,
        clock: WallClock | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise TypeError(f"dsn must be a PostgreSQL URL such as 'postgresql://user@host/db', got {dsn!r}")
        self._pg = require("psycopg", extra="postgres", purpose=_PURPOSE)
        self.url = redact(dsn)
        if "://" in dsn:
            parts = urlsplit(dsn)
            query = parse_qsl(parts.query, keep_blank_values=True)
            own = {k: v for k, v in query if k in ("schema", "table")}
            table, schema = own.get("table", table), own.get("schema", schema)
            dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in own])))
        for param, value in (("table", table), ("schema", schema)):
            if value is not None and (not isinstance(value, str) or not _IDENT.match(value)):
                raise ValueError(f"{param} must be a plain SQL identifier (letters, digits, '_'), got {value!r}")
        self.table = table
        self.schema = schema
        self._qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
        self._dsn = dsn
        self._connect_timeout = max(2, round(check_seconds("connect_timeout", connect_timeout)))
        self._clock = check_clock(clock)
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._last_purge = float("-inf")
        self._closed = False
        self._sql = self._statements()
        _LIVE.add(self)
        self._call(self._init_schema)

    def _statements(self) -> dict[str, str]:
        t = self._qualified
        now = "(SELECT COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8))"
        return {
            "claim": f"""
                WITH n AS (SELECT {now} AS now)
                INSERT INTO {t} AS r ({_COLUMNS})
                SELECT %(key)s, %(digest)s, 'in_flight', n.now, n.now + %(keep)s, n.now + %(lease)s, NULL, %(token)s
                FROM n
                ON CONFLICT (key) DO UPDATE SET
                    args_digest = EXCLUDED.args_digest, state = 'in_flight', created_at = EXCLUDED.created_at,
                    expires_at = EXCLUDED.expires_at, lease_expires_at = EXCLUDED.lease_expires_at,
                    outcome = NULL, token = EXCLUDED.token
                WHERE r.expires_at <= EXCLUDED.created_at
                   OR (%(take)s AND r.state = 'in_flight' AND r.lease_expires_at <= EXCLUDED.created_at
                       AND r.args_digest = EXCLUDED.args_digest AND r.token <> EXCLUDED.token)
                RETURNING {_COLUMNS}, (SELECT now FROM n)""",
            "select": f"SELECT {_COLUMNS}, {now} FROM {t} WHERE key = %(key)s",
            "complete": f"""
                UPDATE {t} SET state = 'completed', outcome = %(outcome)s, expires_at = {now} + %(ttl)s,
                    lease_expires_at = {now}
                WHERE key = %(key)s AND token = %(token)s""",
            "release": f"DELETE FROM {t} WHERE key = %(key)s",
            "release_mine": f"DELETE FROM {t} WHERE key = %(key)s AND token = %(token)s AND state = 'in_flight'",
            "purge": f"DELETE FROM {t} WHERE expires_at <= {now}",
        }

    # -- connections ------------------------------------------------------------------------------
    def _acquire(self) -> Any:
        if self._closed:
            raise StoreError(f"the side-effect store at {self.url} is closed")
        with self._pool_lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._pg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)

    def _give_back(self, conn: Any) -> None:
        with self._pool_lock:
            if not self._closed and not conn.closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        with suppress(Exception):
            conn.close()

    def _call(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn`` on a pooled connection (held for this one operation), errors made StoreErrors."""
        conn = None
        try:
            conn = self._acquire()
            result = fn(conn)
        except BaseException as exc:
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            if isinstance(exc, self._pg.OperationalError):
                raise StoreError(
                    f"the side-effect store at {self.url} could not be reached or lost its connection "
                    f"({type(exc).__name__}: {str(exc).strip()}): check that PostgreSQL is running there and that "
                    "the URL, user and database are right; the call was not made"
                ) from exc
            if isinstance(exc, self._pg.Error):
                raise StoreError(
                    f"the side-effect store at {self.url} (table {self._qualified}) failed "
                    f"({type(exc).__name__}: {str(exc).strip()}): check that this user may create and write the "
                    "table"
                ) from exc
            raise
        self._give_back(conn)
        return result

    def _forget_inherited(self) -> None:
        """In a forked child: drop the parent's connections without ending the parent's sessions."""
        self._pool_lock = threading.Lock()
        conns, self._idle = self._idle, []
        for conn in conns:
            try:
                fd = conn.pgconn.socket
            except Exception:
                fd = -1
            if fd >= 0:  # closing the child's copy of the socket must not send the parent's session a Terminate
                devnull = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(devnull, fd)
                finally:
                    os.close(devnull)
            with suppress(Exception):
                conn.close()

    def _init_schema(self, conn: Any) -> None:
        t = self._qualified
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if self.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {t} (
                    key TEXT PRIMARY KEY,
                    args_digest TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
                    created_at DOUBLE PRECISION NOT NULL,
                    expires_at DOUBLE PRECISION NOT NULL,
                    lease_expires_at DOUBLE PRECISION NOT NULL,
                    outcome BYTEA,
                    token TEXT NOT NULL
                )"""
            )
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{self.table}_expires" ON {t} (expires_at)')

    def _now(self) -> float | None:
        return None if self._clock is None else float(self._clock())

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
        params = {
            "now": self._now(),
            "key": key,
            "digest": args_digest,
            "token": token,
            "lease": lease,
            "keep": max(ttl, lease),
            "take": bool(take_over),
        }

        def run(conn: Any) -> Claim:
            with conn.transaction():
                row = conn.execute(self._sql["claim"], params).fetchone()
                if row is not None:
                    claim = Claim("claimed", _record(row))
                else:
                    row = conn.execute(self._sql["select"], params).fetchone()
                    record = _record(row)
                    claim = Claim(state_of(record, float(row[8]), token), record)
                now = float(row[8])
                if now - self._last_purge >= _PURGE_EVERY:
                    self._last_purge = now
                    conn.execute(self._sql["purge"], params)
            return claim

        return self._call(run)

    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool:
        ttl = check_completion(key, token, outcome, ttl_seconds)
        params = {"now": self._now(), "key": key, "token": token, "outcome": outcome, "ttl": ttl}
        return self._call(lambda conn: bool(conn.execute(self._sql["complete"], params).rowcount > 0))

    def release(self, key: str, token: str | None = None) -> bool:
        check_key(key)
        check_token(token, optional=True)
        sql = self._sql["release" if token is None else "release_mine"]
        return self._call(lambda conn: bool(conn.execute(sql, {"key": key, "token": token}).rowcount > 0))

    def get(self, key: str) -> SideEffectRecord | None:
        check_key(key)

        def run(conn: Any) -> SideEffectRecord | None:
            row = conn.execute(self._sql["select"], {"key": key, "now": self._now()}).fetchone()
            if row is None or float(row[4]) <= float(row[8]):
                return None
            return _record(row)

        return self._call(run)

    def purge_expired(self) -> int:
        def run(conn: Any) -> int:
            count: int = conn.execute(self._sql["purge"], {"now": self._now()}).rowcount
            return count

        return self._call(run)

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its operation ends."""
        self._closed = True
        with self._pool_lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            with suppress(Exception):  # a connection of another thread mid-statement
                conn.close()

    def __repr__(self) -> str:
        return f"PostgresSideEffects({self.url!r}, table={self._qualified!r})"
