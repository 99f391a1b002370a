"""``assert_tripped`` and ``assert_not_tripped``: the two assertions of "my agent is stopped when it loops" and
"my agent's normal run is never stopped", each a context manager or a check of a result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeAlias, overload

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter, DriveResult, ScriptExhausted

from ._watch import TripLog, watch, watched, watched_logs

__all__ = ["NotTripped", "TripExpected", "TrippedSubject", "assert_not_tripped", "assert_tripped"]

TrippedSubject: TypeAlias = "LoopGuardTripped | DriveResult | Breaker | pytest.ExceptionInfo[BaseException]"
"""What ``assert_tripped`` checks at once: a trip, an ``ExceptionInfo``, a ``drive()`` result or a watched breaker."""

_HOW_TO_WATCH = "use the `breaker` fixture, or call loopguard_pytest.watch(breaker) before the run"


# -- what is expected ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expected:
    reason: str | None
    tool: str | None
    max_body_runs: int | None
    bodies: BodyCounter | None

    def wanted(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (("reason", self.reason), ("tool", self.tool)) if value]
        return ", ".join(parts) or "any reason"

    def matches(self, trip: LoopGuardTripped) -> bool:
        return (self.reason is None or trip.reason == self.reason) and (self.tool is None or trip.tool == self.tool)

    def body_runs(self, result: DriveResult | None = None) -> int | None:
        """How many tool bodies (of ``tool`` when given) ran, when that can be known."""
        if self.bodies is not None:
            return self.bodies.count(self.tool)
        if result is not None:
            return sum(1 for call in result.executed_calls if self.tool is None or call.tool == self.tool)
        return None

    def bodies_name(self) -> str:
        return f"the {self.tool!r} body" if self.tool else "tool bodies"

    def mismatch(self, trip: LoopGuardTripped, result: DriveResult | None = None) -> str | None:
        """What differs between ``trip`` and what was expected (None when nothing does)."""
        problems = []
        if self.reason is not None and trip.reason != self.reason:
            problems.append(f"reason: expected {self.reason!r}, got {trip.reason!r}")
        if self.tool is not None and trip.tool != self.tool:
            problems.append(f"tool: expected {self.tool!r}, got {trip.tool!r}")
        runs = self.body_runs(result)
        if self.max_body_runs is not None and runs is not None and runs > self.max_body_runs:
            problems.append(
                f"body runs: {self.bodies_name()} ran {_times(runs)}, more than max_body_runs={self.max_body_runs} "
                "(the trip came too late)"
            )
        if not problems:
            return None
        lines = "\n".join(f"  {problem}" for problem in problems)
        return f"loopguard stopped the run, but not as expected:\n{lines}\n  the trip: {trip}"

    def check(self, trip: LoopGuardTripped, result: DriveResult | None = None) -> None:
        """Raise an AssertionError saying what differs between ``trip`` and what was expected."""
        __tracebackhide__ = True
        message = self.mismatch(trip, result)
        if message is not None:
            raise AssertionError(message)


def _expected(
    reason: str | None, tool: str | None, max_body_runs: int | None, bodies: BodyCounter | None, *, drive: bool
) -> _Expected:
    for name, value in (("reason", reason), ("tool", tool)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"{name} must be a non-empty str or None, got {value!r}")
    if max_body_runs is not None and (
        isinstance(max_body_runs, bool) or not isinstance(max_body_runs, int) or max_body_runs < 0
    ):
        raise TypeError(f"max_body_runs must be a non-negative int or None, got {max_body_runs!r}")
    if bodies is not None and not isinstance(bodies, BodyCounter):
        raise TypeError(f"bodies must be a loopguard_core.testing.BodyCounter, got {type(bodies).__name__}")
    if max_body_runs is not None and bodies is None and not drive:
        raise TypeError(
            "max_body_runs needs bodies=<the BodyCounter your tool bodies hit> (the `loopguard_bodies` fixture)"
        )
    return _Expected(reason, tool, max_body_runs, bodies)


# -- what happened -------------------------------------------------------------------------------------------


def _listing(trips: Sequence[LoopGuardTripped]) -> str:
    return "\n".join(f"  {n}. {trip}" for n, trip in enumerate(trips, start=1))


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _carried_trip(error: BaseException) -> LoopGuardTripped | None:
    """A LoopGuardTripped wrapped in ``error`` (its cause, context or exception group), if any."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LoopGuardTripped) and current is not error:
            return current
        inner = getattr(current, "exceptions", None)
        if isinstance(inner, tuple):
            stack.extend(item for item in inner if isinstance(item, BaseException))
        stack.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return None


class _NewTrips:
    """The trips watched breakers announce from now on (to tell "nothing tripped" from "a trip was swallowed")."""

    def __init__(self, logs: Sequence[TripLog]) -> None:
        self._start = [(log, len(log)) for log in logs]

    def trips(self) -> list[LoopGuardTripped]:
        return [trip for log, count in self._start for trip in log.trips[count:]]


def _other_exception(expected: _Expected, error: BaseException, swallowed: list[LoopGuardTripped]) -> str:
    message = (
        f"expected loopguard to stop the run ({expected.wanted()}), "
        f"but the block raised {type(error).__name__}: {error}"
    )
    carried = _carried_trip(error)
    if carried is not None:
        message += (
            f"\nIt carries a LoopGuardTripped that was converted on its way to the caller: {carried}"
            "\nThe trip must reach the caller as LoopGuardTripped: something between the guard and the caller "
            "wrapped it."
        )
    elif swallowed:
        message += f"\nloopguard did refuse {_calls(len(swallowed))} inside the block:\n{_listing(swallowed)}"
    if isinstance(error, ScriptExhausted):
        message += (
            "\nThe scripted model ran out of answers, so nothing stopped the agent: check that the guard is installed "
            "(first in the middleware list) and sees this run, or that the limits let it trip before `cap`."
        )
    return message


def _no_trip(expected: _Expected, swallowed: list[LoopGuardTripped]) -> str:
    message = f"expected loopguard to stop the run ({expected.wanted()}), but the block finished without raising"
    if swallowed:
        message += (
            f"\nloopguard did refuse {_calls(len(swallowed))} inside the block, but the trip never reached the caller "
            "(something caught it, or the adapter was told to go on: on_trip='steer' or 'end'):\n" + _listing(swallowed)
        )
    else:
        message += ": nothing was refused"
    runs = expected.body_runs()
    if runs is not None:
        message += f"\n{expected.bodies_name()} ran {_times(runs)}"
    return message


# -- assert_tripped ------------------------------------------------------------------------------------------


class TripExpected:
    """The context manager of ``with assert_tripped(...):``; after the block, ``.trip`` is the trip it caught."""

    def __init__(self, expected: _Expected) -> None:
        self._expected = expected
        self._trip: LoopGuardTripped | None = None
        self._new: _NewTrips | None = None

    @property
    def trip(self) -> LoopGuardTripped:
        """The LoopGuardTripped that left the block (only once the block has ended)."""
        if self._trip is None:
            raise AttributeError("no trip yet: .trip is set when the `with assert_tripped(...)` block has ended")
        return self._trip

    def __enter__(self) -> TripExpected:
        self._new = _NewTrips(watched_logs())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        __tracebackhide__ = True
        swallowed = self._new.trips() if self._new is not None else []
        if error is None:
            raise AssertionError(_no_trip(self._expected, swallowed))
        if isinstance(error, LoopGuardTripped):
            message = self._expected.mismatch(error)
            if message is not None:
                raise AssertionError(message) from None  # the message carries the trip's
            self._trip = error
            return True
        if not isinstance(error, Exception):  # KeyboardInterrupt, pytest.skip(), ...: not ours to judge
            return False
        message = _other_exception(self._expected, error, swallowed)
        if isinstance(error, ScriptExhausted):
            raise AssertionError(message) from None  # its message says it all; its traceback is the framework's
        raise AssertionError(message) from error

    async def __aenter__(self) -> TripExpected:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        __tracebackhide__ = True
        return self.__exit__(kind, error, traceback)


@overload
def assert_tripped(
    *,
    reason: str | None = None,
    tool: str | None = None,
    max_body_runs: int | None = None,
    bodies: BodyCounter | None = None,
) -> TripExpected: ...


@overload
def assert_tripped(
    subject: TrippedSubject,
    /,
    *,
    reason: str | None = None,
    tool: str | None = None,
    max_body_runs: int | None = None,
    bodies: BodyCounter | None = None,
) -> LoopGuardTripped: ...


def assert_tripped(
    subject: TrippedSubject | None = None,
    /,
    *,
    reason: str | None = None,
    tool: str | None = None,
    max_body_runs: int | None = None,
    bodies: BodyCounter | None = None,
) -> TripExpected | LoopGuardTripped:
    """Assert that loopguard stopped the run: with ``reason`` (``"loop"``, ``"turn_ceiling"``...), on ``tool``, and
    before ``bodies`` (a BodyCounter) counted more than ``max_body_runs`` runs (of ``tool``'s body when given).

    ``with assert_tripped(reason="loop"): agent.invoke(...)``: a LoopGuardTripped must leave the block (a trip
    that something swallowed or wrapped on its way to the caller fails the test, saying so); ``.trip`` is it.

    ``assert_tripped(subject, ...)`` checks at once and returns the trip: ``subject`` is a LoopGuardTripped, a
    ``pytest.raises`` ExceptionInfo, a ``drive()`` result (``max_body_runs`` then counts its executed calls) or a
    watched breaker (the ``breaker`` fixture; one of its trips must match: for runs the adapter steers on).
    """
    __tracebackhide__ = True
    expected = _expected(reason, tool, max_body_runs, bodies, drive=isinstance(subject, DriveResult))
    if subject is None:
        return TripExpected(expected)
    target: object = subject.value if isinstance(subject, pytest.ExceptionInfo) else subject
    if isinstance(target, LoopGuardTripped):
        expected.check(target)
        return target
    if isinstance(target, DriveResult):
        if target.trip is None:
            raise AssertionError(
                f"expected loopguard to refuse one of the driven calls ({expected.wanted()}), "
                f"but all {target.executed} ran"
            )
        expected.check(target.trip, target)
        return target.trip
    if isinstance(target, Breaker):
        log = watched(target)
        if log is None:
            raise TypeError(f"assert_tripped(breaker) can only see the trips of a watched breaker: {_HOW_TO_WATCH}")
        trips = log.trips
        if not trips:
            raise AssertionError(f"expected the breaker to have tripped ({expected.wanted()}), but it never did")
        match = next((trip for trip in trips if expected.matches(trip)), None)
        if match is None:
            if len(trips) == 1:
                expected.check(trips[0])
            raise AssertionError(
                f"expected the breaker to have tripped ({expected.wanted()}), but none of its {len(trips)} "
                f"trips matches:\n{_listing(trips)}"
            )
        expected.check(match)
        return match
    if isinstance(target, BaseException):
        raise AssertionError(
            f"expected a LoopGuardTripped ({expected.wanted()}), got {type(target).__name__}: {target}"
        ) from target
    raise TypeError(
        "assert_tripped() checks a LoopGuardTripped, an ExceptionInfo, a drive() result or a watched Breaker, "
        f"not {type(target).__name__}; use `with assert_tripped(...):` around the run"
    )


# -- assert_not_tripped --------------------------------------------------------------------------------------


class NotTripped:
    """What ``assert_not_tripped(...)`` returns: already checked, and a context manager for the run to come."""

    def __init__(self, log: TripLog | None, *, observed: bool) -> None:
        self._observed = observed
        # A breaker's whole log; with no breaker, every watched breaker's log from the start of the block.
        self._whole = log is not None
        self._start: list[tuple[TripLog, int, int]] = [(log, 0, 0)] if log is not None else []

    def _failure(self, escaped: LoopGuardTripped | None) -> str | None:
        trips = [trip for log, count, _ in self._start for trip in log.trips[count:]]
        notes = [note for log, _, count in self._start for note in log.observed[count:]] if self._observed else []
        if escaped is not None:
            message = f"expected the run to go untouched by loopguard, but this trip reached the caller: {escaped}"
            others = [trip for trip in trips if trip is not escaped]
            if others:
                message += f"\nand loopguard refused {_calls(len(others))} more:\n{_listing(others)}"
        elif trips:
            message = f"expected the run to go untouched by loopguard, but it refused {_calls(len(trips))}:\n"
            message += _listing(trips)
        elif notes:
            message = "expected the run to go untouched by loopguard, observe mode included"
        else:
            return None
        if notes:
            message += f"\nobserve mode would have refused {_calls(len(notes))}:\n{_listing(notes)}"
        return message

    def check(self) -> None:
        """Raise an AssertionError listing every refusal (and, with ``observed=True``, would-be refusal) so far."""
        __tracebackhide__ = True
        message = self._failure(None)
        if message is not None:
            raise AssertionError(message)

    def __enter__(self) -> NotTripped:
        if not self._whole:
            self._start = [(log, len(log.trips), len(log.observed)) for log in watched_logs()]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        escaped = error if isinstance(error, LoopGuardTripped) else None
        message = self._failure(escaped)
        if message is None:
            return
        if escaped is not None or error is None:
            raise AssertionError(message) from None  # the message carries the trips'
        raise AssertionError(message) from error

    async def __aenter__(self) -> NotTripped:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self.__exit__(kind, error, traceback)


def _current_run_trips(breaker: Breaker) -> str | None:
    """What an unwatched breaker can tell: whether its current run tripped (earlier runs it cannot tell)."""
    try:
        usage = breaker.usage()
    except Exception:  # a store that cannot answer: the `with` form still sees every trip
        return None
    if not usage.trips:
        return None
    return f"its current run tripped {_times(usage.trips)} (last reason {usage.trip_reason!r})"


def assert_not_tripped(subject: Breaker | DriveResult | None = None, /, *, observed: bool = False) -> NotTripped:
    """Assert that loopguard refused nothing: ``assert_not_tripped(breaker)`` checks at once, and
    ``with assert_not_tripped(breaker): agent.invoke(...)`` also checks the run inside the block.

    It fails listing every refusal of the breaker (a watched one: the ``breaker`` fixture, or ``watch(breaker)``),
    whether or not the trip reached the caller, and any LoopGuardTripped that leaves the block. ``observed=True``
    fails on what ``mode="observe"`` would have refused, too. ``with assert_not_tripped():`` (no breaker) checks the
    block alone: no trip leaves it and no watched breaker refuses a call inside it. ``assert_not_tripped(result)``
    checks a ``drive()`` result.
    """
    __tracebackhide__ = True
    if isinstance(subject, DriveResult):
        if subject.trip is not None:
            raise AssertionError(
                f"expected the driven calls to go untouched by loopguard, but call #{subject.refused_at} was refused "
                f"after {subject.executed} ran: {subject.trip}"
            )
        return NotTripped(None, observed=observed)
    if subject is None:
        return NotTripped(None, observed=observed)
    if not isinstance(subject, Breaker):
        raise TypeError(
            f"assert_not_tripped() takes a Breaker, a drive() result or nothing, not {type(subject).__name__}"
        )
    log = watched(subject)
    if log is None:
        seen = _current_run_trips(subject)
        if seen is not None:
            raise AssertionError(
                f"expected the run to go untouched by loopguard, but {seen}; to see each trip, {_HOW_TO_WATCH}"
            )
        return NotTripped(watch(subject), observed=observed)
    expectation = NotTripped(log, observed=observed)
    expectation.check()
    return expectation
