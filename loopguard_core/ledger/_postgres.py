"""PostgreSQL backend: the multi-writer ledger (psycopg 3, extra ``postgres``).

Same tables, canonical bytes, chain and verifier as the SQLite backend. Every hashed value is stored as
text, BIGINT/SMALLINT or NULL (``created_at`` is TEXT, never ``timestamptz``), so what is read back is
exactly what was hashed. An append is one transaction in two round trips::

    BEGIN; SELECT pg_advisory_xact_lock(<chain key>); SELECT seq, row_hash ... ORDER BY seq DESC LIMIT 1
    INSERT ... (seq = head + 1); [INSERT checkpoint]; COMMIT

The head is read by a *separate* statement after the lock is granted (READ COMMITTED takes a fresh
snapshot per statement), so two appenders can never chain onto the same head; ``seq`` being the primary
key is a second line of defence. ``SELECT ... FOR UPDATE`` would not do: it cannot lock a row that does not
exist yet. Connections come from a small pool (one per concurrent append, a few kept idle), never cross a
fork, and no lock is held across user code.

URL: ``postgresql://user[:password]@host[:port]/db[?schema=name&connect_timeout=5&...]``. ``schema`` is
loopguard's own parameter (the ledger's tables live there; created if missing); the rest goes to libpq.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import select
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._extras import require
from ._backend import OnSealed, find_row_sql, matching_row, row_key, seal_rows
from ._chain import canonical, genesis_hash, row_hash
from ._checkpoint import Checkpoint
from ._errors import LedgerBusy, LedgerConfigError, LedgerError, LedgerUnreachable
from ._model import COLUMNS, SessionSummary
from ._sqlite import APPEND_ONLY_MESSAGE, SCHEMA_VERSION

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

_T = TypeVar("_T")

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "PostgresBackend", "open_backend", "redact_url"]

#: Seconds to wait for the server when the URL gives no ``connect_timeout`` (libpq's minimum is 2).
DEFAULT_CONNECT_TIMEOUT = 5
# A crashed or frozen writer must not keep the chain's advisory lock for ever.
_IDLE_IN_TRANSACTION_MS = 60_000
_MAX_IDLE = 4  # idle connections kept per pool (appends are serialized anyway)
_ITERSIZE = 2000  # rows per FETCH when streaming
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_TABLES = ("loopguard_meta", "loopguard_ledger", "loopguard_checkpoints")
_APPEND_FN = "loopguard_append_v1"
# Parameter types of the append function: lock key, genesis hash, canonical bytes, then the hashed columns.
_APPEND_TYPES = (
    "bigint",
    "text",
    "bytea",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "smallint",
    "text",
    "text",
)
_ENABLED = {"O", "A"}  # pg_trigger.tgenabled values that fire in a normal session
_IDLE = 0  # pq.TransactionStatus.IDLE

_LIVE: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_LIVE):
        backend._forget_inherited()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def redact_url(url: str) -> str:
    """The URL without its password (in the user info or a ``password=`` parameter), for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/:,"), parts.fragment))


def _lock_key(domain: str, name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (distinct per purpose, stable across processes)."""
    digest = hashlib.sha256(f"loopguard-ledger-{domain}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def open_backend(
    url: str, *, input_hash_mode: str | None, busy_timeout: float = 5.0, synchronous: str = "NORMAL"
) -> PostgresBackend:
    from ._chain import utc_now

    return PostgresBackend(
        url, input_hash_mode=input_hash_mode, busy_timeout=busy_timeout, synchronous=synchronous, utc_now=utc_now
    )


class PostgresBackend:
    """One ledger chain in one PostgreSQL schema."""

    def __init__(
        self,
        url: str,
        *,
        input_hash_mode: str | None,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        utc_now: Callable[[], str],
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise LedgerConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self._pg = require("psycopg", extra="postgres", purpose="The PostgreSQL ledger (Ledger('postgresql://...'))")
        self.url = redact_url(url)
        self._utc_now = utc_now
        self._conninfo, self.schema, self._connect_timeout = self._parse(url)
        options = [
            f"-c lock_timeout={max(1, round(float(busy_timeout) * 1000))}",
            f"-c idle_in_transaction_session_timeout={_IDLE_IN_TRANSACTION_MS}",
        ]
        if synchronous.upper() == "OFF":
            options.append("-c synchronous_commit=off")  # a server crash may lose the last commits
        self._options = options
        self._timeout = float(busy_timeout)
        prefix = "" if self.schema is None else f'"{self.schema}".'
        self._t = {name: prefix + name for name in _TABLES}
        self._fn = prefix + "loopguard_append_only"
        self._append_fn = prefix + _APPEND_FN
        self._append_sig = f"{self._append_fn}({','.join(_APPEND_TYPES)})"
        self._pool_lock = threading.Lock()
        self._open: set[Conn] = set()
        self._idle: list[Conn] = []
        self._ridle: list[Conn] = []
        self._closed = False
        self.read_only = input_hash_mode is None
        _LIVE.add(self)
        self.chain_id = self._open_existing() if input_hash_mode is None else self._init_schema(input_hash_mode)
        self.genesis = genesis_hash(self.chain_id)
        ledger = self._t["loopguard_ledger"]
        self._lock = _lock_key("chain", self.chain_id)
        self._begin_sql = (
            f"BEGIN; SELECT pg_advisory_xact_lock({self._lock}); "
            f"SELECT seq, row_hash FROM {ledger} ORDER BY seq DESC LIMIT 1"
        )
        casts = ", ".join(f"%s::{t}" for t in _APPEND_TYPES)
        self._append_sql = f"SELECT new_seq, new_prev, new_hash FROM {self._append_fn}({casts})"
        cols = ", ".join(COLUMNS)
        self._insert_sql = f"INSERT INTO {ledger} ({cols}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        cps = self._t["loopguard_checkpoints"]
        self._insert_cp_sql = f"INSERT INTO {cps} (size, head_hash, note, created_at) VALUES (%s, %s, %s, %s)"

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"

    # -- URL and connections -----------------------------------------------------------------------
    def _parse(self, url: str) -> tuple[str, str | None, int]:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema: str | None = None
        rest: list[tuple[str, str]] = []
        timeout = DEFAULT_CONNECT_TIMEOUT
        for key, value in query:
            if key == "schema":
                if not _IDENT.match(value):
                    raise LedgerConfigError(
                        f"schema={value!r} in {self.url!r} is not a plain identifier: use letters, digits and "
                        "underscores (up to 63, not starting with a digit)"
                    )
                schema = value
                continue
            if key == "connect_timeout":
                try:
                    timeout = int(float(value))
                except ValueError:
                    raise LedgerConfigError(
                        f"connect_timeout={value!r} in {self.url!r} must be a number of seconds"
                    ) from None
            rest.append((key, value))
        if not any(k == "connect_timeout" for k, _ in rest):
            rest.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)))
        return urlunsplit(parts._replace(query=urlencode(rest, safe="/:,"))), schema, timeout

    def _connect(self, *, reader: bool) -> Conn:
        pg = self._pg
        with self._pool_lock:
            if self._closed:
                raise LedgerError(f"ledger {self.url!r} is closed")
        try:
            params = pg.conninfo.conninfo_to_dict(self._conninfo)
            user_options = str(params.get("options") or "")
            options = " ".join([user_options, *self._options]).strip()
            conn: Conn = pg.connect(self._conninfo, autocommit=not reader, options=options)
        except pg.OperationalError as exc:
            wait = max(2, self._connect_timeout) if self._connect_timeout > 0 else "no"
            raise LedgerUnreachable(
                f"cannot reach the PostgreSQL ledger at {self.url} (connect_timeout {wait} s): "
                f"{_first_line(exc)}. Check that the server is running and the URL is right; nothing was written "
                "by this call and every row already recorded is intact."
            ) from exc
        except pg.ProgrammingError as exc:
            raise LedgerConfigError(f"bad PostgreSQL ledger URL {self.url!r}: {_first_line(exc)}") from exc
        if reader:
            conn.isolation_level = pg.IsolationLevel.REPEATABLE_READ  # one snapshot per read view
            conn.read_only = True
        with self._pool_lock:
            self._open.add(conn)
        return conn

    def _take(self, *, reader: bool = False) -> Conn:
        with self._pool_lock:
            if self._closed:
                raise LedgerError(f"ledger {self.url!r} is closed")
            idle = self._ridle if reader else self._idle
            conn = idle.pop() if idle else None
        while conn is not None and _stale(conn):
            # The server closed it (restart, idle timeout): a fresh connection instead of a failed write.
            self._discard(conn)
            with self._pool_lock:
                conn = idle.pop() if idle else None
        return conn if conn is not None else self._connect(reader=reader)

    def _give(self, conn: Conn, *, reader: bool = False) -> None:
        reusable = not conn.closed and not conn.broken and conn.info.transaction_status == _IDLE
        with self._pool_lock:
            idle = self._ridle if reader else self._idle
            if reusable and not self._closed and conn in self._open and len(idle) < _MAX_IDLE:
                idle.append(conn)
                return
            self._open.discard(conn)
        conn.close()

    def _discard(self, conn: Conn) -> None:
        with self._pool_lock:
            self._open.discard(conn)
        conn.close()

    def _forget_inherited(self) -> None:
        """In a forked child: drop the parent's connections without touching the parent's sessions."""
        self._pool_lock = threading.Lock()  # another thread of the parent may have held it
        conns, self._open, self._idle, self._ridle = self._open, set(), [], []
        for conn in conns:
            try:
                fd = conn.pgconn.socket
            except Exception:
                fd = -1
            if fd >= 0:
                # Point the child's copy of the socket at /dev/null, so closing it cannot send the
                # parent's session a Terminate message.
                devnull = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(devnull, fd)
                finally:
                    os.close(devnull)
            with suppress(Exception):  # nothing useful to do about it in the child
                conn.close()

    # -- schema ------------------------------------------------------------------------------------
    def _state(self, conn: Conn) -> tuple[dict[str, str], set[str]]:
        """The meta table's contents and the triggers missing or disabled (nothing is locked or created)."""
        regs = conn.execute("SELECT " + ", ".join(["to_regclass(%s)::text"] * 3), list(self._t.values())).fetchone()
        assert regs is not None
        if regs[0] is None:
            return {}, {*_TABLES, _APPEND_FN}
        meta = {str(k): str(v) for k, v in conn.execute(f"SELECT key, value FROM {self._t['loopguard_meta']}")}
        ok: set[str] = set()
        if all(r is not None for r in regs):
            rows = conn.execute(
                "SELECT c.relname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgrelid = ANY(%s::regclass[]) AND t.tgname = c.relname || '_append_only'",
                (list(self._t.values()),),
            ).fetchall()
            ok = {name for name, enabled in rows if str(enabled) in _ENABLED}
            if conn.execute("SELECT to_regprocedure(%s)::text", (self._append_sig,)).fetchone() != (None,):
                ok.add(_APPEND_FN)
        return meta, {*_TABLES, _APPEND_FN} - ok

    def _ddl(self) -> list[str]:
        meta, ledger, cps = (self._t[n] for n in _TABLES)
        stmts = [] if self.schema is None else [f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"']
        stmts += [
            f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"""CREATE TABLE IF NOT EXISTS {ledger} (
                seq BIGINT PRIMARY KEY,
                session_id TEXT NOT NULL,
                turn BIGINT NOT NULL,
                origin TEXT NOT NULL,
                agent TEXT,
                tool TEXT,
                input_hash TEXT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cost_micros BIGINT NOT NULL,
                duration_ms BIGINT NOT NULL,
                passed SMALLINT NOT NULL,
                breach_reason TEXT,
                created_at TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                row_hash TEXT NOT NULL
            )""",
            f"CREATE INDEX IF NOT EXISTS loopguard_ledger_session ON {ledger} (session_id, seq)",
            f"""CREATE TABLE IF NOT EXISTS {cps} (
                id BIGSERIAL PRIMARY KEY,
                size BIGINT NOT NULL,
                head_hash TEXT NOT NULL,
                note TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            f"""CREATE OR REPLACE FUNCTION {self._fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
                RAISE EXCEPTION '{APPEND_ONLY_MESSAGE} (% on % refused)', TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'restrict_violation';
            END
            $fn$""",
            # The fast append: lock, read the head with a fresh snapshot (a VOLATILE function takes one
            # per statement), hash and insert, all in the caller's single-statement transaction, so one
            # round trip. The hash is SHA-256(prev || canonical bytes made by _chain.canonical); the client
            # recomputes it with _chain.row_hash and checks it.
            f"""CREATE OR REPLACE FUNCTION {self._append_fn}(
                p_lock bigint, p_genesis text, p_canonical bytea, p_session_id text, p_turn bigint,
                p_origin text, p_agent text, p_tool text, p_input_hash text, p_input_tokens bigint,
                p_output_tokens bigint, p_cost_micros bigint, p_duration_ms bigint, p_passed smallint,
                p_breach_reason text, p_created_at text
            ) RETURNS TABLE (new_seq bigint, new_prev text, new_hash text) LANGUAGE plpgsql VOLATILE AS $fn$
            DECLARE
                head_seq bigint;
                head_hash text;
            BEGIN
                PERFORM pg_advisory_xact_lock(p_lock);
                SELECT l.seq, l.row_hash INTO head_seq, head_hash FROM {ledger} l ORDER BY l.seq DESC LIMIT 1;
                IF NOT FOUND THEN
                    head_seq := 0;
                    head_hash := p_genesis;
                END IF;
                new_seq := head_seq + 1;
                new_prev := head_hash;
                new_hash := encode(sha256(decode(head_hash, 'hex') || p_canonical), 'hex');
                INSERT INTO {ledger} (seq, session_id, turn, origin, agent, tool, input_hash, input_tokens,
                    output_tokens, cost_micros, duration_ms, passed, breach_reason, created_at, prev_hash, row_hash)
                VALUES (new_seq, p_session_id, p_turn, p_origin, p_agent, p_tool, p_input_hash, p_input_tokens,
                    p_output_tokens, p_cost_micros, p_duration_ms, p_passed, p_breach_reason, p_created_at,
                    new_prev, new_hash);
                RETURN NEXT;
            END
            $fn$""",
        ]
        return stmts

    def _init_schema(self, input_hash_mode: str) -> str:
        conn = self._take()
        try:
            meta, broken = self._state(conn)
            if broken or not {"chain_id", "schema_version", "input_hash"} <= meta.keys():
                meta = self._create(conn, input_hash_mode)
        except self._pg.errors.InsufficientPrivilege as exc:
            self._rollback(conn)
            raise LedgerError(
                f"the role in {self.url} may not create or repair the ledger's tables and append-only triggers "
                f"({_first_line(exc)}): let the tables' owner open the ledger once, or grant the privilege"
            ) from exc
        except self._pg.Error as exc:
            self._rollback(conn)
            raise LedgerError(f"cannot set up the ledger at {self.url}: {_first_line(exc)}") from exc
        finally:
            self._give(conn)
        if meta.get("input_hash") != input_hash_mode:
            stored = meta.get("input_hash", "")
            want = "no hmac_key" if stored == "sha256" else "the hmac_key it was created with"
            raise LedgerConfigError(
                f"ledger {self.url!r} hashes inputs with {stored.split(':')[0]}; open it with {want} "
                "(a different key would make its input hashes incomparable)"
            )
        return str(meta["chain_id"])

    def _create(self, conn: Conn, input_hash_mode: str) -> dict[str, str]:
        """Create what is missing (tables, triggers, meta) in one transaction under the schema's init lock."""
        where = self.schema or str(conn.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]
        conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_lock_key('init', where)})")
        for stmt in self._ddl():
            conn.execute(stmt)
        _, broken = self._state(conn)
        for table in sorted(broken & set(_TABLES)):
            exists = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
                (self._t[table], f"{table}_append_only"),
            ).fetchone()
            if exists:  # disabled with ALTER TABLE ... DISABLE TRIGGER: turn it back on
                conn.execute(f"ALTER TABLE {self._t[table]} ENABLE TRIGGER {table}_append_only")
            else:
                conn.execute(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {self._t[table]} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {self._fn}()"
                )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self._t['loopguard_meta']} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                [
                    ("chain_id", str(uuid.uuid4())),
                    ("schema_version", SCHEMA_VERSION),
                    ("input_hash", input_hash_mode),
                    ("created_at", self._utc_now()),
                ],
            )
        meta = {str(k): str(v) for k, v in conn.execute(f"SELECT key, value FROM {self._t['loopguard_meta']}")}
        conn.execute("COMMIT")
        return meta

    def _open_existing(self) -> str:
        """Read-only use (verify, review, export): never creates anything, needs no hmac key."""
        conn = self._take(reader=True)
        try:
            meta, _ = self._state(conn)
        except self._pg.Error as exc:
            raise LedgerError(f"cannot read the ledger at {self.url}: {_first_line(exc)}") from exc
        finally:
            self._rollback(conn)
            self._give(conn, reader=True)
        if "chain_id" not in meta:
            where = f"schema {self.schema!r}" if self.schema else "the connection's schema (search_path)"
            raise LedgerError(
                f"no loopguard ledger in {where} at {self.url}: check the URL and its schema= parameter "
                "(nothing was created)"
            )
        return str(meta["chain_id"])

    # -- writes ------------------------------------------------------------------------------------
    def append(self, values: Sequence[Any], on_sealed: OnSealed | None) -> int:
        if on_sealed is None and not self.read_only:
            return self._recovering(values, lambda: self._append_fast(values))
        return self.append_many((values,), on_sealed)

    def append_many(self, rows: Sequence[Sequence[Any]], on_sealed: OnSealed | None) -> int:
        """Append ``rows`` in order in one transaction (one commit, one round trip for the inserts); return the
        last one's seq."""
        if self.read_only:
            raise LedgerError(f"ledger {self.url!r} was opened read_only; open it without read_only to write")
        return self._recovering(
            rows[-1], lambda: self._sealed_write(lambda conn, head: self._insert_rows(conn, head, rows, on_sealed))
        )

    def _recovering(self, last: Sequence[Any], write: Callable[[], int]) -> int:
        for attempt in (1, 2):
            try:
                return write()
            except _Lost as lost:
                # The connection died after the rows were sent. Once that session is gone its transaction is
                # final, so look the last row up (the rows were one transaction): found -> stored; absent ->
                # write them (once more).
                seq = self._recover(lost, last)
                if seq is not None:
                    return seq
                if attempt == 2:
                    raise lost.error from lost.cause
        raise AssertionError("unreachable")  # pragma: no cover

    def _recover(self, lost: _Lost, values: Sequence[Any]) -> int | None:
        ledger = self._t["loopguard_ledger"]
        try:
            conn = self._take()
        except LedgerUnreachable:
            raise lost.error from lost.cause
        try:
            alive = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (lost.pid,)).fetchone()
            if alive is not None:  # still running (a network split): its commit may yet happen
                raise lost.error from lost.cause
            found = conn.execute(find_row_sql(ledger, "%s"), row_key(values)).fetchall()
        except self._pg.Error:
            raise lost.error from lost.cause
        finally:
            self._give(conn)
        return matching_row(found, values)

    def _append_fast(self, values: Sequence[Any]) -> int:
        """One statement, one round trip, its own transaction: the append function locks, links and inserts."""
        conn = self._take()
        pid = conn.info.backend_pid  # unknown once the connection breaks; needed to recover
        try:
            try:
                row = conn.execute(
                    self._append_sql, (self._lock, self.genesis, canonical(values), *values), prepare=True
                ).fetchone()
            except BaseException as exc:
                raise self._write_error(conn, exc, sent=True, pid=pid) from exc
        finally:
            self._give(conn)
        assert row is not None
        seq, prev, sealed = int(row[0]), str(row[1]), str(row[2])
        if sealed != row_hash(prev, values):  # the chain rules live in _chain; the server must agree
            raise LedgerError(
                f"ledger {self.url}: the server hashed row {seq} differently from loopguard's chain rules; "
                "run verify() and report this as a bug"
            )
        return seq

    def checkpoint(self, make: Callable[[int, str], Checkpoint]) -> Checkpoint:
        # Allowed when read_only: a checkpoint adds no row and needs no hmac key.
        def write(conn: Conn, head: tuple[int, str] | None) -> Checkpoint:
            size, head_hash = (0, self.genesis) if head is None else head
            cp = make(size, head_hash)
            with conn.pipeline():
                conn.execute(self._insert_cp_sql, (cp.size, cp.head_hash, cp.note, self._utc_now()))
                conn.execute("COMMIT")
            return cp

        try:
            return self._sealed_write(write)
        except _Lost as lost:
            raise lost.error from lost.cause

    def _insert_rows(
        self,
        conn: Conn,
        head: tuple[int, str] | None,
        rows: Sequence[Sequence[Any]],
        on_sealed: OnSealed | None,
    ) -> int:
        sealed = seal_rows((0, self.genesis) if head is None else head, rows, on_sealed, self._utc_now)
        with conn.pipeline():  # one round trip: INSERT(s) and COMMIT
            cur = conn.cursor()
            cur.executemany(self._insert_sql, sealed.rows)
            if sealed.checkpoints:
                cur.executemany(self._insert_cp_sql, sealed.checkpoints)
            conn.execute("COMMIT")
        return sealed.head[0]

    def _sealed_write(self, write: Callable[[Conn, tuple[int, str] | None], _T]) -> _T:
        """Run ``write(conn, head)`` in a transaction holding the chain's advisory lock (two round trips)."""
        for attempt in (1, 2):
            conn = self._take()
            try:
                try:
                    cur = conn.execute(self._begin_sql)
                    cur.nextset()
                    cur.nextset()
                    head = cur.fetchone()
                except BaseException as exc:
                    if conn.broken and attempt == 1 and isinstance(exc, self._pg.OperationalError):
                        continue  # a connection the server dropped; nothing was written, so retry once
                    raise self._write_error(conn, exc, sent=False) from exc
                pid = conn.info.backend_pid
                try:
                    return write(conn, None if head is None else (int(head[0]), str(head[1])))
                except BaseException as exc:
                    raise self._write_error(conn, exc, sent=True, pid=pid) from exc
            finally:
                self._give(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_error(self, conn: Conn, exc: BaseException, *, sent: bool, pid: int = 0) -> BaseException:
        """Roll back what can be, and translate ``exc`` into a ledger error that says what happened."""
        pg = self._pg
        if conn.broken and isinstance(exc, pg.OperationalError):
            if not sent:
                return self._lost(exc, committed=False)
            error = self._lost(exc, committed=None)
            return _Lost(pid, error, exc) if pid else error
        self._rollback(conn)
        if isinstance(exc, pg.errors.LockNotAvailable):
            return self._busy()
        if isinstance(exc, (pg.DataError, pg.IntegrityError, UnicodeEncodeError)) and not isinstance(
            exc, pg.errors.UniqueViolation
        ):
            return LedgerConfigError(
                f"PostgreSQL cannot store this row in {self.url}: {_first_line(exc)} "
                "(text must be valid Unicode without NUL characters; integers must fit in 64 bits)"
            )
        if isinstance(exc, pg.Error):
            return LedgerError(f"ledger {self.url}: {_first_line(exc)}; this row was not written")
        return exc

    def _rollback(self, conn: Conn) -> None:
        if conn.closed or conn.broken:
            return
        try:
            if conn.autocommit:
                conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except self._pg.Error:
            self._discard(conn)

    def _busy(self) -> LedgerBusy:
        return LedgerBusy(
            f"ledger {self.url} stayed locked by another writer for {self._timeout:g} s; this row was not "
            "written and every earlier row is intact. Retry, pass a larger busy_timeout to Ledger(), or find "
            "the session holding a long transaction (pg_stat_activity)."
        )

    def _lost(self, exc: Exception, *, committed: bool | None) -> LedgerError:
        if committed is None:
            fate = "the row may or may not have been stored (look for it with rows())"
        else:
            fate = "this row was not written"
        return LedgerUnreachable(
            f"lost the connection to the PostgreSQL ledger at {self.url}: {_first_line(exc)}; {fate}. "
            "Every row already recorded is intact and the chain cannot fork either way."
        )

    # -- reads -------------------------------------------------------------------------------------
    @contextmanager
    def reader(self) -> Iterator[_Reader]:
        conn = self._take(reader=True)
        view = _Reader(conn, self._t)
        try:
            yield view
        except self._pg.Error as exc:
            raise LedgerError(f"cannot read the ledger at {self.url}: {_first_line(exc)}") from exc
        finally:
            view.close()
            self._rollback(conn)
            self._give(conn, reader=True)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle, self._ridle = self._idle + self._ridle, [], []
            for conn in idle:
                self._open.discard(conn)
        # Connections in use by an append finish it and are closed when given back.
        for conn in idle:
            conn.close()


class _Lost(Exception):
    """Internal: the connection died after a write was sent; ``error`` is what to raise if it stays unknown."""

    def __init__(self, pid: int, error: LedgerError, cause: BaseException) -> None:
        super().__init__(str(error))
        self.pid, self.error, self.cause = pid, error, cause


_counter = itertools.count()


class _Reader:
    """A read view over one REPEATABLE READ snapshot; rows stream through server-side cursors."""

    def __init__(self, conn: Conn, tables: dict[str, str]) -> None:
        self._conn = conn
        self._ledger = tables["loopguard_ledger"]
        self._cps = tables["loopguard_checkpoints"]
        self._cursors: list[Any] = []

    def close(self) -> None:
        for cur in self._cursors:
            if not cur.closed and not self._conn.closed and not self._conn.broken:
                with suppress(Exception):  # the transaction already failed; the rollback closes it
                    cur.close()
        self._cursors.clear()

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        cur = self._conn.cursor(name=f"loopguard_{os.getpid()}_{next(_counter)}")
        cur.itersize = _ITERSIZE
        self._cursors.append(cur)
        cur.execute(sql, params)
        return self._drain(cur)

    @staticmethod
    def _drain(cur: Any) -> Iterator[tuple[Any, ...]]:
        yield from cur
        cur.close()

    def rows(self, session_id: str | None = None) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(COLUMNS)
        if session_id is None:
            return self._stream(f"SELECT {cols} FROM {self._ledger} ORDER BY seq", ())
        return self._stream(f"SELECT {cols} FROM {self._ledger} WHERE session_id = %s ORDER BY seq", (session_id,))

    def find_row(self, values: Sequence[Any]) -> int | None:
        return matching_row(self._conn.execute(find_row_sql(self._ledger, "%s"), row_key(values)), values)

    def find_hashes(self, wanted: set[str]) -> dict[str, int]:
        rows = self._conn.execute(
            f"SELECT row_hash, MIN(seq) FROM {self._ledger} WHERE row_hash = ANY(%s) GROUP BY row_hash",
            (sorted(wanted),),
        ).fetchall()
        return {str(h): int(s) for h, s in rows}

    def head(self) -> tuple[int, str] | None:
        row = self._conn.execute(f"SELECT seq, row_hash FROM {self._ledger} ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def sessions(self) -> list[SessionSummary]:
        # COLLATE "C": compare the ISO times byte by byte, as SQLite does; sums cast back from NUMERIC.
        sql = (
            'SELECT session_id, MIN(created_at COLLATE "C"), MAX(created_at COLLATE "C"), COUNT(*), '
            "SUM(input_tokens + output_tokens)::BIGINT, SUM(cost_micros)::BIGINT, "
            f"COUNT(*) FILTER (WHERE origin = 'breaker') FROM {self._ledger} GROUP BY session_id ORDER BY MIN(seq)"
        )
        return [SessionSummary(*row) for row in self._conn.execute(sql).fetchall()]

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._conn.execute(f"SELECT note FROM {self._cps} ORDER BY id").fetchall()
        return [Checkpoint.parse(note) for (note,) in rows]


def _stale(conn: Conn) -> bool:
    """An idle connection with something to read has been closed or terminated by the server."""
    if conn.closed or conn.broken:
        return True
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
