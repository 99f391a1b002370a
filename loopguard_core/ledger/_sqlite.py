"""SQLite backend: WAL mode, one connection per thread (and per process), appends under BEGIN IMMEDIATE.

Opening is safe while other processes open, create or append to the same file (a worker pool starting up):
switching a new file to WAL is retried within the busy timeout, and the schema is created under
BEGIN IMMEDIATE with IF NOT EXISTS. A file this process may not write gives a LedgerConfigError naming the
path and the fix; ``read_only=True`` reads it all the same (read-only connection, or ``immutable`` when not
even SQLite's shared-memory file can be made beside it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from .._sqlite_wal import use_wal
from ._backend import OnSealed, find_row_sql, matching_row, row_key, seal_rows
from ._chain import genesis_hash, row_hash
from ._checkpoint import Checkpoint
from ._errors import LedgerBusy, LedgerConfigError, LedgerError
from ._model import COLUMNS, SessionSummary

_SQLITE_READONLY = 8  # primary result code (extended codes keep it in the low byte)

# Bumped in a forked child so no connection opened before the fork is reused after it (cheaper than
# calling getpid() on every append).
_fork_generation = [0]


def _after_fork() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

__all__ = ["APPEND_ONLY_MESSAGE", "SqliteBackend", "append_only_triggers"]

APPEND_ONLY_MESSAGE = "loopguard ledger is append-only"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS loopguard_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS loopguard_ledger (
    seq INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    origin TEXT NOT NULL,
    agent TEXT,
    tool TEXT,
    input_hash TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    breach_reason TEXT,
    created_at TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS loopguard_checkpoints (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def append_only_triggers(table: str) -> str:
    """SQL creating the triggers that make ``table`` refuse UPDATE and DELETE."""
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END;\n"
        for op in ("UPDATE", "DELETE")
    )


_COLS = ", ".join(COLUMNS)
_INSERT = f"INSERT INTO loopguard_ledger ({_COLS}) VALUES ({', '.join('?' * len(COLUMNS))})"
_HEAD = "SELECT seq, row_hash FROM loopguard_ledger ORDER BY seq DESC LIMIT 1"
_FIND_ROW = find_row_sql("loopguard_ledger", "?")
_INSERT_CP = "INSERT INTO loopguard_checkpoints (size, head_hash, note, created_at) VALUES (?, ?, ?, ?)"


def sqlite_path(path_or_url: str) -> str:
    """``ledger.db``, ``sqlite:///abs/path.db``, ``sqlite:///rel.db`` or ``:memory:`` -> a path for sqlite3."""
    if path_or_url.startswith("sqlite://"):
        rest = path_or_url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise LedgerConfigError(
                f"bad SQLite URL {path_or_url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        return rest[1:] or ":memory:"
    return path_or_url


class SqliteBackend:
    """One ledger chain in one SQLite file."""

    def __init__(
        self,
        path: str,
        *,
        input_hash_mode: str | None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        utc_now: Callable[[], str],
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise LedgerConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = path
        self.url = path
        self._memory = path == ":memory:"
        self._sync = synchronous.upper()
        self._timeout = float(busy_timeout)
        self._utc_now = utc_now
        self._local = threading.local()
        self._all: list[tuple[sqlite3.Connection, int]] = []
        self._all_lock = threading.Lock()
        # In-memory databases are per connection: share one, serialized by this lock (held only per call).
        self._mem_lock = threading.Lock()
        self._mem_conn: sqlite3.Connection | None = None
        self._closed = False
        self.read_only = input_hash_mode is None
        # Set when a read_only ledger could only be read through a URI (a file this process may not write).
        self._read_uri: str | None = None
        # (seq, row_hash) of the last row this process appended: a hint for the one-statement append,
        # never trusted without the database confirming it is still the head. One tuple, replaced whole.
        self._head: tuple[int, str] | None = None
        self.chain_id = self._open_existing() if input_hash_mode is None else self._init_schema(input_hash_mode)
        self.genesis = genesis_hash(self.chain_id)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = self._open_connection()
        except sqlite3.Error as exc:
            if _is_read_only(exc):
                raise self._read_only_error(exc) from exc
            raise LedgerError(f"cannot open ledger {self.path!r}: {exc}") from exc
        with self._all_lock:
            self._all.append((conn, _fork_generation[0]))
        return conn

    def _open_connection(self) -> sqlite3.Connection:
        if self._read_uri is not None:
            return self._uri_connection(self._read_uri)
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self._sync}")
            if self.read_only and not self._memory:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # can this process read it?
        except sqlite3.OperationalError as exc:
            conn.close()
            if not (self.read_only and not self._memory and _is_read_only(exc)):
                raise
            return self._read_only_connection()
        return conn

    def _read_only_connection(self) -> sqlite3.Connection:
        """A file this process may not write, opened to read: ``mode=ro`` (which still needs SQLite's -shm file
        beside a WAL database), else ``immutable=1`` (nothing is written or locked; right for a file nobody can
        write, such as an archived or mounted copy)."""
        base = "file:" + quote(os.path.abspath(self.path)) + "?mode=ro"
        error: sqlite3.Error | None = None
        for uri in (base, base + "&immutable=1"):
            try:
                conn = self._uri_connection(uri)
            except sqlite3.Error as exc:
                error = exc
                continue
            self._read_uri = uri
            return conn
        assert error is not None
        raise error

    def _uri_connection(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _read_only_error(self, exc: sqlite3.Error) -> LedgerConfigError:
        name = os.path.basename(self.path)
        return LedgerConfigError(
            f"ledger {self.path!r} cannot be written by this process ({exc}); nothing was written. To verify, "
            f"review or export it, open it with Ledger({self.path!r}, read_only=True). To write to it, give this "
            f"process write access to the file and to its directory (SQLite keeps {name}-wal and {name}-shm "
            "beside it)."
        )

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise LedgerError(f"ledger {self.path!r} is closed")
        if self._memory:
            if self._mem_conn is None:
                self._mem_conn = self._connect()
            return self._mem_conn
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        # A connection must never cross a fork: the child opens its own.
        if conn is None or local.gen != _fork_generation[0]:
            conn = self._connect()
            local.conn = conn
            local.gen = _fork_generation[0]
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction; excludes every other writer of the file, in any process."""
        with self._mem_lock if self._memory else _NO_LOCK:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._busy(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise self._busy(exc) from exc
                raise

    def _busy(self, exc: sqlite3.OperationalError) -> LedgerError:
        msg = str(exc)
        if _is_read_only(exc):
            return self._read_only_error(exc)
        if "locked" in msg or "busy" in msg:
            return LedgerBusy(
                f"ledger {self.path!r} stayed locked by another writer for {self._timeout:g} s; this row was "
                "not written and every earlier row is intact. Retry, pass a larger busy_timeout to Ledger(), "
                "or find the process holding a long transaction on the file."
            )
        return LedgerError(f"ledger {self.path!r}: {msg}")

    def _open_existing(self) -> str:
        """Read-only use (verify, review, export): never creates anything, needs no hmac key."""
        if not self._memory and not os.path.exists(self.path):
            raise LedgerError(f"no ledger at {self.path!r}: check the path (nothing was created)")
        try:
            row = self._conn().execute("SELECT value FROM loopguard_meta WHERE key = 'chain_id'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path!r} is not a loopguard ledger: {exc}") from exc
        if row is None:
            raise LedgerError(f"{self.path!r} is not a loopguard ledger: it has no chain id")
        return str(row[0])

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, however many processes open it at once.

        The switch needs the file to itself for a moment, and SQLite does not wait for that (the busy handler
        is not called for it): another process opening, creating or appending to the same new file makes it
        fail at once. So it is tried again, with a short growing pause, until it holds or the busy timeout has
        passed; once any process has switched the file, it stays WAL for everyone.
        """
        try:
            use_wal(conn, self._timeout)
        except sqlite3.OperationalError as exc:
            raise self._busy(exc) from exc

    def _init_schema(self, input_hash_mode: str) -> str:
        conn = self._conn()
        try:
            if not self._memory:
                self._enable_wal(conn)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path!r} is not a SQLite database: {exc}") from exc
        with self._write() as conn:
            # Statement by statement: executescript() would COMMIT the BEGIN IMMEDIATE.
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            for table in ("loopguard_meta", "loopguard_ledger", "loopguard_checkpoints"):
                for stmt in append_only_triggers(table).splitlines():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT OR IGNORE INTO loopguard_meta (key, value) VALUES (?, ?)",
                [
                    ("chain_id", str(uuid.uuid4())),
                    ("schema_version", SCHEMA_VERSION),
                    ("input_hash", input_hash_mode),
                    ("created_at", self._utc_now()),
                ],
            )
            meta = dict(conn.execute("SELECT key, value FROM loopguard_meta").fetchall())
        if meta.get("input_hash") != input_hash_mode:
            stored = meta.get("input_hash", "")
            want = "no hmac_key" if stored == "sha256" else "the hmac_key it was created with"
            raise LedgerConfigError(
                f"ledger {self.path!r} hashes inputs with {stored.split(':')[0]}; open it with {want} "
                "(a different key would make its input hashes incomparable)"
            )
        return str(meta["chain_id"])

    # -- writes ------------------------------------------------------------------------------------
    def append(self, values: Sequence[Any], on_sealed: OnSealed | None) -> int:
        self._refuse_read_only()
        # The hot path: kept flat (no context manager) because it runs once per guarded call.
        if self._memory:
            with self._mem_lock:
                conn = self._conn()
                return self._append(conn, conn.execute, values, on_sealed)
        # This thread's (fork generation, connection, its INSERT cursor's execute): one lookup per append.
        writer: tuple[int, sqlite3.Connection, _Execute] | None = getattr(self._local, "writer", None)
        if writer is None or writer[0] != _fork_generation[0] or self._closed:
            conn = self._conn()
            writer = (_fork_generation[0], conn, conn.cursor().execute)
            self._local.writer = writer
        return self._append(writer[1], writer[2], values, on_sealed)

    def _append(
        self, conn: sqlite3.Connection, insert: _Execute, values: Sequence[Any], on_sealed: OnSealed | None
    ) -> int:
        head = self._head
        if head is not None and on_sealed is None:
            # Fast path: one autocommit INSERT (which takes the same write lock as BEGIN IMMEDIATE) at the
            # seq after the last row this process wrote, linked to that row. Rows are never deleted and
            # seqs are contiguous, so that seq is free exactly when that row is still the head; if anyone
            # else appended since, the seq is taken, the primary key refuses the row, nothing is written,
            # and the append reads the real head under BEGIN IMMEDIATE. The chain cannot fork either way.
            # The INSERT returns only once SQLite has committed the row (autocommit), as BEGIN/COMMIT does.
            seq, prev = head[0] + 1, head[1]
            sealed = row_hash(prev, values)
            try:
                insert(_INSERT, (seq, *values, prev, sealed))
            except sqlite3.IntegrityError:
                pass
            except sqlite3.OperationalError as exc:
                raise self._busy(exc) from exc
            else:
                self._head = (seq, sealed)
                return seq
        return self._append_batch(conn, (values,), on_sealed)

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise LedgerError(f"ledger {self.path!r} was opened read_only; open it without read_only to write")

    def append_many(self, rows: Sequence[Sequence[Any]], on_sealed: OnSealed | None) -> int:
        """Append ``rows`` in order, in one transaction (one commit); return the last one's seq."""
        self._refuse_read_only()
        if self._memory:
            with self._mem_lock:
                return self._append_batch(self._conn(), rows, on_sealed)
        return self._append_batch(self._conn(), rows, on_sealed)

    def _append_batch(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], on_sealed: OnSealed | None) -> int:
        """Under BEGIN IMMEDIATE: read the head, chain ``rows`` onto it, insert them and their checkpoints."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._busy(exc) from exc
        try:
            row = conn.execute(_HEAD).fetchone()
            sealed = seal_rows((0, self.genesis) if row is None else (row[0], row[1]), rows, on_sealed, self._utc_now)
            conn.executemany(_INSERT, sealed.rows)
            if sealed.checkpoints:
                conn.executemany(_INSERT_CP, sealed.checkpoints)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._busy(exc) from exc
            raise
        self._head = sealed.head
        return sealed.head[0]

    def checkpoint(self, make: Callable[[int, str], Checkpoint]) -> Checkpoint:
        # Allowed when read_only: a checkpoint adds no row and needs no hmac key.
        with self._write() as conn:
            head = conn.execute(_HEAD).fetchone()
            size, head_hash = (0, self.genesis) if head is None else (head[0], head[1])
            cp = make(size, head_hash)
            conn.execute(_INSERT_CP, (cp.size, cp.head_hash, cp.note, self._utc_now()))
        return cp

    # -- reads -------------------------------------------------------------------------------------
    @contextmanager
    def reader(self) -> Iterator[_Reader]:
        if self._memory:
            yield _Reader(self._mem_query)
            return
        if self._read_uri is not None:
            conn = sqlite3.connect(self._read_uri, uri=True, timeout=self._timeout, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for every query of this view (WAL readers never block)
            yield _Reader(lambda sql, params: iter(conn.execute(sql, params)))
        finally:
            conn.close()

    def _mem_query(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        with self._mem_lock:
            rows = self._conn().execute(sql, params).fetchall()
        return iter(rows)

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn, gen in conns:
            # A connection inherited across fork belongs to the parent: closing it here could
            # checkpoint or unlink the parent's WAL.
            if gen == _fork_generation[0]:
                conn.close()


def _is_read_only(exc: sqlite3.Error) -> bool:
    """SQLITE_READONLY: the file (or its directory, for the -wal and -shm files) may not be written."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_READONLY
    return "readonly database" in str(exc)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()

_Query = Callable[[str, Sequence[Any]], Iterator[tuple[Any, ...]]]
_Execute = Callable[[str, Sequence[Any]], object]


class _Reader:
    """A read view: every method runs queries through ``query`` (one snapshot for file databases)."""

    def __init__(self, query: _Query) -> None:
        self._q = query

    def rows(self, session_id: str | None = None) -> Iterator[tuple[Any, ...]]:
        if session_id is None:
            return self._q(f"SELECT {_COLS} FROM loopguard_ledger ORDER BY seq", ())
        return self._q(f"SELECT {_COLS} FROM loopguard_ledger WHERE session_id = ? ORDER BY seq", (session_id,))

    def find_row(self, values: Sequence[Any]) -> int | None:
        return matching_row(self._q(_FIND_ROW, row_key(values)), values)

    def find_hashes(self, wanted: set[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for seq, stored in self._q("SELECT seq, row_hash FROM loopguard_ledger ORDER BY seq", ()):
            if stored in wanted and stored not in found:
                found[stored] = seq
        return found

    def head(self) -> tuple[int, str] | None:
        row = next(self._q(_HEAD, ()), None)
        return None if row is None else (int(row[0]), str(row[1]))

    def sessions(self) -> list[SessionSummary]:
        sql = (
            "SELECT session_id, MIN(created_at), MAX(created_at), COUNT(*), "
            "SUM(input_tokens + output_tokens), SUM(cost_micros), SUM(origin = 'breaker') "
            "FROM loopguard_ledger GROUP BY session_id ORDER BY MIN(seq)"
        )
        return [SessionSummary(*row) for row in self._q(sql, ())]

    def checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint.parse(note) for (note,) in self._q("SELECT note FROM loopguard_checkpoints ORDER BY id", ())]
