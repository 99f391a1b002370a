"""Delivery against a real local HTTP server that is down, hangs, fails, limits, and recovers."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from loopguard_core.alerts import (
    Alert,
    AlertDeliveryError,
    Alerts,
    CallbackSink,
    DeadLetter,
    Retry,
    WebhookSink,
)

from .conftest import FAST, alert
from .server import Receiver


def make(opened: list[Alerts], *sinks: object, **options: object) -> Alerts:
    options.setdefault("retry", FAST)
    made = Alerts(list(sinks), **options)  # type: ignore[arg-type]
    opened.append(made)
    return made


def lines(path: Path) -> list[dict[str, object]]:
    return DeadLetter(path).read()


def test_a_server_down_then_back_gets_every_alert_exactly_once(
    receiver: Receiver, dead_path: Path, opened: list[Alerts]
) -> None:
    receiver.down()  # nothing listens on its port: connection refused
    alerts = make(opened, WebhookSink(receiver.url, timeout=1.0), dead_letter=dead_path)
    sent = [alert(n) for n in range(10)]
    assert all(alerts.submit(a) for a in sent)
    time.sleep(0.4)  # several refused attempts
    assert receiver.requests == []
    receiver.up()
    assert alerts.flush(timeout=10)
    assert receiver.delivered == {a.id: 1 for a in sent}
    stats = alerts.stats()
    assert (stats.delivered, stats.dead_lettered, stats.pending) == (10, 0, 0)
    assert not dead_path.exists()


def test_500s_are_retried_until_the_server_recovers(receiver: Receiver, opened: list[Alerts]) -> None:
    receiver.mode = "fail"
    alerts = make(opened, WebhookSink(receiver.url), dead_letter=None)
    sent = [alert(n) for n in range(5)]
    for a in sent:
        alerts.submit(a)
    assert receiver.wait_for(4)  # the first alert, refused again and again (the sink delivers in order)
    assert set(receiver.ids()) == {sent[0].id}
    receiver.mode = "ok"
    assert alerts.flush(timeout=10)
    assert receiver.delivered == {a.id: 1 for a in sent}
    attempts = [r for r in receiver.requests if r.alert_id == sent[0].id]
    assert len({r.headers["idempotency-key"] for r in attempts}) == 1  # the same id on every retry


def test_a_hanging_server_times_out_and_is_retried(receiver: Receiver, opened: list[Alerts]) -> None:
    receiver.mode = "slow"  # hangs 10 s, then 503: the request was not processed
    alerts = make(opened, WebhookSink(receiver.url, timeout=0.2), dead_letter=None)
    sent = [alert(n) for n in range(3)]
    for a in sent:
        alerts.submit(a)
    assert receiver.wait_for(2)  # timed out, then tried again
    receiver.mode = "ok"
    assert alerts.flush(timeout=10)
    assert receiver.delivered == {a.id: 1 for a in sent}


def test_a_timeout_after_the_server_processed_the_request_can_duplicate_it_with_the_same_id(
    receiver: Receiver, opened: list[Alerts]
) -> None:
    """The documented at-least-once caveat: the receiver dedups by X-Loopguard-Alert-Id / Idempotency-Key."""
    receiver.mode = "slow_ok"
    receiver.hang = 0.4
    alerts = make(opened, WebhookSink(receiver.url, timeout=0.1), dead_letter=None)
    one = alert(1)
    alerts.submit(one)
    assert receiver.wait_for(2)
    receiver.mode = "ok"
    assert alerts.flush(timeout=10)
    time.sleep(0.5)  # let the hung handlers answer
    assert receiver.delivered[one.id] >= 2
    assert {r.headers["x-loopguard-alert-id"] for r in receiver.requests} == {one.id}
    assert {r.headers["x-loopguard-dedup-key"] for r in receiver.requests} == {one.dedup_id}


def test_429_waits_for_retry_after(receiver: Receiver, opened: list[Alerts]) -> None:
    receiver.mode = "limit_once"
    receiver.retry_after = "1"
    alerts = make(opened, WebhookSink(receiver.url), dead_letter=None, retry=Retry(initial=0.01, maximum=0.02))
    one = alert(1)
    alerts.submit(one)
    assert alerts.flush(timeout=5)
    first, second = receiver.requests
    assert second.at - first.at >= 0.9  # the back-off alone would have been 0.01 s
    assert receiver.delivered == {one.id: 1}


def test_a_4xx_is_final_and_dead_lettered_at_once(receiver: Receiver, dead_path: Path, opened: list[Alerts]) -> None:
    receiver.mode = "reject"
    sink = WebhookSink(receiver.url)
    alerts = make(opened, sink, dead_letter=dead_path)
    one = alert(1)
    alerts.submit(one)
    assert alerts.flush(timeout=5)
    assert len(receiver.requests) == 1
    (line,) = lines(dead_path)
    assert line["reason"] == "rejected" and line["attempts"] == 1 and line["sink"] == sink.name
    assert "HTTP 400" in str(line["error"]) and "invalid_payload" in str(line["error"])
    assert line["alert"]["id"] == one.id  # type: ignore[index]


def test_retries_end_in_the_dead_letter_log(receiver: Receiver, dead_path: Path, opened: list[Alerts]) -> None:
    receiver.mode = "fail"
    alerts = make(opened, WebhookSink(receiver.url), dead_letter=dead_path, retry=Retry(initial=0.01, max_attempts=3))
    alerts.submit(alert(1))
    assert alerts.flush(timeout=5)
    assert len(receiver.requests) == 3
    (line,) = lines(dead_path)
    assert (line["reason"], line["attempts"], line["error"]) == ("gave up", 3, "HTTP 500: error")
    within = make(opened, WebhookSink(receiver.url), dead_letter=dead_path, retry=Retry(initial=0.05, max_seconds=0.3))
    started = time.monotonic()
    within.submit(alert(2))
    assert within.flush(timeout=5)
    assert time.monotonic() - started < 1.0
    assert lines(dead_path)[-1]["reason"] == "gave up"


def test_the_queue_bound_sends_the_overflow_to_the_dead_letter_log(
    receiver: Receiver, dead_path: Path, opened: list[Alerts]
) -> None:
    receiver.down()
    alerts = make(opened, WebhookSink(receiver.url), dead_letter=dead_path, queue_size=5)
    sent = [alert(n) for n in range(20)]
    started = time.perf_counter()
    queued = [a for a in sent if alerts.submit(a)]
    assert time.perf_counter() - started < 0.05  # a full queue never blocks
    stats = alerts.stats()
    assert 5 <= len(queued) <= 6  # 5 waiting, and perhaps one already taken by the worker
    assert stats.queue_full == 20 - len(queued)
    overflow = lines(dead_path)
    assert [line["reason"] for line in overflow] == ["queue full"] * stats.queue_full
    receiver.up()
    assert alerts.flush(timeout=10)
    assert receiver.delivered == {a.id: 1 for a in queued}  # each queued alert exactly once
    lost = {line["alert"]["id"] for line in overflow}  # type: ignore[index]
    assert lost | set(receiver.delivered) == {a.id for a in sent} and not lost & set(receiver.delivered)


def test_a_sink_that_is_down_never_holds_up_another(receiver: Receiver, opened: list[Alerts]) -> None:
    receiver.down()
    got: list[Alert] = []
    arrived = threading.Event()

    def collect(a: Alert) -> None:
        got.append(a)
        if len(got) == 5:
            arrived.set()

    alerts = make(opened, WebhookSink(receiver.url), CallbackSink(collect), dead_letter=None)
    for n in range(5):
        alerts.submit(alert(n))
    assert arrived.wait(1.0)
    assert alerts.stats().pending == 5  # still waiting for the webhook
    receiver.up()
    assert alerts.flush(timeout=10)
    assert len(receiver.delivered) == 5


def test_callbacks_run_in_the_worker_thread_and_are_retried(opened: list[Alerts], dead_path: Path) -> None:
    seen: list[str] = []
    calls = {"n": 0}

    def flaky(a: Alert) -> None:
        calls["n"] += 1
        seen.append(threading.current_thread().name)
        if calls["n"] < 3:
            raise ConnectionError("not yet")

    def refuses(a: Alert) -> None:
        raise AlertDeliveryError("this receiver does not take it", retryable=False)

    alerts = make(opened, CallbackSink(flaky), CallbackSink(refuses, name="refuses"), dead_letter=dead_path)
    alerts.submit(alert(1))
    assert alerts.flush(timeout=5)
    assert calls["n"] == 3
    assert all(name.startswith("loopguard-alerts[") for name in seen)
    assert threading.current_thread().name not in seen
    (line,) = lines(dead_path)
    assert (line["sink"], line["reason"], line["attempts"]) == ("refuses", "rejected", 1)


def test_close_never_waits_for_a_hanging_server(receiver: Receiver, dead_path: Path, opened: list[Alerts]) -> None:
    receiver.mode = "slow"
    alerts = make(opened, WebhookSink(receiver.url, timeout=5.0), dead_letter=dead_path)
    sent = [alert(n) for n in range(3)]
    for a in sent:
        alerts.submit(a)
    assert receiver.wait_for(1)
    started = time.monotonic()
    assert alerts.close(timeout=0.3) is False
    assert time.monotonic() - started < 1.0
    reasons = {line["alert"]["id"]: line["reason"] for line in lines(dead_path)}  # type: ignore[index]
    assert reasons == {sent[0].id: "in flight at close", sent[1].id: "closed", sent[2].id: "closed"}
    assert alerts.submit(alert(9)) is False  # closed: dead-lettered, never queued
    assert lines(dead_path)[-1]["reason"] == "closed"
    receiver.release.set()


def test_deduplication_by_key(opened: list[Alerts]) -> None:
    got: list[Alert] = []
    alerts = make(opened, CallbackSink(got.append), dead_letter=None, dedup_size=2)
    assert alerts.submit(alert(1)) is True
    assert alerts.submit(alert(1)) is False  # same key, another alert object
    assert alerts.submit(alert(1, dedup_key=None)) is True  # no key: never deduplicated
    alerts.submit(alert(2))
    alerts.submit(alert(3))  # the LRU of 2 keys forgets key 1
    assert alerts.submit(alert(1)) is True
    alerts.flush(timeout=5)
    assert [a.title for a in got] == ["alert 1", "alert 1", "alert 2", "alert 3", "alert 1"]
    assert alerts.stats().deduplicated == 1


def test_severity_filter_per_sink(opened: list[Alerts]) -> None:
    pages: list[Alert] = []
    chat: list[Alert] = []
    alerts = make(
        opened,
        CallbackSink(pages.append, name="pager", min_severity="critical"),
        CallbackSink(chat.append, name="chat"),
        dead_letter=None,
    )
    alerts.submit(alert(1, severity="warning"))
    alerts.submit(alert(2, severity="critical"))
    alerts.flush(timeout=5)
    assert [a.title for a in pages] == ["alert 2"]
    assert [a.title for a in chat] == ["alert 1", "alert 2"]


def test_dead_letter_lines_hold_no_url_path_or_routing_key(
    receiver: Receiver, dead_path: Path, opened: list[Alerts], caplog: pytest.LogCaptureFixture
) -> None:
    from loopguard_core.alerts import PagerDutyFormat

    receiver.mode = "reject"
    url = receiver.url.replace("/hook", "/services/T000/B000/SECRETTOKEN")
    alerts = make(
        opened,
        WebhookSink(url, format=PagerDutyFormat(routing_key="ROUTINGSECRET"), secret="HMACSECRET"),
        dead_letter=dead_path,
    )
    with caplog.at_level(logging.DEBUG, logger="loopguard.alerts"):
        alerts.submit(alert(1))
        alerts.flush(timeout=5)
    text = dead_path.read_text() + caplog.text + repr(alerts)
    assert receiver.requests[0].path.endswith("SECRETTOKEN")
    for secret in ("SECRETTOKEN", "ROUTINGSECRET", "HMACSECRET"):
        assert secret not in text
    assert json.loads(dead_path.read_text())["sink"] == f"pagerduty:http://127.0.0.1:{receiver.port}"


def test_a_webhook_needs_the_alerts_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from loopguard_core import MissingExtra

    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtra, match=r"loopguard-core\[alerts\]") as missing:
        WebhookSink("https://example.com/hook")
    assert missing.value.extra == "alerts"


def test_bad_configuration_is_refused_at_construction() -> None:
    sink = CallbackSink(print)
    with pytest.raises(ValueError, match="at least one sink"):
        Alerts([])
    with pytest.raises(ValueError, match="threshold"):
        Alerts(sink, thresholds=(1.5,))
    with pytest.raises(ValueError, match="queue_size"):
        Alerts(sink, queue_size=0)
    with pytest.raises(ValueError, match="named"):
        Alerts([sink, CallbackSink(print)])
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://example.com")
    with pytest.raises(ValueError, match="severity"):
        Alert(kind="x", severity="fatal", title="t")
    with pytest.raises(ValueError, match="jitter"):
        Retry(jitter=2)
    with pytest.raises(TypeError, match="dedup_key"):
        Alert(kind="x", severity="info", title="t", dedup_key=({"a": 1},))  # type: ignore[arg-type]


def test_retry_delays_grow_cap_jitter_and_honour_retry_after() -> None:
    retry = Retry(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.5)
    assert [retry.delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert retry.delay(3, rng=lambda: 1.0) == 2.0  # up to half taken off
    assert retry.delay(1, retry_after=30.0, rng=lambda: 0.0) == 30.0
    assert Retry(max_retry_after=10.0).delay(1, retry_after=3600.0, rng=lambda: 0.0) == 10.0


def test_concurrent_submits_of_one_key_deliver_it_once(opened: list[Alerts]) -> None:
    got: list[Alert] = []
    alerts = make(opened, CallbackSink(got.append), dead_letter=None)
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for n in range(50):
            alerts.submit(alert(n))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alerts.flush(timeout=5)
    assert sorted(a.title for a in got) == sorted(f"alert {n}" for n in range(50))
    assert alerts.stats().deduplicated == 7 * 50


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    from email.utils import formatdate

    from loopguard_core.alerts._sinks import retry_after_seconds

    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert retry_after_seconds(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(bad) is None


def test_an_alert_closed_while_its_worker_writes_it_off_is_dead_lettered_once(
    dead_path: Path, opened: list[Alerts]
) -> None:
    """close() gives up on the worker while the worker itself is writing the alert to the dead-letter log (a
    rejected alert, a slow disk): exactly one of the two writes it, never both."""
    writing = threading.Event()

    class SlowLog(DeadLetter):
        def write(self, alert: Alert, **fields: object) -> None:  # type: ignore[override]
            writing.set()
            time.sleep(0.3)
            super().write(alert, **fields)  # type: ignore[arg-type]

    def refuses(a: Alert) -> None:
        raise AlertDeliveryError("this receiver does not take it", retryable=False)

    alerts = make(opened, CallbackSink(refuses), dead_letter=SlowLog(dead_path))
    sent = alert(1)
    alerts.submit(sent)
    assert writing.wait(5)  # the worker is writing it off as rejected...
    alerts.close(timeout=0.05)  # ...when close() stops waiting for it
    time.sleep(0.6)  # both slow writes, had there been two, are done
    assert [line["alert"]["id"] for line in lines(dead_path)] == [sent.id]  # type: ignore[index]
