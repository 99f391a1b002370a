"""A live dashboard over the ledger, the approval queue and the budget store (extra ``dashboard``).

::

    from loopguard_core.dashboard import create_app

    app = create_app("runs.db", budgets="sqlite:///budgets.db", token=secret)   # an ASGI app (Starlette)
    # uvicorn.run(app, host="127.0.0.1", port=8765)   or: loopguard serve --db runs.db --budgets ...

Pages: runs in progress and recent with their spend against their limits and budgets; trips with the calls
that caused them; per-budget charts; the review frame of a session with its attestation status (attest from
the page); approval requests (approve, edit the arguments, reject). Every page is rendered on the server and
works without JavaScript; a small script refreshes the live parts over server-sent events (polling when
those are blocked). Changes need the start-up token and come only from the dashboard's own pages; read-only
mode allows none. See docs/operations.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._extras import require

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..approvals import ApprovalQueue
    from ..budgets import BudgetStore
    from ..ledger import Ledger

__all__ = ["create_app"]

_PURPOSE = "The loopguard dashboard"


def create_app(
    ledger: str | os.PathLike[str] | Ledger = "ledger.db",
    *,
    budgets: str | BudgetStore | None = None,
    approvals: str | os.PathLike[str] | ApprovalQueue | None = None,
    token: str | None = None,
    read_only: bool = False,
    previews: bool = False,
    live_seconds: float = 300.0,
    hmac_key: bytes | None = None,
    allowed_hosts: Sequence[str] | None = None,
    origins: Sequence[str] = (),
    poll_seconds: float = 1.0,
) -> Starlette:
    """The dashboard as an ASGI application.

    ``ledger``: a path, ``sqlite:///`` or ``postgresql://`` URL, or a ``Ledger`` (read through a read-only
    connection; decisions are written with ``hmac_key`` when the ledger has one). ``budgets``: a budget store
    URL or store. ``approvals``: the queue when it is not in the ledger's database. ``token`` (at least 16
    characters) is required unless ``read_only``. ``previews`` shows the argument previews that tool policies
    allow on approval requests (hidden otherwise). A run is *in progress* while its last row is younger than
    ``live_seconds``. ``allowed_hosts``: the ``Host`` names the app answers to (default: loopback names;
    ``["*"]`` for any); ``origins``: more origins whose pages may post (a reverse proxy's public origin when it
    rewrites ``Host``). ``poll_seconds``: how often live pages look for changes.
    """
    for module in ("starlette", "jinja2", "anyio"):
        require(module, extra="dashboard", purpose=_PURPOSE)
    from ..ledger import Ledger
    from ._app import Settings, build_app
    from ._data import DashboardData, open_budgets, open_queue
    from ._security import Auth

    if isinstance(live_seconds, bool) or not isinstance(live_seconds, (int, float)) or live_seconds <= 0:
        raise ValueError(f"live_seconds must be a positive number of seconds, got {live_seconds!r}")
    if isinstance(poll_seconds, bool) or not isinstance(poll_seconds, (int, float)) or not 0 < poll_seconds <= 60:
        raise ValueError(f"poll_seconds must be between 0 and 60 seconds, got {poll_seconds!r}")
    auth = Auth(token, read_only=read_only, allowed_hosts=allowed_hosts, origins=origins)
    if isinstance(ledger, Ledger):
        reader, writer = ledger, (None if ledger.read_only else ledger)
    else:
        reader, writer = Ledger(ledger, read_only=True), None
    queue, problem = open_queue(reader, approvals)
    data = DashboardData(
        reader,
        approvals=queue,
        approvals_problem=problem,
        budgets=open_budgets(budgets),
        live_seconds=live_seconds,
        hmac_key=hmac_key,
        writer=writer,
    )
    return build_app(data, auth, Settings(previews=previews, poll_seconds=float(poll_seconds)))
