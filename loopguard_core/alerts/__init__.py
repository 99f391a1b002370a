"""Alerts: soft thresholds and trips, delivered to callbacks and webhooks without slowing a guarded call.

::

    from loopguard_core.alerts import Alerts, SlackFormat, WebhookSink

    alerts = Alerts([WebhookSink(SLACK_WEBHOOK_URL, format=SlackFormat())], thresholds=(0.8,))
    alerts.attach(breaker)   # every trip, 80% of every ceiling once per run, approval requests

A guarded call only builds the alert and appends it to a bounded in-memory queue; one worker thread per sink
sends it, retries with back-off, and writes what cannot be delivered to a dead-letter log. Alerts hold names,
counts and limits, never a call's arguments, results or prompts. Webhooks need the ``alerts`` extra
(``pip install "loopguard-core[alerts]"``). See docs/alerts.md.
"""

from __future__ import annotations

from ._alert import KINDS, SEVERITIES, Alert, DedupKey, safe_facts
from ._alerts import DEFAULT_DEAD_LETTER, Alerts
from ._delivery import AlertStats, DeadLetter, Retry
from ._formats import PAGERDUTY_EVENTS_URL, Format, JSONFormat, PagerDutyFormat, SlackFormat
from ._signing import SIGNATURE_HEADER, sign, verify_signature
from ._sinks import AlertDeliveryError, CallbackSink, Sink, WebhookSink
from ._watch import AlertWatcher

__all__ = [
    "DEFAULT_DEAD_LETTER",
    "KINDS",
    "PAGERDUTY_EVENTS_URL",
    "SEVERITIES",
    "SIGNATURE_HEADER",
    "Alert",
    "AlertDeliveryError",
    "AlertStats",
    "AlertWatcher",
    "Alerts",
    "CallbackSink",
    "DeadLetter",
    "DedupKey",
    "Format",
    "JSONFormat",
    "PagerDutyFormat",
    "Retry",
    "Sink",
    "SlackFormat",
    "WebhookSink",
    "safe_facts",
    "sign",
    "verify_signature",
]
