"""The done-when of issue 13 item 2: a webhook that is down, hangs 10 s or answers 500 never delays a guarded call
by more than the enqueue, and every alert arrives exactly once after it recovers."""

from __future__ import annotations

import time

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.alerts import Alert, Alerts, CallbackSink, WebhookSink

from .conftest import FAST
from .server import Receiver

CALLS = 20


def guarded_calls(breaker: Breaker) -> float:
    """20 short runs, each crossing a threshold (warning) and tripping (critical): 40 alerts."""
    started = time.perf_counter()
    for n in range(CALLS):
        with breaker.run():
            breaker.before_tool("search", {"q": n})
            breaker.after_tool("search", {"q": n}, result="ok")
            try:
                breaker.before_tool("search", {"q": n + 1})
            except LoopGuardTripped:
                pass
    return time.perf_counter() - started


def best_of(breaker: Breaker, rounds: int = 3) -> float:
    return min(guarded_calls(breaker) for _ in range(rounds))


@pytest.mark.parametrize("mode", ["slow", "down", "fail"])
def test_a_bad_webhook_never_delays_a_guarded_call(mode: str, receiver: Receiver, opened: list[Alerts]) -> None:
    baseline = best_of(Breaker(max_tool_calls=1))

    if mode == "down":
        receiver.down()
    else:
        receiver.mode = mode  # slow: every request hangs 10 s (longer than the sink's 5 s timeout)
    mirror: list[Alert] = []
    alerts = Alerts([WebhookSink(receiver.url), CallbackSink(mirror.append)], retry=FAST, dead_letter=None)
    opened.append(alerts)
    breaker = Breaker(max_tool_calls=1)
    alerts.attach(breaker)
    guarded = best_of(breaker)

    assert guarded - baseline < 0.050, f"{CALLS} guarded calls took {guarded:.4f} s with alerts, {baseline:.4f} without"
    stats = alerts.stats()
    assert stats.submitted == 3 * 2 * CALLS and stats.queue_full == 0

    if mode == "down":
        receiver.up()
    receiver.mode = "ok"
    receiver.release.set()  # a hung request answers 503 now, and is retried
    assert alerts.flush(timeout=15)
    sent = {a.id for a in mirror}
    assert len(sent) == stats.submitted
    assert receiver.delivered == dict.fromkeys(sent, 1)  # every alert, exactly once
    assert alerts.stats().dead_lettered == 0
