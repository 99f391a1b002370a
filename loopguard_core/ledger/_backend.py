"""The seam between the ledger and its storage.

A backend stores rows and checkpoints and serializes appends per chain; everything about hashing,
encoding and verification lives in backend-agnostic modules (``_chain``, ``_verify``, ``_checkpoint``) so a
new backend (e.g. PostgreSQL with ``pg_advisory_xact_lock``) only has to implement this protocol:

* ``append`` must, in ONE transaction that excludes every other appender of the chain (SQLite:
  ``BEGIN IMMEDIATE``; PostgreSQL: an advisory transaction lock on the chain id), read the head row
  (``seq``, ``row_hash``), compute ``row_hash(prev, values)`` with ``_chain.row_hash``, insert the row at
  ``seq = head + 1``, call ``on_sealed(seq, row_hash)`` and store the checkpoint it returns, then commit.
* optional: ``append_many(rows, on_sealed)`` appends several rows the same way in ONE transaction and returns
  the last seq; ``Ledger(defer_seconds=...)`` needs it (the SQLite and PostgreSQL backends have it).
* ``reader()`` yields a read view over one consistent snapshot; ``rows`` must stream in ``seq`` order.
  Optional: the view's ``find_row(values)`` (the seq of a stored row holding exactly ``values``) lets
  ``defer_seconds`` tell whether a batch an interrupt cut short had already committed (never writing it twice).
* ``input_hash_mode=None`` opens an existing ledger read-only (no schema changes, no key check).
* The database itself must refuse UPDATE and DELETE on the rows, checkpoints and meta tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from ._chain import row_hash
from ._checkpoint import Checkpoint
from ._model import COLUMNS, SessionSummary

__all__ = [
    "VALUE_COLUMNS",
    "LedgerBackend",
    "OnSealed",
    "ReadView",
    "Sealed",
    "find_row_sql",
    "matching_row",
    "row_key",
    "seal_rows",
]

#: The columns of a row's ``values`` (what ``append`` is given): all but ``seq`` and the two hashes.
VALUE_COLUMNS = COLUMNS[1:14]

#: Called inside the append transaction with the new row's seq and hash; returns a checkpoint to store.
OnSealed = Callable[[int, str], "Checkpoint | None"]


class ReadView(Protocol):
    """Reads over one snapshot of the ledger."""

    def rows(self, session_id: str | None = None) -> Iterator[tuple[Any, ...]]:
        """Stored rows as tuples in ``COLUMNS`` order, ascending ``seq``, streamed."""
        ...

    def find_hashes(self, wanted: set[str]) -> dict[str, int]:
        """Map each stored ``row_hash`` in ``wanted`` to the lowest ``seq`` that holds it."""
        ...

    def head(self) -> tuple[int, str] | None:
        """``(seq, row_hash)`` of the last row, or None when empty."""
        ...

    def sessions(self) -> list[SessionSummary]: ...

    def checkpoints(self) -> list[Checkpoint]: ...


class LedgerBackend(Protocol):
    """Storage for one chain."""

    url: str
    chain_id: str

    def append(self, values: Sequence[Any], on_sealed: OnSealed | None) -> int: ...

    def checkpoint(self, make: Callable[[int, str], Checkpoint]) -> Checkpoint:
        """Under the append lock, build a checkpoint of the current head with ``make(size, head_hash)``,
        store it, and return it."""
        ...

    def reader(self) -> AbstractContextManager[ReadView]: ...

    def close(self) -> None: ...


class Sealed(NamedTuple):
    """Rows chained onto a head, ready to insert in one transaction."""

    rows: list[tuple[Any, ...]]  # (seq, *values, prev_hash, row_hash), in order
    checkpoints: list[tuple[Any, ...]]  # (size, head_hash, note, created_at) that on_sealed asked for
    head: tuple[int, str]  # (seq, row_hash) of the last row


def seal_rows(
    head: tuple[int, str], rows: Sequence[Sequence[Any]], on_sealed: OnSealed | None, now: Callable[[], str]
) -> Sealed:
    """Chain ``rows`` onto ``head`` (``(0, genesis)`` for an empty chain): every backend's append, in one place."""
    seq, prev = head
    sealed_rows: list[tuple[Any, ...]] = []
    checkpoints: list[tuple[Any, ...]] = []
    for values in rows:
        seq += 1
        sealed = row_hash(prev, values)
        sealed_rows.append((seq, *values, prev, sealed))
        prev = sealed
        cp = None if on_sealed is None else on_sealed(seq, sealed)
        if cp is not None:
            checkpoints.append((cp.size, cp.head_hash, cp.note, now()))
    return Sealed(sealed_rows, checkpoints, (seq, prev))


def find_row_sql(table: str, mark: str) -> str:
    """The query for rows of one session written at one time (``mark`` is the driver's placeholder): with
    :func:`row_key`'s parameters, what :func:`matching_row` picks the row from."""
    return (
        f"SELECT seq, {', '.join(VALUE_COLUMNS)} FROM {table} WHERE session_id = {mark} AND created_at = {mark} "
        "ORDER BY seq"
    )


def row_key(values: Sequence[Any]) -> tuple[Any, Any]:
    """``(session_id, created_at)`` of a row's ``values``: the parameters of :func:`find_row_sql`."""
    return values[0], values[12]


def matching_row(found: Iterable[Sequence[Any]], values: Sequence[Any]) -> int | None:
    """The seq of the first of ``found`` (``(seq, *VALUE_COLUMNS)`` rows, read by session and time) that holds
    exactly ``values``, or None: whether a write whose outcome is unknown was stored."""
    wanted = tuple(values)
    for row in found:
        if tuple(row[1:]) == wanted:
            return int(row[0])
    return None
