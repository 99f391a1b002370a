"""``loopguard serve``: the live dashboard over the ledger, the approval queue and the budgets (extra ``dashboard``)."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from ._ledger import fail, ledger_location, resolve_ledger

__all__ = ["register"]

TOKEN_ENV = "LOOPGUARD_DASHBOARD_TOKEN"
_KEY_ENV = "LOOPGUARD_HMAC_KEY"
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket bound before the server starts, so ``--port 0`` can print the port it got."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        fail(f"cannot bind to host {host!r}: {exc.strerror}")
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror} (is another server using the port? try --port 0)")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _redacted(url: str) -> str:
    """A location as printed (and kept in a service's log): without a password."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(q for q in parts.query.split("&") if q and not q.lower().startswith("password="))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _url(host: str, port: int) -> str:
    shown = socket.gethostname() if host in _ANY_ADDRESS else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def register(group: Any) -> None:
    @group.command("serve")
    @ledger_location
    @click.option(
        "--budgets",
        "budgets_url",
        default=None,
        metavar="URL",
        help="The budget store (sqlite:///PATH or redis://...). Default: $LOOPGUARD_BUDGETS; none: no budgets page.",
    )
    @click.option(
        "--queue",
        default=None,
        metavar="URL",
        help="The approval queue when it is not in the ledger's database (sqlite:///PATH or postgresql://...).",
    )
    @click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
    @click.option("--port", type=click.IntRange(0, 65_535), default=8765, show_default=True, help="0: any free port.")
    @click.option(
        "--token",
        default=None,
        help="The secret that allows changes (approve, reject, attest), at least 16 characters. "
        f"Default: ${TOKEN_ENV}, else a new one, printed at start-up.",
    )
    @click.option("--read-only", is_flag=True, help="Allow no change at all (no approve, reject or attest).")
    @click.option(
        "--previews", is_flag=True, help="Show the argument previews tool policies allow on approval requests."
    )
    @click.option(
        "--live-seconds",
        type=click.FloatRange(min=1),
        default=300.0,
        show_default=True,
        help="A run is in progress while its last ledger row is younger than this.",
    )
    @click.option(
        "--allowed-host",
        "allowed_hosts",
        multiple=True,
        metavar="NAME",
        help="A Host name the dashboard answers to (repeatable; e.g. the name a reverse proxy forwards).",
    )
    @click.option(
        "--origin",
        "origins",
        multiple=True,
        metavar="URL",
        help="Another origin whose pages may post changes (a proxy's public https://NAME when it rewrites Host).",
    )
    def serve(
        path: str | None,
        db: str | None,
        budgets_url: str | None,
        queue: str | None,
        host: str,
        port: int,
        token: str | None,
        read_only: bool,
        previews: bool,
        live_seconds: float,
        allowed_hosts: tuple[str, ...],
        origins: tuple[str, ...],
    ) -> None:
        """Serve the live dashboard: runs, trips, budgets, review frames and approval requests.

        Binds 127.0.0.1 by default. Changes need the token; --read-only allows none."""
        from .._extras import require
        from ..dashboard._security import LOOPBACK_HOSTS, MIN_TOKEN, is_loopback
        from ..errors import LoopGuardError, MissingExtra

        try:
            uvicorn = require("uvicorn", extra="dashboard", purpose="loopguard serve")
            from ..dashboard import create_app

        except MissingExtra as exc:
            fail(str(exc))
        ledger = resolve_ledger(path, db)
        if "://" not in ledger and not os.path.exists(ledger):
            fail(f"no ledger at {ledger!r}: give it as PATH or --db (the dashboard never creates one)")
        budgets = budgets_url or os.environ.get("LOOPGUARD_BUDGETS") or None
        loopback = is_loopback(host)
        token = token or os.environ.get(TOKEN_ENV) or None
        generated = False
        if not loopback:
            click.echo(
                f"loopguard: WARNING: listening on {host}, not loopback: anyone who reaches it can read the runs, "
                "trips, budgets and review frames. Prefer 127.0.0.1 behind a reverse proxy with authentication "
                "(docs/operations.md).",
                err=True,
            )
            if not read_only and token is None:
                fail(f"a dashboard reachable from other hosts needs an explicit token: give --token or ${TOKEN_ENV}")
        if read_only:
            token = None
        elif token is None:
            token, generated = secrets.token_urlsafe(24), True
        elif len(token) < MIN_TOKEN:
            fail(f"the token must be at least {MIN_TOKEN} characters")
        hosts: list[str] | None = None
        if allowed_hosts:
            hosts = [*LOOPBACK_HOSTS, *allowed_hosts]
        elif host in _ANY_ADDRESS:
            hosts = ["*"]
            click.echo(
                "loopguard: WARNING: listening on every address with no --allowed-host: any Host name is answered "
                "(give --allowed-host NAME to refuse the others)",
                err=True,
            )
        elif not loopback:
            hosts = [*LOOPBACK_HOSTS, host]
        key = os.environ.get(_KEY_ENV)
        try:
            hmac_key = bytes.fromhex(key) if key else None
        except ValueError:
            fail(f"${_KEY_ENV} must be the ledger's HMAC key in hex")
        try:
            app = create_app(
                ledger,
                budgets=budgets,
                approvals=queue,
                token=token,
                read_only=read_only,
                previews=previews,
                live_seconds=live_seconds,
                hmac_key=hmac_key,
                allowed_hosts=hosts,
                origins=origins,
            )
        except (LoopGuardError, OSError, ValueError, TypeError) as exc:
            fail(str(exc))
        sock = _bind(host, port)
        url = _url(host, sock.getsockname()[1])
        mode = "read-only" if read_only else ("previews shown" if previews else "previews hidden")
        click.echo(
            f"loopguard dashboard on {url} ({mode}); ledger {_redacted(ledger)}"
            + (f"; budgets {_redacted(budgets)}" if budgets else "")
        )
        if generated:
            click.echo(f"token (log in at {url}login to approve, reject or attest): {token}")
        elif not read_only:
            click.echo(f"log in at {url}login with the token you gave to approve, reject or attest")
        click.echo("press Ctrl+C to stop", err=True)
        config = uvicorn.Config(
            app,
            log_level="warning",
            timeout_graceful_shutdown=3,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
        )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            sock.close()
