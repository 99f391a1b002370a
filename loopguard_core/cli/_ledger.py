"""``loopguard ledger show|verify|export|checkpoint|keygen`` and ``loopguard sessions``."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = [
    "DEFAULT_DB",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "console",
    "fail",
    "ledger_location",
    "register",
    "resolve_ledger",
    "resolve_session",
]

#: Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command worked and found something wrong (verify problems, attestation missing)
EXIT_USAGE = 2  # bad arguments, missing file, unreadable database


def console(*, stderr: bool = False) -> Any:
    """A rich console; wide when not a terminal so piped tables are not truncated."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 200, stderr=stderr)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``loopguard: message`` to stderr and exit with ``code``."""
    click.echo(f"loopguard: {message}", err=True)
    raise SystemExit(code)


#: The ledger every command reads when neither PATH, --db nor $LOOPGUARD_DB names one.
DEFAULT_DB = "ledger.db"
#: Where ``loopguard demo`` writes (see loopguard_core.demo.DEFAULT_DB); named when the default ledger is missing.
_DEMO_DB = "loopguard-demo.db"
#: The one help text of the ledger location, shared by every command that reads a ledger.
DB_HELP = (
    "The ledger: a file, sqlite:///PATH or postgresql:// URL, given as PATH or --db (not both). "
    f"Default: $LOOPGUARD_DB, else {DEFAULT_DB}."
)
# Show a progress bar when verifying at least this many rows on a terminal.
_PROGRESS_MIN_ROWS = 20_000


def ledger_location(f: Any) -> Any:
    """Add the ledger location to a command: an optional positional ``[PATH]`` and ``--db PATH``.

    Both mean the same; the command receives ``path`` and ``db`` and calls :func:`resolve_ledger`.
    Commands whose first argument is something else (``review SESSION [PATH]``) put it before this.
    """
    f = click.option("--db", "db", default=None, metavar="PATH", help=DB_HELP)(f)
    return click.argument("path", required=False, default=None, metavar="[PATH]")(f)


def resolve_ledger(path: str | None, db: str | None) -> str:
    """The ledger a command reads: PATH or --db (refused when both name different ledgers), else the default."""
    if path is not None and db is not None and path != db:
        fail(f"two ledgers given ({path!r} as PATH and {db!r} as --db): give one of them")
    chosen = path if path is not None else db
    if chosen is not None:
        if not chosen:
            fail("the ledger path is empty: give a file or URL")
        return chosen
    return os.environ.get("LOOPGUARD_DB") or DEFAULT_DB


def _open(path: str) -> Any:
    from ..errors import MissingExtra
    from ..ledger import Ledger, LedgerError

    try:
        return Ledger(path, read_only=True)
    except (LedgerError, MissingExtra) as exc:  # e.g. a postgresql:// URL without the postgres extra
        hint = ""
        if path == DEFAULT_DB and not Path(path).exists() and Path(_DEMO_DB).is_file():
            hint = f" (the demo's ledger is {_DEMO_DB} here: add --db {_DEMO_DB})"
        fail(f"{exc}{hint}")


def _db_flag(url: str) -> str:
    return "" if url == DEFAULT_DB else f" --db {shlex.quote(url)}"


def resolve_session(ledger: Any, session_id: str, *, must_exist: bool = True) -> str:
    """The full session id for ``session_id``: itself, or the one session it is a prefix of (as git does).

    An ambiguous prefix lists the candidates and exits 2. A session in no row exits 2 when ``must_exist``
    and is returned unchanged otherwise (so the command can say what is missing).
    """
    if not session_id:
        fail("the session id is empty: give a session id or an unambiguous prefix of one")
    ids: list[str] = [s.session_id for s in ledger.sessions()]
    if session_id in ids:
        return session_id
    matches = [i for i in ids if i.startswith(session_id)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = "\n".join(f"  {m}" for m in matches[:20])
        more = f"\n  ... and {len(matches) - 20} more" if len(matches) > 20 else ""
        fail(
            f"session prefix {session_id!r} is ambiguous: it starts {len(matches)} sessions in {ledger.url}:\n"
            f"{shown}{more}\ngive more of the id"
        )
    if must_exist:
        fail(
            f"no session {session_id!r} (nor any starting with it) in {ledger.url}; "
            f"list the sessions with `loopguard sessions{_db_flag(ledger.url)}`"
        )
    return session_id


def _out_option(f: Any) -> Any:
    out = click.Path(dir_okay=False, allow_dash=True)
    return click.option("-o", "--out", type=out, default="-", help="File (default: stdout).")(f)


_SESSION_HELP = "Only this session's rows (its id, or an unambiguous prefix of it)."


def register(group: Any) -> None:
    @group.group("ledger")
    def ledger_group() -> None:
        """Inspect, verify, export and checkpoint a loopguard ledger."""

    @ledger_group.command("show")
    @ledger_location
    @click.option("--session", "session_id", default=None, help=_SESSION_HELP)
    @click.option("--last", "last", type=click.IntRange(min=1), default=None, help="Only the last N rows.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of a table.")
    def show(path: str | None, db: str | None, session_id: str | None, last: int | None, as_json: bool) -> None:
        """Show ledger rows (inputs appear only as hashes; the ledger never stores them)."""
        ledger = _open(resolve_ledger(path, db))
        if session_id is not None:
            session_id = resolve_session(ledger, session_id)
        rows = list(ledger.rows(session_id))
        if last is not None:
            rows = rows[-last:]
        if as_json:
            for row in rows:
                click.echo(json.dumps(row.to_dict(), ensure_ascii=False))
            return
        from rich.table import Table

        table = Table(title=f"{ledger.url}: {len(rows)} row(s)", title_justify="left")
        for name, justify in (
            ("seq", "right"),
            ("time (UTC)", "left"),
            ("session", "left"),
            ("turn", "right"),
            ("origin", "left"),
            ("agent", "left"),
            ("tool", "left"),
            ("tokens", "right"),
            ("cost USD", "right"),
            ("ms", "right"),
            ("ok", "left"),
            ("reason", "left"),
            ("input hash", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for r in rows:
            style = "red" if r.is_trip else ("yellow" if not r.passed else None)
            table.add_row(
                str(r.seq),
                r.created_at[:23].replace("T", " "),
                r.session_id,
                str(r.turn),
                r.origin,
                r.agent or "",
                r.tool or "",
                f"{r.tokens:,}",
                f"{r.cost_usd:.6f}",
                str(r.duration_ms),
                "yes" if r.passed else "NO",
                r.breach_reason or "",
                r.input_hash[:12],
                style=style,
            )
        console().print(table)

    @ledger_group.command("verify")
    @ledger_location
    @click.option(
        "--checkpoint",
        "checkpoint_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="A saved checkpoint note: also detect truncation and rewrites.",
    )
    @click.option(
        "--public-key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Ed25519 public key (PEM or raw) that must have signed the checkpoint.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="Print nothing; rely on the exit code.")
    def verify(
        path: str | None,
        db: str | None,
        checkpoint_file: Path | None,
        public_key: Path | None,
        as_json: bool,
        quiet: bool,
    ) -> None:
        """Re-hash every row and check every link. Exit 0: intact; 1: problems found; 2: could not check."""
        from ..ledger import CheckpointError, LedgerError

        ledger = _open(resolve_ledger(path, db))
        note = checkpoint_file.read_text(encoding="utf-8") if checkpoint_file else None
        err = console(stderr=True)
        try:
            if not quiet and not as_json and err.is_terminal:
                result = _verify_with_progress(ledger, note, public_key, err)
            else:
                result = ledger.verify(checkpoint=note, public_key=public_key)
        except (CheckpointError, LedgerError, ValueError) as exc:
            fail(str(exc))
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "ok": result.ok,
                        "ledger": ledger.url,
                        "rows_checked": result.rows_checked,
                        "head_seq": result.head_seq,
                        "head_hash": result.head_hash,
                        "problems": [
                            {"kind": p.kind, "seqs": list(p.seqs), "message": p.message} for p in result.problems
                        ],
                        "checkpoint": None
                        if result.checkpoint is None
                        else {
                            "size": result.checkpoint.size,
                            "matches": result.checkpoint.matches,
                            "signature_checked": result.checkpoint.signature_checked,
                        },
                    }
                )
            )
        elif not quiet:
            out = console()
            if result.ok:
                extra = ""
                if result.checkpoint is not None:
                    signed = "signed " if result.checkpoint.signature_checked else "unsigned "
                    extra = f"; matches the {signed}checkpoint at row {result.checkpoint.size}"
                out.print(
                    f"[green]OK[/green] {ledger.url}: {result.rows_checked} rows, every hash and link checked{extra}",
                    highlight=False,
                )
            else:
                out.print(
                    f"[red]TAMPERED[/red] {ledger.url}: {len(result.problems)} problem(s) in "
                    f"{result.rows_checked} rows",
                    highlight=False,
                )
                for p in result.problems:
                    out.print(f"  [bold]{p.kind}[/bold]: {p.message}", highlight=False)
        raise SystemExit(EXIT_OK if result.ok else EXIT_PROBLEMS)

    @ledger_group.command("export")
    @ledger_location
    @click.option("--session", "session_id", default=None, help=_SESSION_HELP)
    @_out_option
    def export(path: str | None, db: str | None, session_id: str | None, out: str) -> None:
        """Export rows as JSON Lines (the stored columns, enough to re-verify the chain elsewhere)."""
        ledger = _open(resolve_ledger(path, db))
        if session_id is not None:
            session_id = resolve_session(ledger, session_id)
        if out == "-":
            n = ledger.export_jsonl(sys.stdout, session_id=session_id)
        else:
            try:
                n = ledger.export_jsonl(out, session_id=session_id)
            except OSError as exc:
                fail(f"cannot write {out!r}: {exc.strerror}")
            click.echo(f"wrote {n} row(s) to {out}", err=True)

    @ledger_group.command("checkpoint")
    @ledger_location
    @click.option(
        "--key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Ed25519 private key (PEM or raw) to sign with (extra: signing).",
    )
    @_out_option
    def checkpoint(path: str | None, db: str | None, key: Path | None, out: str) -> None:
        """Store a checkpoint of the current head and print its note; keep the note outside the ledger's reach."""
        from ..errors import MissingExtra
        from ..ledger import Ledger, LedgerError

        try:
            # read_only: never creates a ledger and needs no hmac key; checkpoints add no row.
            cp = Ledger(resolve_ledger(path, db), read_only=True, signing_key=key).checkpoint()
        except (LedgerError, MissingExtra, ValueError) as exc:
            fail(str(exc))
        if out == "-":
            click.echo(cp.note, nl=False)
        else:
            Path(out).write_text(cp.note, encoding="utf-8")
            click.echo(f"checkpoint of {cp.size} row(s) written to {out}", err=True)

    @ledger_group.command("keygen")
    @click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
    def keygen(key_file: Path) -> None:
        """Create an Ed25519 signing key (KEY_FILE, mode 0600) and its public key (KEY_FILE.pub)."""
        from ..errors import MissingExtra
        from ..ledger import generate_signing_key

        if key_file.exists():
            fail(f"{key_file} already exists; refusing to overwrite a key")
        try:
            generate_signing_key(key_file)
        except MissingExtra as exc:
            fail(str(exc))
        click.echo(f"private key: {key_file} (keep it away from the ledger's host)\npublic key:  {key_file}.pub")

    @group.command("sessions")
    @ledger_location
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per session instead of a table.")
    def sessions(path: str | None, db: str | None, as_json: bool) -> None:
        """List the sessions in a ledger: time span, rows, tokens, cost and trips."""
        ledger = _open(resolve_ledger(path, db))
        items = ledger.sessions()
        if as_json:
            for s in items:
                click.echo(
                    json.dumps(
                        {
                            "session_id": s.session_id,
                            "first_at": s.first_at,
                            "last_at": s.last_at,
                            "rows": s.rows,
                            "tokens": s.tokens,
                            "cost_usd": s.cost_usd,
                            "trips": s.trips,
                        }
                    )
                )
            return
        from rich.table import Table

        table = Table(title=f"{ledger.url}: {len(items)} session(s)", title_justify="left")
        for name, justify in (
            ("session", "left"),
            ("first (UTC)", "left"),
            ("last (UTC)", "left"),
            ("rows", "right"),
            ("tokens", "right"),
            ("cost USD", "right"),
            ("trips", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for s in items:
            table.add_row(
                s.session_id,
                s.first_at[:19].replace("T", " "),
                s.last_at[:19].replace("T", " "),
                str(s.rows),
                f"{s.tokens:,}",
                f"{s.cost_usd:.6f}",
                str(s.trips),
                style="red" if s.trips else None,
            )
        console().print(table)


def _verify_with_progress(ledger: Any, note: str | None, public_key: Path | None, err: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("verify", total=None)

        def tick(done: int, total: int) -> None:
            if total >= _PROGRESS_MIN_ROWS:
                progress.update(task, completed=done, total=total)

        return ledger.verify(checkpoint=note, public_key=public_key, progress=tick)
