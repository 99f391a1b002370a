"""A Redis that is killed (-9), frozen (SIGSTOP) and restarted under load: every check is answered within a
bounded time by the failure policy, nothing is admitted past a ceiling, nothing crashes, and the store works
again once Redis does. The server is a private redis-server on another port, started and stopped (by PID)
by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from loopguard_core import Breaker, LoopGuardTripped

from ..stores.conftest import PrivateRedis, services_required

if not services_required():
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

CEILING = 1_000_000  # never reached: these tests are about outages, test_storm.py about ceilings
WORKERS = 24
SOCKET_TIMEOUT = 0.5  # twice the default: a CI machine that other work keeps busy is slow, not down
# A check waits for at most one socket timeout of its own plus the ones queued ahead of it for a connection
# (at most one round, then the outage is known); the rest is a loaded CI machine's scheduling.
BOUND = 3.0


class Load:
    """``WORKERS`` threads calling ``before_model``/``after_model`` in a loop until stopped, each call timed."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._paused = False
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]

    def _work(self) -> None:
        while not self._stop.is_set():
            self._go.wait(10)
            with self._lock:
                if self._paused:
                    continue
                self._busy += 1
            try:
                self._one()
            finally:
                with self._lock:
                    self._busy -= 1
            time.sleep(0.01)

    def _one(self) -> None:
        started = time.monotonic()
        try:
            self.breaker.before_model(max_output_tokens=1)
            outcome = "admitted"
        except LoopGuardTripped as exc:
            outcome = exc.reason
        except BaseException as exc:  # anything else is a bug: recorded, and the test fails
            with self._lock:
                self.errors.append(exc)
            self._stop.set()
            return
        took = time.monotonic() - started
        with self._lock:
            self.outcomes[outcome] += 1
            self.slowest = max(self.slowest, took)
        if outcome == "admitted":
            self.breaker.after_model(input_tokens=0, output_tokens=1)  # never raises, even when Redis is down

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads), "a check hung"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No worker starts a check meanwhile (the ones under way finish first)."""
        self._go.clear()
        with self._lock:
            self._paused = True
        deadline = time.monotonic() + 10
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            yield
        finally:
            with self._lock:
                self._paused = False
            self._go.set()

    def phase(self, seconds: float) -> Counter[str]:
        """What the workers got during the next ``seconds``."""
        with self._lock:
            before, self.slowest = Counter(self.outcomes), 0.0
        time.sleep(seconds)
        with self._lock:
            return self.outcomes - before


def wait_for(ready: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_killed_frozen_and_restarted_under_load(private_redis: PrivateRedis, policy: str) -> None:
    store = RedisStore(
        private_redis.url, failure_policy=policy, socket_timeout=SOCKET_TIMEOUT, outage_backoff_seconds=0.3
    )
    breaker = Breaker(max_turns=CEILING, store=store, scope="faults")
    with Load(breaker) as load:
        healthy = load.phase(0.4)
        assert healthy["admitted"] > 0 and set(healthy) == {"admitted"}, healthy

        with load.paused():  # no check in flight: every check of the next phase meets a frozen server
            private_redis.freeze()  # accepts connections, answers nothing
        try:
            frozen = load.phase(1.0)
            assert load.slowest < BOUND, load.slowest
        finally:
            private_redis.thaw()
        if policy == "closed":
            assert frozen["admitted"] == 0 and frozen["store_unavailable"] > 0, frozen
        else:
            assert frozen["admitted"] > 0 and "store_unavailable" not in frozen, frozen
        wait_for(lambda: load.phase(0.2)["admitted"] > 0)  # back within the back-off window or two
        if policy == "closed":
            # Every admitted check was counted; a check that timed out while the server was frozen may have
            # been counted too when it woke up: an outage makes the breaker stricter, never looser.
            with load.paused():
                assert breaker.usage().turns >= load.outcomes["admitted"]

        with load.paused():
            private_redis.kill()  # kill -9: connections reset, the port refuses
        killed = load.phase(0.6)
        assert load.slowest < BOUND, load.slowest
        if policy == "closed":
            assert killed["admitted"] == 0 and killed["store_unavailable"] > 0, killed
        else:
            assert killed["admitted"] > 0, killed
        with load.paused():
            private_redis.start()  # the same port, nothing persisted: a new server, an empty script cache
            at_restart = Counter(load.outcomes)
        wait_for(lambda: load.phase(0.2)["admitted"] > 0)  # scripts loaded again on first use
        load.phase(0.3)
    assert not load.errors, load.errors
    since = load.outcomes - at_restart
    turns = breaker.usage().turns  # the run started again from zero on the new server
    if policy == "closed":  # every admitted check counted (a check that timed out may have been counted too)
        assert 0 < since["admitted"] <= turns <= since["admitted"] + since["store_unavailable"], (turns, since)
    else:  # admitted unchecked for a moment after the restart, until the back-off ended
        assert 0 < turns <= since["admitted"], (turns, since)
    store.close()


@pytest.mark.parametrize("policy", ["closed", "open"])
async def test_async_checks_during_a_freeze_are_answered_in_bounded_time(
    private_redis: PrivateRedis, policy: str
) -> None:
    store = RedisStore(private_redis.url, failure_policy=policy, socket_timeout=SOCKET_TIMEOUT)
    breaker = Breaker(max_turns=CEILING, store=store, scope="faults-async")
    await breaker.abefore_model(max_output_tokens=1)

    async def timed() -> tuple[str, float]:
        started = time.monotonic()
        try:
            await breaker.abefore_model(max_output_tokens=1)
            outcome = "admitted"
        except LoopGuardTripped as exc:
            outcome = exc.reason
        return outcome, time.monotonic() - started

    private_redis.freeze()
    try:
        results = await asyncio.wait_for(asyncio.gather(*(timed() for _ in range(150))), 30)
    finally:
        private_redis.thaw()
    assert max(seconds for _, seconds in results) < BOUND
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == ({"store_unavailable": 150} if policy == "closed" else {"admitted": 150})
    store.ping()  # ends the back-off at once
    await breaker.abefore_model(max_output_tokens=1)
    # What Redis counted: the two admitted checks, and at most the checks that were sent before the freeze was
    # known and ran once the server woke up (a check that timed out may have been counted: an outage can
    # only make the breaker stricter, never looser).
    turns = breaker.usage().turns
    assert 2 <= turns <= 2 + 150
    await store.aclose()
    store.close()
