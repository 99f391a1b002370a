"""A ledger file this process may not write: a clear error naming the path and the fix, and ``read_only=True``
reads it all the same.

Root writes any file whatever its mode, so when the tests run as root (CI does) the part that must not be
able to write runs in a forked child that has dropped to the ``nobody`` user first.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.ledger import Ledger, LedgerConfigError, LedgerError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes and users")

NOBODY = 65534


def as_another_user(fn: Callable[[], Any]) -> Any:
    """``fn()`` run by a user that cannot write root's files: itself when not root, else a forked child
    that switched to ``nobody`` (no exec: the modules it needs are already imported). Its exception comes
    back as a ``(type name, message)`` tuple, its result as JSON."""
    if os.geteuid() != 0:
        try:
            return fn()
        except Exception as exc:
            return (type(exc).__name__, str(exc))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out: Any = {"result": fn()}
        except BaseException as exc:
            out = {"error": [type(exc).__name__, str(exc)]}
        with os.fdopen(write, "w") as fh:
            fh.write(json.dumps(out, default=str))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"the child failed (status {status})"
    out = json.loads(data)
    return tuple(out["error"]) if "error" in out else out["result"]


@pytest.fixture
def read_only_ledger() -> Iterator[Path]:
    """A ledger with 5 rows, then made read-only: the file and its directory, for everyone but root."""
    folder = Path(tempfile.mkdtemp(prefix="lg-read-only-"))  # under /tmp: reachable by another user
    path = folder / "ledger.db"
    ledger = Ledger(path)
    for turn in range(1, 6):
        ledger.record(session_id="s", origin="model", turn=turn, input_text=f"prompt {turn}")
    ledger.close()
    assert not (folder / "ledger.db-wal").exists()  # the last close checkpointed the WAL away
    path.chmod(0o444)
    folder.chmod(0o555)
    yield path
    folder.chmod(0o755)
    shutil.rmtree(folder)


def test_opening_a_read_only_file_to_write_names_the_path_and_the_fix(read_only_ledger: Path) -> None:
    """Before: sqlite3.OperationalError 'attempt to write a readonly database' from inside schema set-up
    (wrapped as "cannot open ledger"), with no word of read_only=True."""

    def open_to_write() -> Any:
        Ledger(read_only_ledger)
        return "opened"

    error = as_another_user(open_to_write)
    assert isinstance(error, tuple), error
    name, message = error
    assert name == LedgerConfigError.__name__
    assert issubclass(LedgerConfigError, LedgerError)
    assert str(read_only_ledger) in message
    assert f"Ledger({str(read_only_ledger)!r}, read_only=True)" in message
    assert "write access to the file and to its directory" in message
    assert "nothing was written" in message


def test_read_only_true_verifies_a_file_this_process_cannot_write(read_only_ledger: Path) -> None:
    """Before: read_only=True failed too ('attempt to write a readonly database' from PRAGMA synchronous):
    SQLite could not make the WAL's shared-memory file beside a file in a directory it may not write."""

    def verify() -> Any:
        ledger = Ledger(read_only_ledger, read_only=True)
        result = ledger.verify()
        rows = [row.turn for row in ledger.rows()]
        sessions = [s.session_id for s in ledger.sessions()]
        try:
            ledger.record(session_id="s", origin="model", turn=6)
            refused = ""
        except LedgerError as exc:
            refused = str(exc)
        try:
            ledger.checkpoint()
            checkpoint = ""
        except LedgerError as exc:
            checkpoint = f"{type(exc).__name__}: {exc}"
        ledger.close()
        return [result.ok, result.rows_checked, rows, sessions, refused, checkpoint]

    ok, checked, rows, sessions, refused, checkpoint = as_another_user(verify)
    assert (ok, checked, rows, sessions) == (True, 5, [1, 2, 3, 4, 5], ["s"])
    assert "read_only" in refused
    # A checkpoint adds no row but is still a write: on this file it gets the same clear error.
    assert checkpoint.startswith("LedgerConfigError") and "cannot be written by this process" in checkpoint
    assert sorted(p.name for p in read_only_ledger.parent.iterdir()) == ["ledger.db"]  # nothing was created


def test_read_only_still_checkpoints_a_file_it_may_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).record(session_id="s", origin="model", turn=1)
    reader = Ledger(path, read_only=True)
    assert reader.checkpoint().size == 1
    assert reader.verify().ok
    reader.close()
