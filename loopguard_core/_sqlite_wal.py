"""SQLite files shared by processes: WAL mode, switched on safely however many processes open a file at once.

Every SQLite file loopguard writes (the run store, the ledger, the approval queue, the budget store, the
side-effect records) is opened this way, so the rule lives here once.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["is_busy", "use_wal"]


def is_busy(exc: BaseException) -> bool:
    """An error that says another connection holds the file (worth waiting for), not a broken one."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL mode (it stays so for every connection once one has switched it).

    The switch needs the file to itself for a moment, and SQLite does not wait for that (the busy handler is
    not called for it): another process opening, creating or appending to the same new file makes it fail at
    once, or leaves the mode unchanged. So it is tried again, with a short growing pause, until it holds or
    ``timeout`` seconds have passed; then the last ``sqlite3.OperationalError`` is raised. An error that is not
    about a busy file is raised at once.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            if str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() == "wal":
                return
            error = sqlite3.OperationalError("database is locked")  # not switched: another connection held it
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            error = exc
        if time.monotonic() >= deadline:
            raise error
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
