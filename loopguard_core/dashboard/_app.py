"""The dashboard's Starlette application: server-rendered pages, POST-only changes, live updates over SSE."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import anyio
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..approvals import STATUSES
from ..errors import LoopGuardError
from ._data import DashboardData, DecisionError, parse_time, shown_location, usd
from ._security import Auth

__all__ = ["Settings", "build_app"]

SESSION_COOKIE = "loopguard_session"
NAME_COOKIE = "loopguard_name"
#: Rows of a run shown on its page (the newest ones).
RUN_ROWS = 300

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
_HEADERS = (
    ("content-security-policy", _CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
)
_STATIC = {"dashboard.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}


@dataclass
class Settings:
    """What the pages need besides the data: previews on or off, and the live-update pace."""

    previews: bool = False
    poll_seconds: float = 1.0
    #: an event stream ends after this long (the browser reconnects): no connection lives forever
    stream_seconds: float = 300.0
    heartbeat_seconds: float = 15.0
    max_form_bytes: int = 256 * 1024


class _Guard:
    """Refuses requests for a host the dashboard does not answer to and adds the security headers."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if not self.auth.host_allowed(host):
            refused = PlainTextResponse(
                f"unknown host {host!r}: this dashboard answers to {', '.join(sorted(self.auth.hosts))} "
                "(start it with --allowed-host NAME for another name)",
                status_code=400,
            )
            await refused(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _when(text: str | None) -> str:
    when = parse_time(text)
    return "-" if when is None else when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _epoch(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ago_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86_400:.1f} d ago"


def _ago(text: str | None) -> str:
    when = parse_time(text)
    return "" if when is None else _ago_seconds(time.time() - when.timestamp())


def _q(value: str) -> str:
    return quote(value, safe="")


def _local_path(value: str | None) -> str:
    """A redirect target inside this dashboard (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("loopguard_core.dashboard", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=usd,
        num=lambda v: f"{v:,}",
        when=_when,
        ago=_ago,
        epoch=_epoch,
        short=lambda v: (v or "")[:12],
        q=_q,
    )
    env.globals.update(
        run_url=lambda sid: f"/run?session={_q(sid)}",
        review_url=lambda sid: f"/run/review?session={_q(sid)}",
        approval_url=lambda rid: f"/approvals/{_q(rid)}",
    )
    return env


class _Pages:
    def __init__(self, data: DashboardData, auth: Auth, settings: Settings) -> None:
        self.data = data
        self.auth = auth
        self.settings = settings
        self.env = _environment()
        package = importlib.resources.files("loopguard_core.dashboard")
        self.static = {name: (package / "static" / name).read_bytes() for name in _STATIC}

    # -- helpers --------------------------------------------------------------------------------------
    def session(self, request: Request) -> str | None:
        value = request.cookies.get(SESSION_COOKIE)
        return value if self.auth.session_ok(value) else None

    def page(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        session = self.session(request)
        try:
            pending = len(self.data.pending())
        except Exception:  # the queue is down: the page still renders, the count says so
            pending = -1
        try:
            version = self.data.version()
        except Exception:  # a storage hiccup: the next change refreshes the page
            version = ""
        base = {
            "request_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "read_only": self.auth.read_only,
            "logged_in": session is not None,
            "csrf": self.auth.csrf(session) if session is not None else "",
            "previews": self.settings.previews,
            "nav_pending": pending,
            "version": version,
            "poll_ms": int(self.settings.poll_seconds * 1000),
            "ledger_url": shown_location(self.data.ledger.url),
            "name": unquote(request.cookies.get(NAME_COOKIE, ""))[:200],
            "live_seconds": self.data.live_seconds,
            "error": None,
            "notice": None,
        }
        base.update(context)
        html = self.env.get_template(template).render(**base)
        return HTMLResponse(html, status_code=code)

    async def form(self, request: Request) -> dict[str, str]:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.settings.max_form_bytes:
                raise HTTPException(413, "the form is too large")
        if not body:
            return {}
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def refuse(self, request: Request, form: dict[str, str]) -> HTMLResponse | None:
        why = self.auth.refuse_change(
            scheme=request.url.scheme,
            host_header=request.headers.get("host", ""),
            headers=request.headers,
            session=request.cookies.get(SESSION_COOKIE),
            form_csrf=form.get("csrf"),
        )
        if why is None:
            return None
        return self.page(request, "error.html", 403, status=403, message=why)

    @staticmethod
    def remember(response: Response, request: Request, name: str) -> Response:
        response.set_cookie(
            NAME_COOKIE,
            quote(name[:200], safe=""),
            max_age=365 * 86_400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def budgets(self) -> tuple[dict[str, Any], str | None]:
        """The budgets by name for a page that shows them on the side (a store that is down says so)."""
        try:
            return {v.name: v for v in self.data.budget_views()}, None
        except (LoopGuardError, OSError, sqlite3.Error) as exc:
            return {}, f"the budget store is not available: {exc}"

    # -- read-only pages ------------------------------------------------------------------------------
    def runs_page(self, request: Request) -> Response:
        try:
            limit = max(1, min(int(request.query_params.get("limit", "50")), 5_000))
        except ValueError:
            limit = 50
        runs = self.data.runs()
        budgets, problem = self.budgets()
        live = [r for r in runs if r.live or r.pending]
        recent = [r for r in runs if not (r.live or r.pending)]
        return self.page(
            request,
            "runs.html",
            live=live,
            recent=recent[:limit],
            more=max(0, len(recent) - limit),
            limit=limit,
            total_runs=len(runs),
            total_trips=sum(len(r.trips) for r in runs),
            total_cost=sum(r.cost_micros for r in runs),
            approvals_problem=self.data.approvals_problem,
            budgets=budgets,
            budgets_problem=problem,
        )

    def run_page(self, request: Request) -> Response:
        sid = request.query_params.get("session", "")
        run = self.data.run(sid) if sid else None
        if run is None:
            return self.page(
                request,
                "error.html",
                404,
                status=404,
                message=f"no run {sid!r} in {shown_location(self.data.ledger.url)}",
            )
        rows = self.data.rows(sid)
        names = run.limits.budgets if run.limits is not None else ()
        views, problem = self.budgets() if names else ({}, None)
        surface = self.data.surface()
        attestations = surface.attestations(sid) if surface is not None else []
        return self.page(
            request,
            "run.html",
            run=run,
            rows=rows[-RUN_ROWS:],
            hidden_rows=max(0, len(rows) - RUN_ROWS),
            requests=self.data.session_requests(sid),
            attestations=attestations,
            review_problem=self.data.review_problem,
            budgets=[(name, views.get(name)) for name in names],
            budget_store=self.data.budgets_store is not None,
            budgets_problem=problem,
        )

    def _review(self, request: Request, sid: str, status: int = 200, **extra: Any) -> HTMLResponse:
        from ..review import SessionNotFound, attestation_status, render

        surface = self.data.surface()
        run = self.data.run(sid)
        if surface is None:
            return self.page(
                request, "review.html", 503, sid=sid, run=run, frame=None, problem=self.data.review_problem, **extra
            )
        try:
            frame = surface.frame(sid)
        except SessionNotFound as exc:
            problem = str(exc.args[0]) if exc.args else str(exc)
            return self.page(request, "review.html", 404, sid=sid, run=run, frame=None, problem=problem, **extra)
        attestations = surface.attestations(sid)
        attested, line = attestation_status(frame, attestations)
        html = render(frame, "html", attestations=attestations, db=surface.ledger.url)
        return self.page(
            request,
            "review.html",
            status,
            sid=sid,
            run=run,
            frame=frame,
            problem=None,
            attested=attested,
            status_line=line,
            frame_html=html,
            attestations=attestations,
            **extra,
        )

    def review_page(self, request: Request) -> Response:
        sid = request.query_params.get("session", "")
        notice = "attested: thank you" if request.query_params.get("attested") else None
        return self._review(request, sid, notice=notice)

    def trips_page(self, request: Request) -> Response:
        return self.page(request, "trips.html", trips=self.data.trips()[:200])

    def approvals_page(self, request: Request) -> Response:
        status = request.query_params.get("status", "pending")
        if status not in (*STATUSES, "all"):
            status = "pending"
        items = self.data.requests(None if status == "all" else status)
        now = self.data.approvals_now()
        return self.page(
            request,
            "approvals.html",
            status=status,
            statuses=(*STATUSES, "all"),
            items=[(r, r.effective_status(now)) for r in items],
            approvals_problem=self.data.approvals_problem,
        )

    def _approval(self, request: Request, rid: str, status: int = 200, **extra: Any) -> HTMLResponse:
        item = self.data.request(rid)
        if item is None:
            return self.page(request, "error.html", 404, status=404, message=f"no approval request {rid!r}")
        extra.setdefault("args_text", "")
        extra.setdefault("note", "")
        extra.setdefault("reason", "")
        return self.page(
            request,
            "approval.html",
            status,
            item=item,
            state=item.effective_status(self.data.approvals_now()),
            run=self.data.run(item.session_id),
            **extra,
        )

    def approval_page(self, request: Request) -> Response:
        rid = request.path_params["request_id"]
        done = request.query_params.get("decided")
        notice = f"{done}: the run goes on when it asks again" if done in ("approved", "rejected") else None
        return self._approval(request, rid, notice=notice)

    def budgets_page(self, request: Request) -> Response:
        runs = self.data.runs()
        return self.page(
            request,
            "budgets.html",
            budgets=self.data.budget_views(runs),
            store_url=shown_location(getattr(self.data.budgets_store, "url", None))
            if self.data.budgets_store is not None
            else None,
        )

    def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", next=_local_path(request.query_params.get("next")))

    def state(self, request: Request) -> Response:
        return JSONResponse({"version": self.data.version(), "pending": len(self.data.pending())})

    def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(self.static[name], media_type=_STATIC[name], headers={"cache-control": "no-cache"})

    # -- changes (POST only) --------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        target = _local_path(form.get("next"))
        if self.auth.read_only:
            return await run_in_threadpool(
                self.page, request, "error.html", 403, status=403, message="this dashboard is read-only"
            )
        same = self.auth.same_origin(request.url.scheme, request.headers.get("host", ""), request.headers)
        if same is False:
            return await run_in_threadpool(
                self.page, request, "error.html", 403, status=403, message="refused: a login from another origin"
            )
        if not self.auth.check_token(form.get("token")):
            await anyio.sleep(0.25)  # a wrong guess costs time
            return await run_in_threadpool(
                self.page, request, "login.html", 403, next=target, error="wrong token: nothing changed"
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.new_session(),
            max_age=int(self.auth.session_seconds),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        same = self.auth.same_origin(request.url.scheme, request.headers.get("host", ""), request.headers)
        if same is False:
            return await run_in_threadpool(
                self.page, request, "error.html", 403, status=403, message="refused: a request from another origin"
            )
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    async def decide(self, request: Request) -> Response:
        approve = request.url.path.endswith("/approve")
        rid = request.path_params["request_id"]
        form = await self.form(request)
        refused = await run_in_threadpool(self.refuse, request, form)
        if refused is not None:
            return refused
        by = form.get("by", "").strip()
        note = form.get("note", "").strip()
        reason = form.get("reason", "").strip()
        args_text = form.get("args", "")
        keep = {"args_text": args_text, "note": note, "reason": reason}

        def again(status: int, error: str) -> HTMLResponse:
            return self._approval(request, rid, status, error=error, **keep)

        if not by:
            return await run_in_threadpool(again, 400, "say who decides (your name): it is written to the ledger")
        args = None
        if approve and args_text.strip():
            try:
                args = json.loads(args_text)
            except json.JSONDecodeError as exc:
                return await run_in_threadpool(again, 400, f"the edited arguments must be JSON: {exc}")
        if not approve and not reason:
            return await run_in_threadpool(
                again, 400, "give the reason: the model is told, so it can do something else"
            )
        try:
            decided = await run_in_threadpool(
                lambda: self.data.decide(
                    rid, approve=approve, by=by, reason=(note or None) if approve else reason, args=args
                )
            )
        except DecisionError as exc:
            return await run_in_threadpool(again, exc.status, str(exc))
        target = f"/approvals/{_q(decided.id)}?decided={decided.status}"
        return self.remember(RedirectResponse(target, status_code=303), request, by)

    async def attest(self, request: Request) -> Response:
        from ..review import AttestationRequired, SessionNotFound

        form = await self.form(request)
        refused = await run_in_threadpool(self.refuse, request, form)
        if refused is not None:
            return refused
        sid = form.get("session", "")
        reviewer = form.get("reviewer", "").strip()
        notes = form.get("notes", "")
        frame_hash = form.get("frame_hash") or None
        surface = await run_in_threadpool(self.data.surface)
        if surface is None:
            return await run_in_threadpool(self._review, request, sid, 503)

        def attest() -> Any:
            return surface.attest(sid, reviewer, notes, frame_hash=frame_hash)

        def again(status: int, error: str) -> HTMLResponse:
            return self._review(request, sid, status, error=error, reviewer=reviewer, notes=notes)

        try:
            await run_in_threadpool(attest)
        except SessionNotFound as exc:
            return await run_in_threadpool(again, 404, str(exc.args[0]) if exc.args else str(exc))
        except AttestationRequired as exc:
            return await run_in_threadpool(again, 409, str(exc))
        except (ValueError, TypeError) as exc:
            return await run_in_threadpool(again, 400, str(exc))
        response = RedirectResponse(f"/run/review?session={_q(sid)}&attested=1", status_code=303)
        return self.remember(response, request, reviewer)

    # -- live updates ---------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        settings = self.settings
        version: Callable[[], str] = self.data.version

        async def stream() -> AsyncIterator[str]:
            yield f"retry: {max(1000, int(settings.poll_seconds * 2000))}\n\n"
            last: str | None = None
            started = beat = time.monotonic()
            while time.monotonic() - started < settings.stream_seconds:
                try:
                    current: str | None = await run_in_threadpool(version)
                except Exception:  # a storage hiccup: say nothing, look again next tick
                    current = None
                now = time.monotonic()
                if current is not None and current != last:
                    last, beat = current, now
                    yield f"event: change\ndata: {current}\n\n"
                elif now - beat >= settings.heartbeat_seconds:
                    beat = now
                    yield ": ping\n\n"
                await anyio.sleep(settings.poll_seconds)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- errors ---------------------------------------------------------------------------------------
    async def storage_error(self, request: Request, exc: Exception) -> Response:
        """The ledger, the queue or the budget store failed: say which and why, as a page (503)."""
        message = f"the dashboard cannot read its data right now: {exc}"
        return await run_in_threadpool(self.page, request, "error.html", 503, status=503, message=message)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = await run_in_threadpool(
            self.page, request, "error.html", exc.status_code, status=exc.status_code, message=exc.detail
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response


def build_app(data: DashboardData, auth: Auth, settings: Settings) -> Starlette:
    pages = _Pages(data, auth, settings)
    routes = [
        Route("/", pages.runs_page, methods=["GET"]),
        Route("/run", pages.run_page, methods=["GET"]),
        Route("/run/review", pages.review_page, methods=["GET"]),
        Route("/run/attest", pages.attest, methods=["POST"]),
        Route("/trips", pages.trips_page, methods=["GET"]),
        Route("/approvals", pages.approvals_page, methods=["GET"]),
        Route("/approvals/{request_id}", pages.approval_page, methods=["GET"]),
        Route("/approvals/{request_id}/approve", pages.decide, methods=["POST"]),
        Route("/approvals/{request_id}/reject", pages.decide, methods=["POST"]),
        Route("/budgets", pages.budgets_page, methods=["GET"]),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/events", pages.events, methods=["GET"]),
        Route("/api/state", pages.state, methods=["GET"]),
        Route("/static/{name}", pages.static_file, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, auth=auth)],
        exception_handlers={
            HTTPException: pages.http_error,
            LoopGuardError: pages.storage_error,
            sqlite3.Error: pages.storage_error,
        },
    )
    app.state.data = data
    app.state.auth = auth
    app.state.settings = settings
    return app
