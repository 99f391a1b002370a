"""The Ledger: one tamper-evident row per model turn, tool call and breaker trip."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import IO, Any

from .._bounds import label
from ._backend import LedgerBackend, OnSealed, ReadView
from ._chain import InputHasher, genesis_hash, to_micros, utc_now, validate_record
from ._checkpoint import Checkpoint, make_checkpoint, origin_for
from ._deferred import WaitingRows
from ._errors import CheckpointError, LedgerConfigError
from ._keys import load_public_key, load_signing_key
from ._model import ORIGINS, CheckpointCheck, LedgerRow, Problem, SessionSummary, VerifyResult
from ._sqlite import SqliteBackend, sqlite_path
from ._verify import scan_chain

_MAX_INT = 2**63 - 1  # SQLite and PostgreSQL BIGINT
_MAX_BUSY_SECONDS = 86_400 * 7
_MAX_DEFER_SECONDS = 3_600
_ROUTINE = frozenset({"model", "tool"})  # the origins whose passing rows may wait under defer_seconds

__all__ = ["Ledger", "open_backend"]


def open_backend(
    path_or_url: str | os.PathLike[str],
    *,
    input_hash_mode: str | None,
    synchronous: str = "NORMAL",
    busy_timeout: float = 5.0,
) -> LedgerBackend:
    """Pick the backend from the URL scheme: a path or ``sqlite:///`` -> SQLite; ``postgresql://`` -> PostgreSQL."""
    target = os.fspath(path_or_url)
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in {"postgresql", "postgres"}:
        # Imported here: the SQLite-only user never loads it (and psycopg is imported lazily inside).
        from ._postgres import open_backend as open_postgres

        return open_postgres(
            target, input_hash_mode=input_hash_mode, busy_timeout=busy_timeout, synchronous=synchronous
        )
    if scheme not in {"", "sqlite"}:
        raise LedgerConfigError(
            f"unknown ledger URL scheme {scheme!r} in {target!r}: use a file path, sqlite:///path.db "
            "or postgresql://..."
        )
    return SqliteBackend(
        sqlite_path(target),
        input_hash_mode=input_hash_mode,
        synchronous=synchronous,
        busy_timeout=busy_timeout,
        utc_now=utc_now,
    )


class Ledger:
    """An append-only, hash-chained record of every turn, tool call and trip.

    ``Ledger("ledger.db")`` opens (or creates) a SQLite file in WAL mode. Inputs are stored only as
    SHA-256 (or HMAC-SHA256 with ``hmac_key``) hashes; costs as integer micro-USD; times as UTC ISO text.
    ``checkpoint_every=N`` stores a checkpoint (signed when ``signing_key`` is given) every N rows.
    ``read_only=True`` opens an existing ledger for verify/review/export without creating anything and
    without needing its ``hmac_key``; ``record`` is refused, ``checkpoint`` still works (it adds no row).

    ``defer_seconds=S`` (off by default) lets routine rows (model turns and tool calls that passed)
    wait in the process and be written together in one commit once the oldest has waited ``S`` seconds (by the
    next ``record()``, or by a background thread once they have waited twice that); refusals, trips, approvals
    and checkpoints are written at once, after the rows waiting before them. Reads, ``flush()``, ``close()`` and
    interpreter exit write them too; a process killed without exiting loses them (docs/ledger.md).

    Safe to share across threads (one connection per thread) and processes (appends run under
    ``BEGIN IMMEDIATE``, so the chain never forks). Implements the breaker's ``LedgerSink`` protocol.
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str] = "ledger.db",
        *,
        hmac_key: bytes | None = None,
        checkpoint_every: int | None = None,
        signing_key: Any = None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        read_only: bool = False,
        defer_seconds: float | None = None,
    ) -> None:
        if defer_seconds is not None and (
            isinstance(defer_seconds, bool)
            or not isinstance(defer_seconds, (int, float))
            or not 0 <= defer_seconds <= _MAX_DEFER_SECONDS
        ):
            raise LedgerConfigError(
                f"defer_seconds must be None or a number of seconds from 0 to {_MAX_DEFER_SECONDS:,}, "
                f"got {defer_seconds!r}"
            )
        if defer_seconds and read_only:
            raise LedgerConfigError("defer_seconds needs a ledger it can write: leave it out with read_only=True")
        if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1
        ):
            raise LedgerConfigError(f"checkpoint_every must be a positive integer or None, got {checkpoint_every!r}")
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not 0 <= busy_timeout <= _MAX_BUSY_SECONDS
        ):
            raise LedgerConfigError(
                f"busy_timeout must be a finite number of seconds from 0 to {_MAX_BUSY_SECONDS:,}, got {busy_timeout!r}"
            )
        if not isinstance(synchronous, str):
            raise LedgerConfigError(
                f"synchronous must be one of 'OFF', 'NORMAL', 'FULL', 'EXTRA' (a str), got {synchronous!r}"
            )
        self._hash = InputHasher(hmac_key)
        self._signing_key = load_signing_key(signing_key) if signing_key is not None else None
        self._every = checkpoint_every
        self._backend = open_backend(
            path_or_url,
            input_hash_mode=None if read_only else self._hash.mode,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
        )
        self.read_only = read_only
        self.url: str = self._backend.url
        self.chain_id: str = self._backend.chain_id
        self._on_sealed = self._sealed if checkpoint_every is not None else None
        self._waiting: WaitingRows | None = None
        if defer_seconds:
            self._waiting = self._wait_rows(float(defer_seconds))

    def _wait_rows(self, seconds: float) -> WaitingRows:
        append_many: Callable[[Sequence[Sequence[Any]], OnSealed | None], int] | None = getattr(
            self._backend, "append_many", None
        )
        if append_many is None:
            self._backend.close()
            raise LedgerConfigError(
                f"defer_seconds writes waiting rows with the backend's append_many, and the backend of {self.url!r}"
                " has none: leave defer_seconds out"
            )
        on_sealed = self._on_sealed
        return WaitingRows(seconds, lambda rows: append_many(rows, on_sealed), self.url, self._stored)

    def _stored(self, values: Sequence[Any]) -> bool:
        """Whether a row holding exactly ``values`` is in the ledger (False when the backend cannot say)."""
        with self._backend.reader() as view:
            find = getattr(view, "find_row", None)
            return find is not None and find(values) is not None

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    @property
    def origin(self) -> str:
        """The checkpoint origin line that names this ledger's chain."""
        return origin_for(self.chain_id)

    # -- writing -----------------------------------------------------------------------------------
    def record(
        self,
        *,
        session_id: str,
        origin: str,
        turn: int,
        agent: str | None = None,
        tool: str | None = None,
        input_text: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        duration_ms: int = 0,
        passed: bool = True,
        breach_reason: str | None = None,
    ) -> int:
        """Append one row and return its ``seq`` (1 for the first row), or 0 while the row waits under
        ``defer_seconds`` (its seq is given when it is written). ``input_text`` is hashed, never stored."""
        # Fast path for well-typed calls (the breaker's); anything else gets the explaining validator.
        if not (
            type(turn) is int
            and type(input_tokens) is int
            and type(output_tokens) is int
            and type(duration_ms) is int
            and 0 <= turn <= _MAX_INT
            and 0 <= input_tokens <= _MAX_INT
            and 0 <= output_tokens <= _MAX_INT
            and 0 <= duration_ms <= _MAX_INT
            and origin in ORIGINS
            and type(session_id) is str
            and session_id
        ):
            validate_record(
                session_id,
                origin,
                turn,
                {"input_tokens": input_tokens, "output_tokens": output_tokens, "duration_ms": duration_ms},
            )
        if not isinstance(input_text, str):
            raise LedgerConfigError(f"input_text must be a str, got {type(input_text).__name__}")
        micros = 0 if cost_usd == 0 and type(cost_usd) in (float, int) else to_micros(cost_usd)
        if micros > _MAX_INT:
            raise LedgerConfigError(f"cost_usd {cost_usd!r} is more than a 64-bit count of micro-USD can hold")
        # label() inlined for the common case (ASCII text needs no change): this runs once per guarded call.
        values = (
            session_id if type(session_id) is str and session_id.isascii() else label(session_id),
            turn,
            origin,
            None if agent is None else agent if type(agent) is str and agent.isascii() else label(str(agent)),
            None if tool is None else tool if type(tool) is str and tool.isascii() else label(str(tool)),
            self._hash.digest(input_text),
            input_tokens,
            output_tokens,
            micros,
            duration_ms,
            1 if passed else 0,
            None if breach_reason is None else label(str(breach_reason)),
            utc_now(),
        )
        if self._waiting is not None:
            # Only a routine row waits; a refusal, a trip, an approval or a checkpoint is written at once
            # (with the rows waiting before it, in order).
            return self._waiting.add(values, not passed or origin not in _ROUTINE)
        return self._backend.append(values, self._on_sealed)

    def flush(self) -> None:
        """Write the rows waiting under ``defer_seconds`` now, in one transaction (a no-op without it)."""
        if self._waiting is not None:
            self._waiting.flush()

    def _reader(self) -> AbstractContextManager[ReadView]:
        self.flush()  # a read sees every row this ledger recorded
        return self._backend.reader()

    def hash_input(self, text: str) -> str:
        """The ``input_hash`` this ledger stores for ``text`` (to confirm a known input against a row)."""
        return self._hash(text)

    def _sealed(self, seq: int, head_hash: str) -> Checkpoint | None:
        if self._every is None or seq % self._every:
            return None
        return make_checkpoint(self.chain_id, seq, head_hash, self._signing_key)

    def checkpoint(self) -> Checkpoint:
        """Store and return a checkpoint of the current head (signed when the ledger has a signing key).

        Save ``checkpoint().note`` somewhere the ledger's writers cannot change (another host, a witness,
        a ticket) to make truncation and rewrites detectable later.
        """
        self.flush()
        return self._backend.checkpoint(
            lambda size, head: make_checkpoint(self.chain_id, size, head, self._signing_key)
        )

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints stored in the ledger, oldest first."""
        with self._reader() as view:
            return view.checkpoints()

    # -- reading -----------------------------------------------------------------------------------
    def rows(self, session_id: str | None = None) -> Iterator[LedgerRow]:
        """Stored rows (all, or one session's) in chain order, streamed."""
        with self._reader() as view:
            for t in view.rows(session_id):
                yield _row(t)

    def sessions(self) -> list[SessionSummary]:
        """One summary per session (first/last time, rows, tokens, cost, trips), in order of first row."""
        with self._reader() as view:
            return view.sessions()

    def export_jsonl(self, path_or_file: str | os.PathLike[str] | IO[str], session_id: str | None = None) -> int:
        """Write the stored rows as JSON Lines (one object of stored columns per row); return the count."""
        if isinstance(path_or_file, (str, os.PathLike)):
            with open(path_or_file, "w", encoding="utf-8") as fh:
                return self._export(fh, session_id)
        return self._export(path_or_file, session_id)

    def _export(self, fh: IO[str], session_id: str | None) -> int:
        n = 0
        for row in self.rows(session_id):
            fh.write(json.dumps(row.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
        return n

    # -- verification ------------------------------------------------------------------------------
    def verify(
        self,
        *,
        checkpoint: Checkpoint | str | bytes | None = None,
        public_key: Any = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VerifyResult:
        """Re-hash every row and check every link, streaming the table in constant memory.

        With ``checkpoint`` (a saved note or :class:`Checkpoint`), also check that the ledger still holds
        the signed head: this detects truncation and wholesale rewrites. ``public_key`` (PEM/raw file or
        bytes, or a key object) checks the note's signature; it defaults to this ledger's signing key.
        ``progress(done, total)`` is called while scanning.
        """
        cp = None
        if checkpoint is not None:
            if isinstance(checkpoint, (str, bytes)):
                cp = Checkpoint.parse(checkpoint)
            else:
                cp = _ensure_checkpoint(checkpoint)
        with self._reader() as view:
            head = view.head()
            total = head[0] if head else 0
            report = scan_chain(
                view.rows(),
                genesis_hash(self.chain_id),
                view.find_hashes,
                watch=() if cp is None else (cp.size,),
                progress=None if progress is None else (lambda done: progress(done, total)),
            )
        problems = list(report.problems)
        check = None
        if cp is not None:
            check, more = self._check_checkpoint(cp, public_key, report.head_seq, report.hash_at.get(cp.size))
            problems.extend(more)
        return VerifyResult(
            ok=not problems,
            rows_checked=report.rows,
            head_seq=report.head_seq,
            head_hash=report.head_hash,
            problems=tuple(problems),
            checkpoint=check,
        )

    def _check_checkpoint(
        self, cp: Checkpoint, public_key: Any, head_seq: int, stored: str | None
    ) -> tuple[CheckpointCheck, list[Problem]]:
        problems: list[Problem] = []
        key = public_key if public_key is not None else self._signing_key
        signature_checked = False
        if key is not None:
            if not cp.signed:
                problems.append(Problem("checkpoint", (), "the checkpoint is not signed, but a public key was given"))
            elif not cp.verify_signature(load_public_key(key)):
                problems.append(
                    Problem("checkpoint", (), "the checkpoint's signature does not verify with the given public key")
                )
            else:
                signature_checked = True
        if cp.origin != self.origin:
            problems.append(
                Problem(
                    "checkpoint",
                    (),
                    f"the checkpoint is for {cp.origin!r}, but this ledger is {self.origin!r}: "
                    "the ledger was replaced, or the checkpoint belongs to another ledger",
                )
            )
        elif cp.size > 0 and (head_seq < cp.size or stored is None):
            problems.append(
                Problem(
                    "truncated",
                    (cp.size,),
                    f"the checkpoint covers {cp.size} rows but the ledger ends at seq {head_seq}: "
                    "rows were removed from the end",
                )
            )
        elif cp.size > 0 and stored != cp.head_hash:
            problems.append(
                Problem(
                    "rewritten",
                    (cp.size,),
                    f"row {cp.size} does not match the checkpoint's head hash: "
                    f"the ledger up to row {cp.size} was rewritten",
                )
            )
        matches = not problems
        return CheckpointCheck(cp.origin, cp.size, cp.head_hash, signature_checked, matches), problems

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Write the rows waiting under ``defer_seconds``, then close every connection this ledger opened (in
        every thread). When they cannot be written the error is raised and nothing is closed: call again."""
        if self._waiting is not None:
            self._waiting.close()
        self._backend.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure_checkpoint(obj: object) -> Checkpoint:
    if isinstance(obj, Checkpoint):
        return obj
    raise CheckpointError(f"checkpoint must be a Checkpoint or its note text, got {type(obj).__name__}")


def _row(t: tuple[Any, ...]) -> LedgerRow:
    return LedgerRow(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], bool(t[11]), t[12], t[13], t[14], t[15]
    )
