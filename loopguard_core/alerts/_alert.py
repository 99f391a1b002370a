"""The alert value: what happened, how bad, and the key that makes it happen once."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

__all__ = ["KINDS", "SEVERITIES", "Alert", "DedupKey", "safe_facts"]

#: from least to most urgent; a sink's ``min_severity`` lets the more urgent ones through
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
#: the kinds loopguard itself emits; other code (budgets) may add its own
KINDS: tuple[str, ...] = ("threshold", "trip", "approval", "observed")

_KeyPart = str | int | float | bool | None
DedupKey = tuple[_KeyPart, ...]

# Facts that could hold what went into or came out of a call: never copied into an alert, whatever their value.
_NEVER = frozenset(
    {
        "args",
        "arguments",
        "input",
        "inputs",
        "output",
        "outputs",
        "result",
        "results",
        "prompt",
        "prompts",
        "messages",
        "content",
        "preview",
        "edited_args",
        "body",
        "payload",
        "request",
        "response",
    }
)
_MAX_TEXT = 500
_MAX_ITEMS = 20
_MAX_FACTS = 50


def _scalar(value: object) -> tuple[bool, Any]:
    if value is None or isinstance(value, bool):
        return True, value
    if isinstance(value, int):
        return True, value
    if isinstance(value, float):
        return True, value if math.isfinite(value) else None
    if isinstance(value, str):
        return True, value if len(value) <= _MAX_TEXT else value[: _MAX_TEXT - 1] + "…"
    return False, None


def safe_facts(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-ready copy of ``facts`` that holds only names, counts and short texts.

    Keys that could carry a call's arguments, results or prompts (``args``, ``input``, ``result``,
    ``preview``...) are dropped, and so is every nested mapping or object; lists keep their first 20 scalars,
    strings their first 500 characters, and at most 50 facts are kept.
    """
    out: dict[str, Any] = {}
    if not facts:
        return out
    for key, value in facts.items():
        if len(out) >= _MAX_FACTS:
            break
        if not isinstance(key, str) or key.lower() in _NEVER:
            continue
        ok, clean = _scalar(value)
        if ok:
            out[key] = clean
        elif isinstance(value, (list, tuple, frozenset, set)):
            items = []
            for item in list(value)[:_MAX_ITEMS]:
                ok, clean = _scalar(item)
                if ok:
                    items.append(clean)
            out[key] = items
    return out


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Alert:
    """Something a person should know about a run (or a budget): a threshold crossed, a trip, a call that waits.

    Build one to send your own (``alerts.submit(Alert(...))``). ``facts`` are made JSON-ready with
    :func:`safe_facts` (names, counts, limits: never arguments, results or prompts). ``dedup_key`` makes an
    alert happen once: the same key submitted again to the same :class:`~loopguard_core.alerts.Alerts` is
    dropped (``None``: never deduplicated). Keys loopguard uses::

        ("threshold", scope, run_id, metric, 0.8)          # a run crossed 80% of a ceiling
        ("trip", scope, run_id, reason, tool_or_model)     # a refused call
        ("approval", request_id)                           # a gated call waits for a person
        ("budget", name, period_start, metric, 0.8)        # the shape a named budget uses
    """

    kind: str
    severity: str
    title: str
    text: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    scope: str | None = None
    agent: str | None = None
    dedup_key: DedupKey | None = None
    created_at: datetime = field(default_factory=_utc_now)
    #: unique per alert (sent as ``X-Loopguard-Alert-Id`` / ``Idempotency-Key``; the same on every retry)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise TypeError(f"Alert kind must be a non-empty str, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Alert severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not isinstance(self.title, str) or not self.title:
            raise TypeError(f"Alert title must be a non-empty str, got {self.title!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"Alert text must be a str, got {type(self.text).__name__}")
        for name in ("session_id", "scope", "agent"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Alert {name} must be a str or None, got {type(value).__name__}")
        if self.dedup_key is not None:
            if not isinstance(self.dedup_key, tuple) or not self.dedup_key:
                raise TypeError(f"Alert dedup_key must be a non-empty tuple or None, got {self.dedup_key!r}")
            for part in self.dedup_key:
                if not _scalar(part)[0]:
                    raise TypeError(f"Alert dedup_key parts must be str, int, float, bool or None, got {part!r}")
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            raise TypeError("Alert created_at must be a timezone-aware datetime (UTC)")
        if not isinstance(self.facts, Mapping):
            raise TypeError(f"Alert facts must be a mapping, got {type(self.facts).__name__}")
        object.__setattr__(self, "facts", MappingProxyType(safe_facts(self.facts)))
        object.__setattr__(self, "created_at", self.created_at.astimezone(timezone.utc))

    @property
    def dedup_id(self) -> str:
        """A short stable string for ``dedup_key`` (PagerDuty's ``dedup_key``, the ``X-Loopguard-Dedup-Key``
        header): the same key gives the same id in every process; an alert with no key gets its own id."""
        if self.dedup_key is None:
            return f"loopguard-{self.id}"
        text = json.dumps(list(self.dedup_key), separators=(",", ":"), ensure_ascii=True)
        return "loopguard-" + hashlib.sha256(text.encode()).hexdigest()[:40]

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready view every format starts from (and what a dead-letter line holds)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "facts": dict(self.facts),
            "session_id": self.session_id,
            "scope": self.scope,
            "agent": self.agent,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "dedup_key": None if self.dedup_key is None else list(self.dedup_key),
            "dedup_id": self.dedup_id,
        }

    @classmethod
    def threshold(
        cls,
        *,
        subject: str,
        metric: str,
        used: float,
        limit: float,
        threshold: float,
        dedup_key: DedupKey,
        session_id: str | None = None,
        scope: str | None = None,
        agent: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Alert:
        """A warning that ``subject`` (``"run 1f3a"``, ``"budget 'tenant-a' today"``) has used ``used`` of
        ``limit`` for ``metric`` (``"max_cost_usd"``), crossing ``threshold`` (0.8). Budgets build theirs here."""
        share = used / limit if limit else 1.0
        pct = f"{math.floor(threshold * 100 + 1e-9)}%"
        title = f"loopguard: {subject} passed {pct} of {metric}"
        text = (
            f"{subject} has used {_num(used)} of {metric}={_num(limit)} ({share:.0%}). "
            "At the limit loopguard refuses the next call that would exceed it."
        )
        details = {"metric": metric, "used": used, "limit": limit, "share": round(share, 4), "threshold": threshold}
        if facts:
            details.update(facts)
        return cls(
            kind="threshold",
            severity="warning",
            title=title,
            text=text,
            facts=details,
            session_id=session_id,
            scope=scope,
            agent=agent,
            dedup_key=dedup_key,
        )


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4f}".rstrip("0").rstrip(".")
