"""``loopguard review SESSION`` and ``loopguard attest SESSION --reviewer NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._ledger import EXIT_PROBLEMS, fail, ledger_location, resolve_ledger, resolve_session

__all__ = ["register"]

_SESSION_ARG = "SESSION"


def _surface(db: str) -> Any:
    from ..errors import MissingExtra
    from ..ledger import LedgerError
    from ..review import ReviewSurface

    try:
        return ReviewSurface(db)
    except (LedgerError, MissingExtra) as exc:
        fail(str(exc))


def register(group: Any) -> None:
    @group.command("review")
    @click.argument("session_id", metavar=_SESSION_ARG)
    @ledger_location
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "md", "html"]),
        default="text",
        show_default=True,
        help="text for a terminal, md for a ticket or PR, html for a self-contained page with a chart.",
    )
    @click.option(
        "-o",
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write to this file instead of stdout.",
    )
    @click.option(
        "--require-attestation", is_flag=True, help="Exit 1 unless the current frame has been attested (for CI gates)."
    )
    def review(
        session_id: str, path: str | None, db: str | None, fmt: str, out: Path | None, require_attestation: bool
    ) -> None:
        """Show SESSION's review frame (promise, criteria, diff, evidence, assumptions) and who attested it.

        SESSION is the session id, or an unambiguous prefix of it."""
        from ..review import AttestationRequired, SessionNotFound

        with _surface(resolve_ledger(path, db)) as surface:
            session_id = resolve_session(surface.ledger, session_id, must_exist=False)
            try:
                text = surface.render(session_id, fmt)
            except SessionNotFound as exc:
                fail(str(exc))
            if out is None:
                click.echo(text, nl=False)
            else:
                try:
                    out.write_text(text, encoding="utf-8")
                except OSError as exc:
                    fail(f"cannot write {str(out)!r}: {exc.strerror}")
                click.echo(f"review frame of {session_id} written to {out}", err=True)
            if require_attestation:
                try:
                    a = surface.require_attestation(session_id)
                except AttestationRequired as exc:
                    fail(str(exc), EXIT_PROBLEMS)
                click.echo(f"attested by {a.reviewer} at {a.attested_at}", err=True)

    @group.command("attest")
    @click.argument("session_id", metavar=_SESSION_ARG)
    @ledger_location
    @click.option("--reviewer", required=True, help="Who compared the result with the spec (name or email).")
    @click.option("--notes", default="", help="What was checked, and anything accepted despite the frame.")
    @click.option(
        "--frame-hash",
        default=None,
        help="The hash printed on the frame you reviewed; refuses if the session changed since.",
    )
    def attest(
        session_id: str, path: str | None, db: str | None, reviewer: str, notes: str, frame_hash: str | None
    ) -> None:
        """Record that REVIEWER compared SESSION's current frame with its spec and accepts the result.

        SESSION is the session id, or an unambiguous prefix of it."""
        from ..review import AttestationRequired, SessionNotFound

        with _surface(resolve_ledger(path, db)) as surface:
            session_id = resolve_session(surface.ledger, session_id, must_exist=False)
            try:
                a = surface.attest(session_id, reviewer, notes, frame_hash=frame_hash)
            except SessionNotFound as exc:
                fail(str(exc))
            except AttestationRequired as exc:
                fail(str(exc), EXIT_PROBLEMS)
            except ValueError as exc:
                fail(str(exc))
        click.echo(f"attested {session_id} by {a.reviewer} at {a.attested_at}\nframe hash {a.frame_hash}")
