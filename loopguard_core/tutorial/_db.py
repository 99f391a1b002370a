"""SQLite plumbing shared by the tutorial layer: short-lived connections and append-only triggers."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

__all__ = ["DbPath", "append_only_triggers", "connect", "lastrowid"]

#: What the tutorial's ``db_path`` arguments accept (it types them ``str``; paths work too).
DbPath: TypeAlias = "str | os.PathLike[str]"


@contextmanager
def connect(db_path: DbPath) -> Iterator[sqlite3.Connection]:
    """One connection per operation, like the tutorial, but closed afterwards (the tutorial leaks it).

    Commits when the block succeeds and rolls back when it raises.
    """
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def lastrowid(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just wrote (never ``None`` after a successful INSERT)."""
    row_id = cursor.lastrowid
    if row_id is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
        raise RuntimeError("sqlite3 reported no row id after an INSERT")
    return row_id


def append_only_triggers(table: str) -> str:
    """SQL creating triggers that refuse UPDATE and DELETE on ``table``.

    Triggers do not appear in ``PRAGMA table_info``, so the tutorial's schema checks see the same table;
    ``IF NOT EXISTS`` lets a database created by the original tutorial pick them up on the next open.
    A refused statement raises ``sqlite3.IntegrityError`` and the whole statement is rolled back.
    """
    refusal = f"{table} is append-only: {{verb}} refused; write a new row instead"
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{verb.lower()} "
        f"BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{refusal.format(verb=verb)}'); END;"
        for verb in ("UPDATE", "DELETE")
    )
