"""What a user of ``SideEffects`` / ``@side_effect`` depends on, on every store: the body runs once, repeats get
the recorded outcome, a repeat in flight waits or is refused, a conflict is refused, a failed body may be retried,
records expire on schedule, and a claim whose process vanished is refused as unknown."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from loopguard_core import Breaker
from loopguard_core.errors import LoopGuardTripped, LoopGuardWarning, StoreError
from loopguard_core.idempotency import MemorySideEffects, SideEffects, current_key, idempotency_key, side_effect

from .conftest import Backend, WallClock

ARGS = {"order_id": "order-42", "amount_cents": 1500}
HOUR = 3600.0


class Body:
    """A tool body that counts its runs (thread-safe)."""

    def __init__(self, result: Any = None, error: BaseException | None = None, hold: float = 0.0) -> None:
        self.runs = 0
        self.result = {"refund": "re_1"} if result is None else result
        self.error = error
        self.hold = hold
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.runs += 1
        if self.hold:
            time.sleep(self.hold)
        if self.error is not None:
            raise self.error
        return self.result

    async def async_call(self) -> Any:
        with self._lock:
            self.runs += 1
        if self.hold:
            await asyncio.sleep(self.hold)
        if self.error is not None:
            raise self.error
        return self.result


def test_the_body_runs_once_and_a_repeat_gets_the_recorded_outcome(backend: Backend) -> None:
    effects = SideEffects(backend.open())
    body = Body({"refund": "re_1", "amount": [15, 0]})
    first = effects.run("send_refund", ARGS, body, run_id="run-1")
    again = effects.run("send_refund", dict(reversed(ARGS.items())), body, run_id="run-1")  # key order is no matter
    assert first == again == {"refund": "re_1", "amount": [15, 0]}
    assert body.runs == 1
    record = effects.get("send_refund", ARGS, run_id="run-1")
    assert record is not None and record.state == "completed"


async def test_async_bodies_run_once_too(backend: Backend) -> None:
    effects = SideEffects(backend.open())
    body = Body({"refund": "re_2"})
    results = [await effects.arun("send_refund", ARGS, body.async_call, run_id="run-1") for _ in range(3)]
    assert results == [{"refund": "re_2"}] * 3
    assert body.runs == 1


async def test_the_async_decorator_waits_for_a_racing_task_without_blocking_the_loop(backend: Backend) -> None:
    runs = []

    @side_effect(backend.open(), key=lambda args: args["order_id"])
    async def send_refund(order_id: str, amount_cents: int) -> str:
        runs.append(order_id)
        await asyncio.sleep(0.2)
        return f"refunded {order_id}"

    ticks = 0

    async def ticker() -> None:  # runs only if the waiting task yields to the loop
        nonlocal ticks
        for _ in range(10):
            ticks += 1
            await asyncio.sleep(0.01)

    results = await asyncio.gather(send_refund("o-1", 100), send_refund("o-1", 100), ticker())
    assert results[:2] == ["refunded o-1", "refunded o-1"]
    assert runs == ["o-1"] and ticks == 10


def test_positional_and_keyword_calls_share_one_key() -> None:
    breaker = Breaker()
    runs: list[tuple[str, int]] = []

    @side_effect(breaker=breaker)
    def send_refund(order_id: str, amount_cents: int, currency: str = "eur") -> str:
        runs.append((order_id, amount_cents))
        return "ok"

    send_refund("order-42", 1500)
    send_refund(order_id="order-42", amount_cents=1500)
    send_refund("order-42", amount_cents=1500, currency="eur")  # the default, given explicitly
    assert runs == [("order-42", 1500)]
    send_refund("order-42", 1500, "usd")
    assert len(runs) == 2


def test_each_run_gets_its_own_key_and_a_resumed_run_gets_its_record(backend: Backend) -> None:
    store = backend.open()
    runs: list[str] = []
    breaker = Breaker()

    @side_effect(store, breaker=breaker, name="send_refund")
    def send_refund(order_id: str) -> str:
        runs.append(breaker.session_id)
        return f"refunded in {breaker.session_id}"

    with breaker.run("task-1"):
        assert send_refund("order-42") == "refunded in task-1"
    with breaker.run("task-2"):
        assert send_refund("order-42") == "refunded in task-2"
    assert runs == ["task-1", "task-2"]

    # A restarted process resumes task-1 with a fresh breaker: the recorded outcome comes back.
    resumed = Breaker()

    @side_effect(store, breaker=resumed, name="send_refund")
    def send_refund_again(order_id: str) -> str:
        runs.append("again")
        return "must not run"

    with resumed.run("task-1"):
        assert send_refund_again("order-42") == "refunded in task-1"
    assert runs == ["task-1", "task-2"]
    assert idempotency_key("task-1", "send_refund", {"order_id": "order-42"}) != idempotency_key(
        "task-2", "send_refund", {"order_id": "order-42"}
    )


def test_a_user_key_with_other_arguments_is_a_conflict(backend: Backend) -> None:
    effects = SideEffects(backend.open(), key=lambda args: f"refund:{args['order_id']}")
    body = Body()
    effects.run("send_refund", ARGS, body)
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", {**ARGS, "amount_cents": 9999}, body)
    trip = caught.value
    assert trip.reason == "side_effect_conflict" and isinstance(trip, RuntimeError)
    assert trip.facts["recorded_args_digest"] != trip.facts["args_digest"]
    assert "different idempotency key" in str(trip)
    assert body.runs == 1
    # The same key on another tool is another record.
    assert effects.run("send_email", {"order_id": "order-42"}, Body("sent")) == "sent"


def _hold_claim(effects: SideEffects, lease_seconds: float = 60) -> str:
    """Another caller's claim in flight on the call ``send_refund(ARGS)`` in run-1; returns its key."""
    key, digest = effects.identify("send_refund", ARGS, run_id="run-1")
    state, _ = effects.store.claim(key, digest, uuid.uuid4().hex, lease_seconds=lease_seconds, ttl_seconds=HOUR)
    assert state == "claimed"
    return key


def test_a_repeat_in_flight_is_refused_at_once_with_in_flight_refuse(backend: Backend) -> None:
    effects = SideEffects(backend.open(), in_flight="refuse")
    key = _hold_claim(effects)
    body = Body()
    started = time.monotonic()
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, body, run_id="run-1")
    assert time.monotonic() - started < 1.0
    assert caught.value.reason == "side_effect_in_flight"
    assert caught.value.facts["key"] == key and caught.value.tool == "send_refund"
    assert body.runs == 0


def test_a_repeat_in_flight_waits_then_is_refused_if_still_running(backend: Backend) -> None:
    effects = SideEffects(backend.open(), wait_seconds=0.3)
    _hold_claim(effects)
    body = Body()
    started = time.monotonic()
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, body, run_id="run-1")
    assert 0.3 <= time.monotonic() - started < 2.0
    assert caught.value.reason == "side_effect_in_flight" and caught.value.facts["waited_seconds"] >= 0.3
    assert body.runs == 0


def test_a_repeat_in_flight_waits_for_the_outcome(backend: Backend) -> None:
    effects = SideEffects(backend.open(), wait_seconds=10)
    body = Body({"refund": "re_3"}, hold=0.3)
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(effects.run("send_refund", ARGS, body, run_id="run-1")))
    thread.start()
    while body.runs == 0:
        time.sleep(0.005)
    assert effects.run("send_refund", ARGS, body, run_id="run-1") == {"refund": "re_3"}
    thread.join()
    assert first == [{"refund": "re_3"}] and body.runs == 1


def test_a_body_that_raises_releases_its_claim_so_a_retry_runs_it(backend: Backend) -> None:
    effects = SideEffects(backend.open())
    failing = Body(error=ConnectionError("payments API down"))
    with pytest.raises(ConnectionError):
        effects.run("send_refund", ARGS, failing, run_id="run-1")
    assert effects.get("send_refund", ARGS, run_id="run-1") is None
    retry = Body({"refund": "re_4"})
    assert effects.run("send_refund", ARGS, retry, run_id="run-1") == {"refund": "re_4"}
    assert retry.runs == 1


def test_on_error_keep_refuses_repeats_as_unknown(backend: Backend) -> None:
    effects = SideEffects(backend.open(), on_error="keep")
    with pytest.raises(TimeoutError):
        effects.run("send_refund", ARGS, Body(error=TimeoutError("read timed out")), run_id="run-1")
    repeat = Body()
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, repeat, run_id="run-1")
    trip = caught.value
    assert trip.reason == "side_effect_unknown" and trip.facts["error_type"] == "TimeoutError"
    assert trip.facts["cause"] == "error_kept" and "on_error='keep'" in str(trip)
    assert repeat.runs == 0
    assert effects.release("send_refund", ARGS, run_id="run-1")  # checked the payments system: not refunded
    assert effects.run("send_refund", ARGS, repeat, run_id="run-1") == {"refund": "re_1"}


def test_an_interrupted_body_leaves_its_outcome_unknown() -> None:
    effects = SideEffects()
    with pytest.raises(KeyboardInterrupt):
        effects.run("send_refund", ARGS, Body(error=KeyboardInterrupt()), run_id="run-1")
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, Body(), run_id="run-1")
    assert caught.value.reason == "side_effect_unknown" and caught.value.facts["cause"] == "interrupted"


async def test_a_cancelled_async_body_leaves_its_outcome_unknown() -> None:
    effects = SideEffects()
    task = asyncio.ensure_future(effects.arun("send_refund", ARGS, Body(hold=5).async_call, run_id="run-1"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(LoopGuardTripped) as caught:
        await effects.arun("send_refund", ARGS, Body().async_call, run_id="run-1")
    assert caught.value.reason == "side_effect_unknown" and caught.value.facts["error_type"] == "CancelledError"


def test_records_expire_on_schedule(backend: Backend, wall: WallClock) -> None:
    store = backend.open(clock=wall)
    effects = SideEffects(store, ttl_seconds=HOUR)
    body = Body()
    effects.run("send_refund", ARGS, body, run_id="run-1")
    wall.advance(HOUR - 1)
    effects.run("send_refund", ARGS, body, run_id="run-1")
    assert body.runs == 1  # still answered from the record
    wall.advance(2)  # past ttl_seconds since completion: forgotten, as with a Stripe key after 24 h
    assert effects.get("send_refund", ARGS, run_id="run-1") is None
    effects.run("send_refund", ARGS, body, run_id="run-1")
    assert body.runs == 2
    # Per-call ttl (an adapter passing a tool's own), then purge_expired removes what has expired.
    effects.run("send_email", ARGS, body, run_id="run-1", ttl_seconds=60)
    wall.advance(61)
    assert store.purge_expired() >= 1
    assert effects.get("send_email", ARGS, run_id="run-1") is None
    assert effects.get("send_refund", ARGS, run_id="run-1") is not None


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"], indirect=True)  # Redis: PEXPIRE, test_stores
def test_expired_records_are_purged_lazily_on_claim(backend: Backend, wall: WallClock) -> None:
    store = backend.open(clock=wall)
    effects = SideEffects(store, ttl_seconds=60)
    for n in range(3):
        effects.run("send_refund", {"n": n}, Body(), run_id="run-1")
    wall.advance(HOUR)
    effects.run("send_refund", {"n": 99}, Body(), run_id="run-1")  # this claim purges the three
    assert store.purge_expired() == 0


def test_a_claim_whose_lease_ran_out_is_unknown_and_never_silently_rerun(backend: Backend, wall: WallClock) -> None:
    store = backend.open(clock=wall)
    effects = SideEffects(store, lease_seconds=30)
    key = _hold_claim(effects, lease_seconds=30)  # a worker that claimed, then vanished
    wall.advance(31)
    body = Body()
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, body, run_id="run-1")
    trip = caught.value
    assert trip.reason == "side_effect_unknown" and trip.facts["cause"] == "lease_expired"
    assert trip.facts["key"] == key and "check the external system" in str(trip)
    assert body.runs == 0
    # A body known to be safe to repeat may take the claim over.
    retrying = SideEffects(store, lease_seconds=30, on_unknown="retry")
    assert retrying.run("send_refund", ARGS, body, run_id="run-1") == {"refund": "re_1"}
    assert body.runs == 1
    assert effects.run("send_refund", ARGS, body, run_id="run-1") == {"refund": "re_1"}
    assert body.runs == 1


def test_an_outcome_the_serializer_cannot_store_is_returned_once_and_never_rerun(backend: Backend) -> None:
    class Refund:
        id = "re_5"

    effects = SideEffects(backend.open())
    body = Body(Refund())
    with pytest.warns(LoopGuardWarning, match="serializer="):
        first = effects.run("send_refund", ARGS, body, run_id="run-1")
    assert isinstance(first, Refund)
    with pytest.raises(TypeError, match="serializer=") as caught:
        effects.run("send_refund", ARGS, body, run_id="run-1")
    assert "will not run again" in str(caught.value)
    assert body.runs == 1


def test_a_custom_serializer_round_trips_outcomes(backend: Backend) -> None:
    class Refund:
        def __init__(self, refund_id: str) -> None:
            self.id = refund_id

    class RefundSerializer:
        def dumps(self, value: Refund) -> bytes:
            return value.id.encode()

        def loads(self, data: bytes) -> Refund:
            return Refund(data.decode())

    effects = SideEffects(backend.open(), serializer=RefundSerializer())
    body = Body(Refund("re_6"))
    effects.run("send_refund", ARGS, body, run_id="run-1")
    again = effects.run("send_refund", ARGS, body, run_id="run-1")
    assert isinstance(again, Refund) and again.id == "re_6" and body.runs == 1


def test_none_and_json_values_come_back_as_json_gives_them() -> None:
    effects = SideEffects()
    for n, value in enumerate([None, 0, "", [1, "a"], {"nested": {"ok": True}}]):
        effects.run("tool", {"n": n}, lambda value=value: value, run_id="r")
        assert effects.run("tool", {"n": n}, lambda: "must not run", run_id="r") == value
    effects.run("tool", {"n": "tuple"}, lambda: (1, 2), run_id="r")
    assert effects.run("tool", {"n": "tuple"}, lambda: None, run_id="r") == [1, 2]  # documented: JSON has no tuple


def test_a_sync_body_returning_a_coroutine_is_refused_and_its_claim_released() -> None:
    effects = SideEffects()

    async def refund() -> str:
        return "async"

    with pytest.raises(TypeError, match="arun"):
        effects.run("send_refund", ARGS, refund, run_id="run-1")
    assert effects.get("send_refund", ARGS, run_id="run-1") is None


async def test_the_body_can_pass_its_key_on_to_an_idempotent_api() -> None:
    effects = SideEffects()
    seen: list[str | None] = []

    def charge() -> str:
        seen.append(current_key())  # e.g. Stripe's Idempotency-Key header
        return "ch_1"

    async def acharge() -> str:
        await asyncio.sleep(0)
        seen.append(current_key())
        return "ch_2"

    effects.run("charge", ARGS, charge, run_id="run-1")
    await effects.arun("charge", ARGS, acharge, run_id="run-2")
    assert seen == [
        effects.identify("charge", ARGS, run_id="run-1")[0],
        effects.identify("charge", ARGS, run_id="run-2")[0],
    ]
    assert current_key() is None


def test_a_waiting_repeat_runs_the_body_itself_when_the_first_failed(backend: Backend) -> None:
    effects = SideEffects(backend.open(), wait_seconds=10)
    failing = Body(error=ConnectionError("payments API down"), hold=0.2)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            effects.run("send_refund", ARGS, failing, run_id="run-1")
        except ConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    while failing.runs == 0:
        time.sleep(0.005)
    retry = Body({"refund": "re_7"})
    assert effects.run("send_refund", ARGS, retry, run_id="run-1") == {"refund": "re_7"}
    thread.join()
    assert len(errors) == 1 and retry.runs == 1


class _CannotRecord(MemorySideEffects):
    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool:
        raise StoreError("the store went away")


def test_an_outcome_that_cannot_be_recorded_is_still_returned_and_repeats_are_refused(
    caplog: pytest.LogCaptureFixture, wall: WallClock
) -> None:
    store = _CannotRecord(clock=wall)
    effects = SideEffects(store, lease_seconds=30)
    body = Body({"refund": "re_8"})
    with caplog.at_level("ERROR", logger="loopguard.idempotency"):
        assert effects.run("send_refund", ARGS, body, run_id="run-1") == {"refund": "re_8"}
    assert "could not be recorded" in caplog.text
    wall.advance(31)
    with pytest.raises(LoopGuardTripped) as caught:
        effects.run("send_refund", ARGS, body, run_id="run-1")
    assert caught.value.reason == "side_effect_unknown" and body.runs == 1
