"""The review surface: build, render, attest, and gate on attestation."""

from __future__ import annotations

import os
import shlex

from ..ledger import Ledger
from ..spec import SpecStore
from ._attest import Attestation, AttestationStore
from ._errors import AttestationRequired
from ._frame import ReviewFrame, build_frame
from ._render import DEFAULT_LEDGER, render

__all__ = ["ReviewSurface", "attest", "render_session", "require_attestation"]


class ReviewSurface:
    """Everything a reviewer does with a session: look at its frame, attest it, and gate on it.

    ``ReviewSurface("ledger.db")`` reads specs, ledger rows and attestations from one file (the ledger is
    opened read-only, so an HMAC ledger needs no key here).
    """

    def __init__(self, ledger: Ledger | str | os.PathLike[str] = "ledger.db", *, specs: SpecStore | None = None):
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger, read_only=True)
        self._owns_ledger = not isinstance(ledger, Ledger)
        self.specs = specs if specs is not None else SpecStore(self.ledger.url)
        self.store = AttestationStore(self.ledger.url)

    def frame(self, session_id: str) -> ReviewFrame:
        """The current five-element frame of ``session_id`` (raises ``SessionNotFound``)."""
        return build_frame(self.ledger, session_id, specs=self.specs)

    def render(self, session_id: str, format: str = "text") -> str:
        """The frame as ``text``, ``md`` or ``html``, with the session's attestations and their status.

        The attest command at the end names this ledger with ``--db`` (unless it is ``ledger.db``).
        """
        frame = self.frame(session_id)
        return render(frame, format, attestations=self.store.list(session_id), db=self.ledger.url)

    def attest(self, session_id: str, reviewer: str, notes: str = "", *, frame_hash: str | None = None) -> Attestation:
        """Record that ``reviewer`` compared the current frame with the spec and accepts it.

        Pass ``frame_hash`` (the hash printed on the frame the reviewer actually read) to refuse the
        attestation if the frame changed since: a row appended, a spec replaced, the ledger altered.
        """
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise ValueError("reviewer must name the person attesting (a non-empty string)")
        if not isinstance(notes, str):
            raise TypeError(f"notes must be a str, got {type(notes).__name__}")
        current = self.frame(session_id).frame_hash
        if frame_hash is not None and frame_hash != current:
            raise AttestationRequired(
                f"session {session_id!r} changed after the frame you reviewed (you saw {frame_hash[:16]}..., "
                f"it is now {current[:16]}...); review it again before attesting"
            )
        return self.store.add(session_id, reviewer.strip(), notes, current)

    def attestations(self, session_id: str) -> list[Attestation]:
        """Every attestation stored for the session, oldest first (including ones for older frames)."""
        return self.store.list(session_id)

    def require_attestation(self, session_id: str) -> Attestation:
        """Return the latest attestation of the session's *current* frame, or raise AttestationRequired."""
        current = self.frame(session_id).frame_hash
        matching = [a for a in self.store.list(session_id) if a.frame_hash == current]
        if matching:
            return matching[-1]
        stale = self.store.list(session_id)
        why = (
            f"its {len(stale)} attestation(s) are for an earlier frame: the session changed after review"
            if stale
            else "nobody has attested it"
        )
        where = "" if self.ledger.url == DEFAULT_LEDGER else f" --db {shlex.quote(self.ledger.url)}"
        sid = shlex.quote(session_id)
        raise AttestationRequired(
            f"session {session_id!r} needs a review: {why}. Review it with `loopguard review {sid}{where}` "
            f"and attest with `loopguard attest {sid}{where} --reviewer NAME`"
        )

    def close(self) -> None:
        if self._owns_ledger:
            self.ledger.close()

    def __enter__(self) -> ReviewSurface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_session(db: str | os.PathLike[str], session_id: str, *, format: str = "text") -> str:
    """Render ``session_id``'s frame from the ledger file ``db``."""
    with ReviewSurface(db) as surface:
        return surface.render(session_id, format)


def attest(
    session_id: str,
    reviewer: str,
    notes: str = "",
    *,
    db: str | os.PathLike[str] = "ledger.db",
    frame_hash: str | None = None,
) -> Attestation:
    """Attest ``session_id``'s current frame in the ledger file ``db``."""
    with ReviewSurface(db) as surface:
        return surface.attest(session_id, reviewer, notes, frame_hash=frame_hash)


def require_attestation(session_id: str, *, db: str | os.PathLike[str] = "ledger.db") -> Attestation:
    """Raise AttestationRequired unless the current frame of ``session_id`` in ``db`` has been attested."""
    with ReviewSurface(db) as surface:
        return surface.require_attestation(session_id)
