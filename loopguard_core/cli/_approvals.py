"""``loopguard approvals list|show|approve|reject``: decide on gated tool calls from any process or host."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from typing import Any

import click

from ._ledger import DB_HELP, EXIT_USAGE, console, fail, resolve_ledger

__all__ = ["register"]

_QUEUE_HELP = "The approval queue when it is not in the ledger's database (sqlite:///PATH or postgresql://...)."
_KEY_ENV = "LOOPGUARD_HMAC_KEY"


def _queue(db: str | None, queue: str | None) -> Any:
    from ..approvals import approval_queue
    from ..errors import MissingExtra, StoreError

    target = queue or resolve_ledger(None, db)
    if "://" not in target and not os.path.exists(target):
        fail(f"no approval queue at {target!r}: give the ledger with --db PATH (or the queue with --queue URL)")
    try:
        return approval_queue(target)
    except (StoreError, MissingExtra, ValueError) as exc:
        fail(str(exc))


def _ledger_for_decisions(db: str | None, queue: str | None) -> Any:
    """The ledger that gets the decision's row: the one named by --db (or the default when it exists)."""
    from ..errors import MissingExtra
    from ..ledger import Ledger, LedgerError

    target = resolve_ledger(None, db)
    if queue is not None and db is None and not os.path.exists(target):
        click.echo("loopguard: no ledger given (--db): the decision is not written to a ledger", err=True)
        return None
    key = os.environ.get(_KEY_ENV)
    try:
        return Ledger(target, hmac_key=bytes.fromhex(key) if key else None)
    except ValueError:
        fail(f"${_KEY_ENV} must be the ledger's HMAC key in hex")
    except (LedgerError, MissingExtra) as exc:
        hint = f" (set ${_KEY_ENV} to its key in hex)" if "hmac" in str(exc).lower() else ""
        fail(f"cannot write the decision to the ledger {target}: {exc}{hint}")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _get(q: Any, request_id: str) -> Any:
    request = q.get(request_id)
    if request is not None:
        return request
    matches = [r for r in q.list(limit=10_000) if r.id.startswith(request_id)] if request_id else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        fail(f"request prefix {request_id!r} is ambiguous ({len(matches)} requests): give more of the id")
    return fail(f"no approval request {request_id!r}; `loopguard approvals list` shows them")


def _location(f: Any) -> Any:
    f = click.option("--queue", "queue", default=None, metavar="URL", help=_QUEUE_HELP)(f)
    return click.option("--db", "db", default=None, metavar="PATH", help=DB_HELP)(f)


def _decide(db: str | None, queue: str | None, request_id: str, **decision: Any) -> None:
    from ..approvals._gate import record_decision
    from ..errors import ApprovalError, StoreError

    q = _queue(db, queue)
    ledger = _ledger_for_decisions(db, queue)
    request = _get(q, request_id)
    try:
        decided = q.decide(request.id, **decision)
    except (ApprovalError, StoreError) as exc:
        fail(str(exc))
    try:
        record_decision(ledger, decided)
    finally:
        if ledger is not None:
            ledger.close()
    verb = "approved" if decided.status == "approved" else "rejected"
    click.echo(f"{verb} {decided.id} ({decided.tool}) as {decided.decided_by}; the run goes on when it asks again")


def register(group: Any) -> None:
    @group.group("approvals")
    def approvals() -> None:
        """Gated tool calls waiting for a person: list, show, approve (optionally with edited arguments), reject."""

    @approvals.command("list")
    @_location
    @click.option(
        "--status",
        type=click.Choice(["pending", "approved", "rejected", "used", "expired", "all"]),
        default="pending",
        show_default=True,
    )
    @click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per request.")
    def list_(db: str | None, queue: str | None, status: str, limit: int, as_json: bool) -> None:
        """Requests, newest first (pending ones by default)."""
        q = _queue(db, queue)
        items = q.list(None if status == "all" else status, limit)
        if as_json:
            for r in items:
                click.echo(json.dumps({**r.to_dict(), "edited_args": None}, sort_keys=True))
            return
        from rich.table import Table

        table = Table(title=f"{q.url}: {len(items)} {status} request(s)", title_justify="left")
        for name in ("id", "asked (UTC)", "tool", "agent", "session", "spend USD", "status", "preview"):
            table.add_column(name, overflow="fold")
        now = q.wall_clock()
        for r in items:
            table.add_row(
                r.id[:12],
                _when(r.created_at),
                r.tool,
                r.agent or "-",
                r.session_id[:12],
                f"{float(r.spend.get('cost_usd', 0.0)):.4f}",
                r.effective_status(now),
                (r.preview or "")[:60],
            )
        console().print(table)

    @approvals.command("show")
    @_location
    @click.argument("request_id")
    def show(db: str | None, queue: str | None, request_id: str) -> None:
        """Everything a person needs to decide on one request (its id or an unambiguous prefix)."""
        q = _queue(db, queue)
        r = _get(q, request_id)
        lines = [
            ("request", r.id),
            ("status", r.effective_status(q.wall_clock())),
            ("tool", r.tool),
            ("agent", r.agent or "-"),
            ("run (session)", r.session_id),
            ("scope", r.scope),
            ("asked at (UTC)", _when(r.created_at)),
            ("expires at (UTC)", _when(r.expires_at)),
            ("arguments digest", r.args_digest),
            ("preview", r.preview if r.preview is not None else "(none: the tool's policy shows no arguments)"),
            ("spend so far", ", ".join(f"{k} {v}" for k, v in sorted(r.spend.items())) or "-"),
            ("decided by", r.decided_by or "-"),
            ("decided at (UTC)", _when(r.decided_at)),
            ("reason", r.reason or "-"),
        ]
        width = max(len(k) for k, _ in lines)
        for key, value in lines:
            click.echo(f"{key.ljust(width)}  {value}")

    by_option = click.option(
        "--by", default=None, metavar="NAME", help="Who decides (default: the OS user). Written to the ledger."
    )

    @approvals.command("approve")
    @_location
    @click.argument("request_id")
    @by_option
    @click.option("--args", "args_json", default=None, metavar="JSON", help="Run with these arguments instead.")
    @click.option("--note", default=None, help="A note kept with the decision.")
    def approve(
        db: str | None, queue: str | None, request_id: str, by: str | None, args_json: str | None, note: str | None
    ) -> None:
        """Let the call run (with edited arguments when --args is given)."""
        args = None
        if args_json is not None:
            try:
                args = json.loads(args_json)
            except json.JSONDecodeError as exc:
                fail(f"--args must be JSON (the tool's arguments): {exc}", EXIT_USAGE)
        _decide(db, queue, request_id, approve=True, by=by or getpass.getuser(), reason=note, args=args)

    @approvals.command("reject")
    @_location
    @click.argument("request_id")
    @by_option
    @click.option("--reason", required=True, help="Why: the model is told, so it can do something else.")
    def reject(db: str | None, queue: str | None, request_id: str, by: str | None, reason: str) -> None:
        """Refuse the call; the model is told the reason."""
        _decide(db, queue, request_id, approve=False, by=by or getpass.getuser(), reason=reason)
