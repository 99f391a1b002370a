"""Payload shapes (JSON, Slack incoming webhook, PagerDuty Events API v2) and the HMAC signature."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from loopguard_core.alerts import (
    SIGNATURE_HEADER,
    Alert,
    Alerts,
    JSONFormat,
    PagerDutyFormat,
    SlackFormat,
    WebhookSink,
    sign,
    verify_signature,
)

from .conftest import FAST
from .server import Receiver

TRIP = Alert(
    kind="trip",
    severity="critical",
    title="loopguard refused tool 'search': loop/repeat",
    text="loopguard refused the call [loop/repeat]: <!channel> & co; it was not made.",
    facts={"reason": "loop", "rule": "repeat", "tool": "search", "limit": 3, "positions": [1, 2, 3]},
    session_id="run-1",
    scope="crew-42",
    agent="researcher",
    dedup_key=("trip", "crew-42", "run-1", "loop/repeat", "search"),
    created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
)


def test_json_is_the_alert_as_it_is() -> None:
    body = JSONFormat().render(TRIP)
    assert body == {
        "id": TRIP.id,
        "kind": "trip",
        "severity": "critical",
        "title": TRIP.title,
        "text": TRIP.text,
        "facts": {"reason": "loop", "rule": "repeat", "tool": "search", "limit": 3, "positions": [1, 2, 3]},
        "session_id": "run-1",
        "scope": "crew-42",
        "agent": "researcher",
        "created_at": "2025-01-02T03:04:05Z",
        "dedup_key": ["trip", "crew-42", "run-1", "loop/repeat", "search"],
        "dedup_id": TRIP.dedup_id,
        "source": "loopguard",
    }
    assert TRIP.dedup_id == Alert(kind="trip", severity="info", title="x", dedup_key=TRIP.dedup_key).dedup_id
    assert len(TRIP.dedup_id) <= 255


def test_slack_is_an_incoming_webhook_message_that_cannot_ping() -> None:
    body = SlackFormat(mention="<!here>").render(TRIP)
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("<!here> :rotating_light: [critical] loopguard refused tool 'search'")
    header, section, fields, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": TRIP.title, "emoji": True}}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "&lt;!channel&gt; &amp; co" in section["text"]["text"]  # escaped: no @channel from an alert
    labels = [f["text"].split("\n")[0] for f in fields["fields"]]
    assert labels[:5] == ["*Kind*", "*Severity*", "*Run*", "*Scope*", "*Agent*"] and len(labels) <= 10
    assert context["type"] == "context" and TRIP.id in context["elements"][0]["text"]
    warning = SlackFormat(mention="<!here>").render(Alert(kind="threshold", severity="warning", title="t"))
    assert not warning["text"].startswith("<!here>")  # mentions are for critical alerts only
    long = SlackFormat().render(Alert(kind="x", severity="info", title="t" * 400, text="x" * 5000))
    assert len(long["blocks"][0]["text"]["text"]) == 150 and len(long["blocks"][1]["text"]["text"]) == 3000


def test_pagerduty_is_an_events_v2_trigger() -> None:
    body = PagerDutyFormat("R0UTINGKEY", source="agents-prod").render(TRIP)
    assert body["routing_key"] == "R0UTINGKEY"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == TRIP.dedup_id
    payload = body["payload"]
    assert payload["summary"] == TRIP.title
    assert (payload["source"], payload["severity"], payload["timestamp"]) == (
        "agents-prod",
        "critical",
        "2025-01-02T03:04:05Z",
    )
    assert payload["custom_details"]["reason"] == "loop" and payload["custom_details"]["run"] == "run-1"
    assert payload["group"] == "crew-42" and payload["class"] == "trip" and payload["component"] == "loopguard"
    assert PagerDutyFormat("k").render(Alert(kind="x", severity="warning", title="t"))["payload"]["severity"] == (
        "warning"
    )
    assert "R0UTINGKEY" not in repr(PagerDutyFormat("R0UTINGKEY"))


def test_signature_round_trip_and_what_fails() -> None:
    body = b'{"a":1}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature("s3cret", header, body, now=1_700_000_100)
    assert verify_signature(b"s3cret", header, body.decode(), now=1_700_000_100)
    assert verify_signature(["old", "s3cret"], header, body, now=1_700_000_100)  # a rotation
    assert not verify_signature("s3cret", header, b'{"a":2}', now=1_700_000_100)  # tampered
    assert not verify_signature("other", header, body, now=1_700_000_100)
    assert not verify_signature("s3cret", header, body, now=1_700_000_301)  # older than the tolerance
    assert verify_signature("s3cret", header, body, tolerance=1_000, now=1_700_000_301)
    for bad in (None, "", "garbage", "t=x,v1=ab", "t=1700000000", "v1=abc"):
        assert not verify_signature("s3cret", bad, body, now=1_700_000_000)


def test_every_format_arrives_over_http_with_headers_and_a_verifiable_signature(
    receiver: Receiver, opened: list[Alerts]
) -> None:
    sinks = [
        WebhookSink(receiver.url, format=JSONFormat(), secret="whsec", headers={"X-Team": "agents"}),
        WebhookSink(receiver.url, format=SlackFormat(), name="slack"),
        WebhookSink(receiver.url, format=PagerDutyFormat("key"), name="pd"),
    ]
    alerts = Alerts(sinks, retry=FAST, dead_letter=None)
    opened.append(alerts)
    alerts.submit(TRIP)
    assert alerts.flush(timeout=5)
    by_shape = {tuple(sorted(r.json()))[:2]: r for r in receiver.requests}
    assert len(receiver.requests) == 3 and receiver.delivered[TRIP.id] == 3
    signed = next(r for r in receiver.requests if "x-loopguard-signature" in r.headers)
    assert signed.headers["content-type"] == "application/json" and signed.headers["x-team"] == "agents"
    assert signed.headers["idempotency-key"] == TRIP.id == signed.headers["x-loopguard-alert-id"]
    assert signed.json()["id"] == TRIP.id
    assert verify_signature("whsec", signed.headers[SIGNATURE_HEADER.lower()], signed.body)
    assert not verify_signature("whsec", signed.headers["x-loopguard-signature"], signed.body.replace(b"loop", b"lop"))
    stamp = int(signed.headers["x-loopguard-signature"].split(",")[0][2:])
    assert abs(stamp - time.time()) < 60
    shapes = [set(r.json()) for r in receiver.requests]
    assert {"text", "blocks"} in shapes
    assert {"routing_key", "event_action", "dedup_key", "payload", "client"} in shapes
    assert by_shape  # three distinct bodies
    assert json.loads(signed.body) == JSONFormat().render(TRIP)
