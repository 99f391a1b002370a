"""Payload formats for webhooks: plain JSON, a Slack incoming webhook, PagerDuty Events API v2."""

from __future__ import annotations

import socket
from typing import Any, Protocol, runtime_checkable

from ._alert import Alert

__all__ = ["PAGERDUTY_EVENTS_URL", "Format", "JSONFormat", "PagerDutyFormat", "SlackFormat"]

#: where PagerDuty's Events API v2 takes events (``WebhookSink(PAGERDUTY_EVENTS_URL, format=PagerDutyFormat(...))``)
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


@runtime_checkable
class Format(Protocol):
    """Turns an alert into the JSON body a receiver expects."""

    name: str

    def render(self, alert: Alert) -> dict[str, Any]: ...


class JSONFormat:
    """The alert as it is (:meth:`Alert.as_dict`), plus ``"source": "loopguard"``. Sign it with ``secret=``."""

    name = "json"

    def render(self, alert: Alert) -> dict[str, Any]:
        payload = alert.as_dict()
        payload["source"] = "loopguard"
        return payload

    def __repr__(self) -> str:
        return "JSONFormat()"


_SLACK_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def _slack_escape(text: str) -> str:
    # Slack reads &, < and > as markup (``<!channel>`` would ping everyone): facts are data, never markup.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


class SlackFormat:
    """A Slack incoming-webhook message: ``text`` (the notification line) and Block Kit ``blocks`` (a header,
    the text, the run's fields, a context line). Text is escaped, so nothing in an alert can ping a channel.
    ``mention="<!here>"`` (or ``"<@U123>"``) is prepended to critical alerts only."""

    name = "slack"

    def __init__(self, *, mention: str | None = None) -> None:
        if mention is not None and not isinstance(mention, str):
            raise TypeError(f"mention must be a str such as '<!here>', got {mention!r}")
        self.mention = mention

    def render(self, alert: Alert) -> dict[str, Any]:
        emoji = _SLACK_EMOJI.get(alert.severity, "")
        line = f"{emoji} [{alert.severity}] {_slack_escape(alert.title)}"
        if self.mention and alert.severity == "critical":
            line = f"{self.mention} {line}"
        fields = [
            ("Kind", alert.kind),
            ("Severity", alert.severity),
            ("Run", alert.session_id),
            ("Scope", alert.scope),
            ("Agent", alert.agent),
        ]
        facts = alert.facts
        for name in ("reason", "rule", "tool", "model", "metric", "limit", "observed", "used", "request_id"):
            if name in facts and facts[name] is not None:
                fields.append((name.replace("_", " ").capitalize(), str(facts[name])))
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(alert.title, 150), "emoji": True}},
        ]
        if alert.text:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_slack_escape(alert.text), 3000)}}
            )
        shown = [
            {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_slack_escape(str(value))}", 2000)}
            for label, value in fields
            if value is not None
        ][:10]
        if shown:
            blocks.append({"type": "section", "fields": shown})
        stamp = alert.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"loopguard · {stamp} · alert {alert.id}"}]}
        )
        return {"text": _cut(line, 3000), "blocks": blocks}

    def __repr__(self) -> str:
        return f"SlackFormat(mention={self.mention!r})"


_PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


class PagerDutyFormat:
    """A PagerDuty Events API v2 ``trigger`` event. ``dedup_key`` is the alert's :attr:`Alert.dedup_id`, so
    PagerDuty folds a repeat (a retried request, a second process) into the same incident.

    ``routing_key`` is the integration key of an Events API v2 integration; ``source`` defaults to this host's
    name; ``component``, ``group`` and ``class_`` fill the fields PagerDuty groups incidents by."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        source: str | None = None,
        component: str | None = "loopguard",
        group: str | None = None,
        class_: str | None = None,
    ) -> None:
        if not isinstance(routing_key, str) or not routing_key:
            raise TypeError("PagerDutyFormat needs routing_key: the integration key of an Events API v2 integration")
        self.routing_key = routing_key
        self.source = source or socket.gethostname() or "loopguard"
        self.component = component
        self.group = group
        self.class_ = class_

    def render(self, alert: Alert) -> dict[str, Any]:
        details: dict[str, Any] = {
            "text": alert.text,
            "kind": alert.kind,
            "run": alert.session_id,
            "scope": alert.scope,
            "agent": alert.agent,
            "alert_id": alert.id,
            **alert.facts,
        }
        payload: dict[str, Any] = {
            "summary": _cut(alert.title, 1024),
            "source": self.source,
            "severity": _PD_SEVERITY.get(alert.severity, "info"),
            "timestamp": alert.created_at.isoformat().replace("+00:00", "Z"),
            "custom_details": {k: v for k, v in details.items() if v is not None},
        }
        if self.component:
            payload["component"] = self.component
        if self.group or alert.scope:
            payload["group"] = self.group or alert.scope
        payload["class"] = self.class_ or alert.kind
        return {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": alert.dedup_id[:255],
            "payload": payload,
            "client": "loopguard",
        }

    def __repr__(self) -> str:  # never shows the routing key
        return f"PagerDutyFormat(source={self.source!r})"
