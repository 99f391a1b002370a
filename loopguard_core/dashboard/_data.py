"""What the dashboard shows, read through the public APIs of the ledger, the approval queue, the budget store and
the review surface. No web framework here: the pages (``_app``) only lay this out.

Runs are the ledger's sessions. A run's limits come from the ``start`` resume point the breaker writes when a run
opens (``start max_turns=40 max_cost_usd=2.0 budgets=tenant-acme turns=0 ...``); a run is *in progress* while its
last row is younger than ``live_seconds``. A trip is a breaker row that refused a call; the calls that caused it
are the rows just before it in the run for the same tool (the model calls, for a trip with no tool).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..approvals import ApprovalQueue, ApprovalRequest, approval_queue
from ..approvals._gate import record_decision
from ..budgets import Budget, BudgetReport, BudgetStore, Window, budget_store, reports
from ..errors import ApprovalError, LoopGuardError, MissingExtra, StoreError
from ..ledger import Ledger, LedgerError, LedgerRow
from ._charts import BarChart, LineChart, bar_chart, line_chart

__all__ = [
    "DashboardData",
    "DecisionError",
    "Meter",
    "Run",
    "RunLimits",
    "Trip",
    "build_runs",
    "parse_mark",
    "shown_location",
]

#: Rows before a trip shown as the calls that caused it.
CAUSES = 5
#: Periods shown in a budget's chart.
CHART_WINDOWS = 30
#: The runs whose rows feed a budget's "this period" line (the most recent ones).
TIMELINE_RUNS = 200
#: A slow ledger read (a large ledger) is not redone sooner than this many times its duration.
SLOW_FACTOR = 4.0


class DecisionError(LoopGuardError):
    """A decision or attestation could not be made; the message says why (shown to the person)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_mark(text: str | None) -> tuple[str, dict[str, str]]:
    """A resume point's text: ``"start max_turns=40 budgets=a,b turns=0"`` -> ``("start", {...})``.

    Words without ``=`` continue the previous value (a budget name with a space in it)."""
    if not text:
        return "", {}
    head, _, rest = text.partition(" ")
    values: dict[str, str] = {}
    last: str | None = None
    for word in rest.split():
        key, eq, value = word.partition("=")
        if eq and key.isidentifier():
            values[key] = value
            last = key
        elif last is not None:
            values[last] += " " + word
    return head, values


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class RunLimits:
    """The limits a run opened with (its ``start`` resume point)."""

    max_turns: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_tool_calls: int | None = None
    max_seconds: float | None = None
    budgets: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: dict[str, str]) -> RunLimits:
        names = values.get("budgets", "")
        return cls(
            max_turns=_int(values.get("max_turns")),
            max_tokens=_int(values.get("max_tokens")),
            max_cost_usd=_float(values.get("max_cost_usd")),
            max_tool_calls=_int(values.get("max_tool_calls")),
            max_seconds=_float(values.get("max_seconds")),
            budgets=tuple(n for n in (p.strip() for p in names.split(",")) if n),
        )


@dataclass(frozen=True)
class Meter:
    """Spend against a limit: ``used`` (and ``in_flight``) of ``limit``, in the meter's unit."""

    label: str
    used: float
    limit: float | None
    text: str
    in_flight: float = 0.0

    @property
    def fraction(self) -> float | None:
        if self.limit is None:
            return None
        if self.limit <= 0:
            return 1.0 if self.used + self.in_flight > 0 else 0.0
        return (self.used + self.in_flight) / self.limit

    @property
    def percent(self) -> int:
        """The bar's width in percent (0-100)."""
        f = self.fraction
        return 0 if f is None else max(0, min(100, round(f * 100)))

    @property
    def flight_percent(self) -> int:
        """The in-flight part of the bar, in percent of the whole width."""
        if self.limit is None or self.limit <= 0 or self.in_flight <= 0:
            return 0
        return max(0, min(self.percent, round(self.in_flight / self.limit * 100)))

    @property
    def level(self) -> str:
        f = self.fraction
        if f is None:
            return "none"
        return "over" if f >= 1.0 else ("warn" if f >= 0.8 else "ok")


def usd(micros: float) -> str:
    """Micro-USD as dollars: ``$0.0240``; four decimals, six for amounts under a cent."""
    value = micros / 1_000_000
    return f"${value:,.6f}" if 0 < abs(value) < 0.01 else f"${value:,.4f}"


def money(micros: float) -> str:
    """Micro-USD for labels and ceilings: ``$5.00``, ``$0.2500``."""
    value = micros / 1_000_000
    return f"${value:,.2f}" if value == 0 or abs(value) >= 0.1 else f"${value:,.4f}"


def _usd_limit(value: float) -> str:
    return money(value * 1_000_000)


def shown_location(url: str | None) -> str:
    """A ledger or store location fit for a page: a file by its name, a URL without its password."""
    if not url:
        return "-"
    if "://" not in url:
        return url.replace("\\", "/").rsplit("/", 1)[-1]
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return parts.path.rsplit("/", 1)[-1]
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + (f"[{host}]" if ":" in host else host)
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Trip:
    """A refused call (``row``) and the calls just before it that led there (``causes``, oldest first)."""

    row: LedgerRow
    causes: tuple[LedgerRow, ...]

    @property
    def reason(self) -> str:
        return self.row.breach_reason or "unknown"

    def same_input(self, row: LedgerRow) -> bool:
        """``row`` asked for exactly what the refused call asked (same tool, same input hash)."""
        return self.row.tool is not None and row.tool == self.row.tool and row.input_hash == self.row.input_hash

    @property
    def repeats(self) -> int:
        """How many of the causes asked for exactly the refused call."""
        return sum(1 for r in self.causes if self.same_input(r))


@dataclass
class Run:
    """One ledger session with what the dashboard says about it."""

    session_id: str
    first_at: str = ""
    last_at: str = ""
    rows: int = 0
    tokens: int = 0
    cost_micros: int = 0
    turns: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    failures: int = 0
    observed: int = 0
    trips: list[Trip] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    tools: Counter[str] = field(default_factory=Counter)
    limits: RunLimits | None = None
    last_row: LedgerRow | None = None
    #: filled in per request (they depend on the time and on the approval queue)
    live: bool = False
    pending: int = 0

    @property
    def status(self) -> str:
        """``waiting`` (an approval is pending), ``stopped`` (the last row is a trip), ``running`` or ``idle``."""
        if self.pending:
            return "waiting"
        if self.last_row is not None and self.last_row.is_trip:
            return "stopped"
        return "running" if self.live else "idle"

    @property
    def status_text(self) -> str:
        if self.status == "waiting":
            return f"waiting for approval ({self.pending})"
        if self.status == "stopped" and self.last_row is not None:
            return f"stopped: {self.last_row.breach_reason or 'trip'}"
        return self.status

    @property
    def seconds(self) -> float:
        first, last = parse_time(self.first_at), parse_time(self.last_at)
        return 0.0 if first is None or last is None else max(0.0, (last - first).total_seconds())

    def meters(self) -> list[Meter]:
        """Spend against every limit the run opened with (cost, tokens, turns, tool calls, wall clock)."""
        lim = self.limits or RunLimits()
        out = [
            Meter(
                "cost",
                self.cost_micros / 1_000_000,
                lim.max_cost_usd,
                f"{usd(self.cost_micros)}"
                + (f" of {_usd_limit(lim.max_cost_usd)}" if lim.max_cost_usd is not None else ""),
            ),
            Meter(
                "tokens",
                self.tokens,
                lim.max_tokens,
                f"{self.tokens:,}" + (f" of {lim.max_tokens:,}" if lim.max_tokens is not None else ""),
            ),
            Meter(
                "turns",
                self.turns,
                lim.max_turns,
                f"{self.turns:,}" + (f" of {lim.max_turns:,}" if lim.max_turns is not None else ""),
            ),
            Meter(
                "tool calls",
                self.tool_calls,
                lim.max_tool_calls,
                f"{self.tool_calls:,}" + (f" of {lim.max_tool_calls:,}" if lim.max_tool_calls is not None else ""),
            ),
        ]
        if lim.max_seconds is not None:
            out.append(
                Meter("seconds", self.seconds, lim.max_seconds, f"{self.seconds:,.0f} s of {lim.max_seconds:g} s")
            )
        return out


def build_runs(rows: Iterable[LedgerRow], *, causes: int = CAUSES) -> dict[str, Run]:
    """One :class:`Run` per session, from the ledger's rows in chain order (one pass, bounded memory per run)."""
    runs: dict[str, Run] = {}
    recent: dict[tuple[str, str], deque[LedgerRow]] = {}
    agents: dict[str, dict[str, None]] = {}
    for r in rows:
        run = runs.get(r.session_id)
        if run is None:
            run = runs[r.session_id] = Run(r.session_id, first_at=r.created_at)
            agents[r.session_id] = {}
        run.rows += 1
        run.tokens += r.tokens
        run.cost_micros += r.cost_micros
        run.last_at = r.created_at
        run.last_row = r
        if r.origin in ("model", "tool", "breaker"):
            run.turns = max(run.turns, r.turn)
            if r.agent:
                agents[r.session_id][r.agent] = None
        if r.origin == "model":
            run.model_calls += 1
            recent.setdefault((r.session_id, ""), deque(maxlen=causes)).append(r)
        elif r.origin == "tool":
            run.tool_calls += 1
            run.tools[r.tool or "?"] += 1
            if not r.passed:
                run.failures += 1
            recent.setdefault((r.session_id, r.tool or ""), deque(maxlen=causes)).append(r)
        elif r.origin == "breaker":
            if r.passed:
                run.observed += 1
            else:
                run.trips.append(Trip(r, tuple(recent.get((r.session_id, r.tool or ""), ()))))
        elif r.origin == "checkpoint":
            mark, values = parse_mark(r.breach_reason)
            if mark == "start":
                run.limits = RunLimits.from_values(values)
    for sid, run in runs.items():
        run.agents = list(agents[sid])
    return runs


@dataclass(frozen=True)
class BudgetView:
    """One budget: its current period's meters, a chart per ceiling over its stored periods, and this period's
    cost over time from the ledger rows of the runs that draw from it."""

    name: str
    period: str
    timezone: str
    window: str
    resets_at: str | None
    meters: tuple[Meter, ...]
    charts: tuple[BarChart, ...]
    timeline: LineChart | None
    periods: int

    @property
    def fullest(self) -> Meter | None:
        """The ceiling closest to (or past) its limit this period."""
        return max(self.meters, key=lambda m: m.fraction or 0.0, default=None)


_AMOUNTS = {"cost_micros": "cost", "tokens": "tokens", "turns": "turns", "tool_calls": "tool calls"}


def _amount(amount: str, value: float) -> str:
    return money(value) if amount == "cost_micros" else f"{value:,.0f}"


def _formatter(amount: str) -> Callable[[float], str]:
    return lambda value: _amount(amount, value)


def _window_label(key: str) -> str:
    if len(key) == 10 and key[4] == "-":  # a day: 2026-12-04
        return key[5:]
    if "T" in key:  # an hour: 2026-12-04T20
        return key.split("T", 1)[1] + "h"
    return key


def _budget_of(r: BudgetReport) -> Budget | None:
    lim = r.limits
    try:
        return Budget(
            r.name,
            period=r.period,
            timezone=r.timezone,
            max_cost_usd=None if "cost_micros" not in lim else lim["cost_micros"] / 1_000_000,
            max_tokens=lim.get("tokens"),
            max_turns=lim.get("turns"),
            max_tool_calls=lim.get("tool_calls"),
        )
    except (TypeError, ValueError):
        return None


@dataclass
class _Timeline:
    """One budget's cost this period from the ledger: the runs that opened naming it, and their costly rows."""

    name: str
    start: dt.datetime
    end: dt.datetime | None
    limit: int
    sessions: frozenset[str]
    points: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, window: Window, limit: int, runs: Sequence[Run]) -> _Timeline | None:
        start = window.starts_at or min(
            (t for t in (parse_time(r.first_at) for r in runs) if t is not None), default=None
        )
        if start is None:
            return None
        drawing = [
            r.session_id
            for r in runs
            if r.limits is not None and name in r.limits.budgets and (parse_time(r.last_at) or start) >= start
        ][:TIMELINE_RUNS]
        return cls(name, start, window.resets_at, limit, frozenset(drawing)) if drawing else None

    def chart(self, now: float) -> LineChart | None:
        if not self.points:
            return None
        points = sorted(self.points)
        end = self.end.timestamp() if self.end is not None else now
        return line_chart(
            points,
            start=self.start.timestamp(),
            end=max(end, points[-1][0]),
            now=now,
            limit=self.limit,
            fmt=money,
            title=f"cost this period, from the ledger ({len(self.sessions)} run(s) naming {self.name})",
            tz=self.start.tzinfo,
        )


class DashboardData:
    """The dashboard's view of one ledger (and its approval queue and budget store)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        approvals: ApprovalQueue | None,
        approvals_problem: str | None = None,
        budgets: BudgetStore | None = None,
        live_seconds: float = 300.0,
        hmac_key: bytes | None = None,
        writer: Ledger | None = None,
        wall_clock: Callable[[], float] = time.time,
        version_ttl: float = 0.5,
    ) -> None:
        self.ledger = ledger
        self.approvals = approvals
        self.approvals_problem = approvals_problem
        self.budgets_store = budgets
        self.live_seconds = float(live_seconds)
        self.wall_clock = wall_clock
        self._hmac_key = hmac_key
        self._writer = writer
        self._lock = threading.Lock()
        self._runs_key: tuple[int, str] | None = None
        self._runs: dict[str, Run] = {}
        self._runs_at = self._runs_took = 0.0
        self._key: tuple[tuple[int, ...] | None, float, float, tuple[int, str]] | None = None
        self._version: tuple[float, str] | None = None
        self._version_ttl = version_ttl
        self._surface: Any = None
        self._surface_lock = threading.Lock()
        self._surface_problem: str | None = None

    # -- the ledger -----------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, ...] | None:
        """The SQLite file's and its WAL's modification times and sizes (None for other ledgers): a stat()
        tells that nothing was written, without reading the ledger."""
        path = self.ledger.url
        if "://" in path or path == ":memory:":
            return None
        out: list[int] = []
        for name in (path, path + "-wal"):
            try:
                st = os.stat(name)
            except OSError:
                out += [0, 0]
            else:
                out += [st.st_mtime_ns, st.st_size]
        return tuple(out)

    def ledger_key(self) -> tuple[int, str]:
        """(rows, last row time): changes whenever a row is appended.

        Reading it scans the ledger's session summary, so it is read again only when the file changed, and
        while the ledger keeps growing, at most once every few times as long as the last read took."""
        stamp = self._stamp()
        now = time.monotonic()
        with self._lock:
            known = self._key
            if known is not None and (
                (stamp is not None and stamp == known[0]) or now - known[1] < SLOW_FACTOR * known[2]
            ):
                return known[3]
        sessions = self.ledger.sessions()
        key = sum(s.rows for s in sessions), max((s.last_at for s in sessions), default="")
        with self._lock:
            self._key = (stamp, now, time.monotonic() - now, key)
        return key

    def runs(self) -> list[Run]:
        """Every run, most recently active first, with ``live`` and ``pending`` filled in for now.

        The runs are one pass over the ledger's rows, redone when a row was appended (while the ledger keeps
        growing, at most once every few times as long as the last pass took)."""
        key = self.ledger_key()
        started = time.monotonic()
        with self._lock:
            fresh = key == self._runs_key or started - self._runs_at < SLOW_FACTOR * self._runs_took
            cached = self._runs if fresh and self._runs_key is not None else None
        if cached is None:
            cached = build_runs(self.ledger.rows())
            with self._lock:
                self._runs, self._runs_key = cached, key
                self._runs_at, self._runs_took = started, time.monotonic() - started
        pending = Counter(r.session_id for r in self.pending())
        now = dt.datetime.fromtimestamp(self.wall_clock(), dt.timezone.utc)
        out = []
        for run in cached.values():  # copies: the cached runs are shared by concurrent requests
            last = parse_time(run.last_at)
            live = last is not None and (now - last).total_seconds() <= self.live_seconds
            out.append(replace(run, live=live, pending=pending.get(run.session_id, 0)))
        out.sort(key=lambda r: r.last_at, reverse=True)
        return out

    def run(self, session_id: str) -> Run | None:
        return next((r for r in self.runs() if r.session_id == session_id), None)

    def rows(self, session_id: str) -> list[LedgerRow]:
        return list(self.ledger.rows(session_id))

    def trips(self, runs: Sequence[Run] | None = None) -> list[tuple[Run, Trip]]:
        """Every trip, newest first."""
        found = [(run, trip) for run in (runs if runs is not None else self.runs()) for trip in run.trips]
        found.sort(key=lambda rt: rt[1].row.seq, reverse=True)
        return found

    # -- approvals ------------------------------------------------------------------------------------
    def pending(self) -> list[ApprovalRequest]:
        if self.approvals is None:
            return []
        now = self.approvals_now()
        return [r for r in self.approvals.list("pending", 10_000) if r.effective_status(now) == "pending"]

    def approvals_now(self) -> float:
        queue = self.approvals
        clock: Callable[[], float] = getattr(queue, "wall_clock", self.wall_clock)
        return clock()

    def requests(self, status: str | None, limit: int = 500) -> list[ApprovalRequest]:
        """Requests newest first; ``status`` as the queue stores it (``expired`` is computed from the time)."""
        if self.approvals is None:
            return []
        now = self.approvals_now()
        if status == "expired":
            items = self.approvals.list(None, limit)
            return [r for r in items if r.effective_status(now) == "expired"]
        items = self.approvals.list(status, limit)
        if status == "pending":
            items = [r for r in items if r.effective_status(now) == "pending"]
        return items

    def request(self, request_id: str) -> ApprovalRequest | None:
        return None if self.approvals is None else self.approvals.get(request_id)

    def session_requests(self, session_id: str) -> list[ApprovalRequest]:
        return [r for r in self.requests(None, 10_000) if r.session_id == session_id]

    def _decision_ledger(self) -> tuple[Ledger, bool]:
        """The ledger that gets the decision's row (and whether to close it after): what the CLI does."""
        if self._writer is not None:
            return self._writer, False
        try:
            return Ledger(self.ledger.url, hmac_key=self._hmac_key), True
        except (LedgerError, MissingExtra) as exc:
            hint = " (start the dashboard with $LOOPGUARD_HMAC_KEY set to its key in hex)"
            why = f"cannot write the decision to the ledger {shown_location(self.ledger.url)}: {exc}"
            raise DecisionError(why + (hint if "hmac" in str(exc).lower() else ""), 503) from None

    def decide(
        self, request_id: str, *, approve: bool, by: str, reason: str | None = None, args: Any = None
    ) -> ApprovalRequest:
        """Approve (optionally with edited arguments) or reject, and write the decision's ledger row, exactly as
        ``loopguard approvals approve|reject`` does."""
        queue = self.approvals
        if queue is None:
            raise DecisionError(self.approvals_problem or "no approval queue", 503)
        request = queue.get(request_id)
        if request is None:
            raise DecisionError(f"no approval request {request_id!r}", 404)
        ledger, close = self._decision_ledger()
        try:
            try:
                decided = queue.decide(request.id, approve=approve, by=by, reason=reason, args=args)
            except ApprovalError as exc:
                raise DecisionError(str(exc), 409) from None
            except StoreError as exc:
                raise DecisionError(str(exc), 503) from None
            record_decision(ledger, decided)
        finally:
            if close:
                ledger.close()
        return decided

    # -- review ---------------------------------------------------------------------------------------
    def surface(self) -> Any:
        """The review surface over this ledger (``None`` with :attr:`review_problem` when there is none)."""
        with self._surface_lock:
            if self._surface is None and self._surface_problem is None and "://" in self.ledger.url:
                self._surface_problem = (
                    "review frames and attestations live in a SQLite ledger file; "
                    f"{shown_location(self.ledger.url)} is not one"
                )
            if self._surface is None and self._surface_problem is None:
                from ..review import ReviewSurface

                try:
                    self._surface = ReviewSurface(self.ledger)
                except Exception as exc:  # shown on the page instead of the frame
                    where = shown_location(self.ledger.url)
                    self._surface_problem = f"the review surface is not available for {where}: {exc}"
            return self._surface

    @property
    def review_problem(self) -> str | None:
        return self._surface_problem

    # -- budgets --------------------------------------------------------------------------------------
    def budget_views(self, runs: Sequence[Run] | None = None) -> list[BudgetView]:
        """Every budget in the store; with ``runs``, also each one's cost this period from the ledger."""
        if self.budgets_store is None:
            return []
        by_name: dict[str, list[BudgetReport]] = {}
        for r in reports(self.budgets_store):
            by_name.setdefault(r.name, []).append(r)
        now = self.wall_clock()
        parts = []
        wanted: list[_Timeline] = []
        for name in sorted(by_name):
            history = sorted(by_name[name], key=lambda r: r.window)
            latest = history[-1]
            budget = _budget_of(latest)
            window = budget.window(now) if budget is not None else None
            current = next((r for r in history if window is not None and r.window == window.key), None)
            if current is None:
                key = window.key if window is not None else latest.window
                resets = None if window is None or window.resets_at is None else window.resets_at.isoformat()
                current = BudgetReport(name, latest.period, key, latest.timezone, resets, {}, {}, latest.limits)
                history.append(current)
            timeline = None
            if window is not None and "cost_micros" in current.limits and runs is not None:
                timeline = _Timeline.of(name, window, current.limits["cost_micros"], runs)
                if timeline is not None:
                    wanted.append(timeline)
            parts.append((name, latest, current, history[-CHART_WINDOWS:], len(by_name[name]), timeline))
        self._fill(wanted)
        views = []
        for name, latest, current, history, stored, timeline in parts:
            per = latest.period if latest.period != "none" else "period"
            meters = tuple(
                Meter(
                    _AMOUNTS.get(amount, amount),
                    current.used.get(amount, 0),
                    limit,
                    f"{_amount(amount, current.used.get(amount, 0) + current.in_flight.get(amount, 0))} "
                    f"of {_amount(amount, limit)}"
                    + (
                        f" ({_amount(amount, current.in_flight[amount])} in flight)"
                        if current.in_flight.get(amount)
                        else ""
                    ),
                    in_flight=current.in_flight.get(amount, 0),
                )
                for amount, limit in current.limits.items()
            )
            charts = tuple(
                bar_chart(
                    [(_window_label(r.window), r.used.get(amount, 0), r.in_flight.get(amount, 0)) for r in history],
                    limit=limit,
                    fmt=_formatter(amount),
                    title=f"{_AMOUNTS.get(amount, amount)} per {per}",
                )
                for amount, limit in current.limits.items()
            )
            views.append(
                BudgetView(
                    name,
                    latest.period,
                    latest.timezone,
                    current.window,
                    current.resets_at,
                    meters,
                    charts,
                    None if timeline is None else timeline.chart(now),
                    stored,
                )
            )
        return views

    def _fill(self, timelines: Sequence[_Timeline]) -> None:
        """One pass over the ledger collects the cost points of every timeline."""
        wanted: dict[str, list[_Timeline]] = {}
        for t in timelines:
            for sid in t.sessions:
                wanted.setdefault(sid, []).append(t)
        if not wanted:
            return
        for row in self.ledger.rows():
            if not row.cost_micros or row.session_id not in wanted:
                continue
            when = parse_time(row.created_at)
            if when is None:
                continue
            for t in wanted[row.session_id]:
                if when >= t.start:
                    t.points.append((when.timestamp(), row.cost_micros))

    # -- change detection -----------------------------------------------------------------------------
    def version(self) -> str:
        """A short fingerprint of everything the pages show: it changes when a row is appended, an approval
        is asked or decided (or expires), or a budget moves. Cached for a moment across connections."""
        now = time.monotonic()
        with self._lock:
            if self._version is not None and now - self._version[0] < self._version_ttl:
                return self._version[1]
        h = hashlib.sha256()
        h.update(repr(self.ledger_key()).encode())
        if self.approvals is not None:
            wall = self.approvals_now()
            for r in self.approvals.list(None, 200):
                h.update(f"{r.id}:{r.effective_status(wall)}:{r.decided_at}|".encode())
        if self.budgets_store is not None:
            h.update(json.dumps(self.budgets_store.states(), sort_keys=True, default=str).encode())
        value = h.hexdigest()[:16]
        with self._lock:
            self._version = (now, value)
        return value


def open_queue(ledger: Ledger, approvals: str | os.PathLike[str] | ApprovalQueue | None) -> tuple[Any, str | None]:
    """The approval queue (the ledger's database by default), or ``(None, why)``."""
    if approvals is not None and not isinstance(approvals, (str, os.PathLike)):
        return approvals, None
    target = os.fspath(approvals) if approvals is not None else ledger.url
    if target == ":memory:":
        return None, "approvals: an in-memory ledger has no shared approval queue"
    try:
        return approval_queue(target), None
    except (StoreError, MissingExtra, ValueError, TypeError) as exc:
        return None, f"the approval queue at {shown_location(target)} is not available: {exc}"


def open_budgets(budgets: str | BudgetStore | None) -> BudgetStore | None:
    if budgets is None or not isinstance(budgets, str):
        return budgets
    if "://" not in budgets or budgets.startswith("sqlite"):
        path = budgets.split("://", 1)[1].removeprefix("/") if "://" in budgets else budgets
        if not os.path.exists(path):
            raise FileNotFoundError(f"no budget store at {path!r}")
    return budget_store(budgets)
