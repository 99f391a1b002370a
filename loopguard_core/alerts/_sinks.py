"""Where alerts go: your own function, or a webhook (JSON, Slack, PagerDuty). Each runs in its own worker thread."""

from __future__ import annotations

import email.utils
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from .._extras import require
from ..errors import LoopGuardError
from ._alert import SEVERITIES, Alert
from ._formats import Format, JSONFormat
from ._signing import SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    import httpx

__all__ = ["AlertDeliveryError", "CallbackSink", "Sink", "WebhookSink"]


class AlertDeliveryError(LoopGuardError, RuntimeError):
    """A sink could not deliver an alert. ``retryable`` says whether trying again may help (a connection
    error, a timeout, HTTP 5xx/408/429); ``retry_after`` is the wait the receiver asked for, in seconds.

    A custom sink raises it with ``retryable=False`` to give up at once (the alert goes to the dead-letter
    log); any other exception a sink raises is retried."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@runtime_checkable
class Sink(Protocol):
    """Delivers one alert or raises (:class:`AlertDeliveryError` to say whether a retry may help).

    ``name`` labels the sink in logs, stats and the dead-letter log (never a secret). Optional methods:
    ``accepts(alert) -> bool`` (a filter; default: everything) and ``close()``."""

    name: str

    def send(self, alert: Alert) -> None: ...


def _severity(value: str) -> int:
    if value not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {SEVERITIES}, got {value!r}")
    return SEVERITIES.index(value)


class CallbackSink:
    """Calls ``fn(alert)`` in the sink's worker thread (never in the guarded call's thread). An exception is
    retried with back-off like a failed request; raise ``AlertDeliveryError(..., retryable=False)`` to give up."""

    def __init__(self, fn: Callable[[Alert], object], *, name: str | None = None, min_severity: str = "info") -> None:
        if not callable(fn):
            raise TypeError(f"CallbackSink needs a callable, got {fn!r}")
        self.fn = fn
        self.name = name or f"callback:{getattr(fn, '__qualname__', type(fn).__name__)}"
        self._min = _severity(min_severity)

    def accepts(self, alert: Alert) -> bool:
        return SEVERITIES.index(alert.severity) >= self._min

    def send(self, alert: Alert) -> None:
        self.fn(alert)

    def __repr__(self) -> str:
        return f"CallbackSink({self.name!r})"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class WebhookSink:
    """POSTs each alert as JSON to ``url`` in ``format`` (:class:`JSONFormat` by default, :class:`SlackFormat`,
    :class:`PagerDutyFormat`).

    - ``secret``: signs the body (``X-Loopguard-Signature: t=<unix>,v1=<hex>``; see :func:`verify_signature`).
    - ``timeout``: seconds for each phase of a request (connect, write, read).
    - Every request carries ``X-Loopguard-Alert-Id`` and ``Idempotency-Key`` (the alert's id, the same on every
      retry) and ``X-Loopguard-Dedup-Key`` (:attr:`Alert.dedup_id`), so a receiver can drop a duplicate.
    - Delivered means a 2xx answer. 5xx, 408, 429 (after its ``Retry-After``), timeouts and connection errors
      are retried; any other answer (400, 401, 403, 404, a redirect) is final and goes to the dead-letter log.

    Needs the ``alerts`` extra (``httpx``). The URL is a secret for Slack and many others: ``name`` (the sink's
    label in logs, stats and the dead-letter log) shows only its scheme and host.
    """

    def __init__(
        self,
        url: str,
        *,
        format: Format | None = None,
        secret: str | bytes | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        min_severity: str = "info",
        client: httpx.Client | None = None,
    ) -> None:
        self._httpx: Any = require("httpx", extra="alerts", purpose="WebhookSink (alerts over HTTP)")
        if not isinstance(url, str):
            raise TypeError(f"WebhookSink needs the webhook's URL as a str, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("WebhookSink needs an http:// or https:// URL with a host")
        fmt = JSONFormat() if format is None else format
        if not isinstance(fmt, Format):
            raise TypeError(f"format must be JSONFormat(), SlackFormat() or PagerDutyFormat(...), got {fmt!r}")
        if secret is not None and (not isinstance(secret, (str, bytes)) or not secret):
            raise TypeError("secret must be a non-empty str or bytes, or None")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.url = url
        self.format = fmt
        self.timeout = float(timeout)
        self._secret = secret
        self._headers = dict(headers or {})
        port = f":{parts.port}" if parts.port else ""
        self.name = name or f"{fmt.name}:{parts.scheme}://{parts.hostname}{port}"
        self._min = _severity(min_severity)
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()

    def accepts(self, alert: Alert) -> bool:
        return SEVERITIES.index(alert.severity) >= self._min

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self._httpx.Client(timeout=self.timeout, follow_redirects=False)
            return self._client

    def body(self, alert: Alert) -> bytes:
        """The exact bytes sent for ``alert`` (what the signature covers)."""
        payload = self.format.render(alert)
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")

    def send(self, alert: Alert) -> None:
        try:
            body = self.body(alert)
        except Exception as exc:  # a format that cannot render this alert will not render it on a retry either
            raise AlertDeliveryError(f"{self.format!r} could not render the alert: {exc!r}", retryable=False) from exc
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "loopguard-alerts",
            **self._headers,
            "X-Loopguard-Alert-Id": alert.id,
            "Idempotency-Key": alert.id,
            "X-Loopguard-Dedup-Key": alert.dedup_id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        httpx = self._httpx
        try:
            response = self._http().post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise AlertDeliveryError(f"{type(exc).__name__}: {self._scrub(str(exc))}", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in (408, 429)
        detail = self._scrub(response.text[:200].strip())
        raise AlertDeliveryError(
            f"HTTP {status}" + (f": {detail}" if detail else ""),
            retryable=retryable,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")) if retryable else None,
            status=status,
        )

    def _scrub(self, text: str) -> str:
        # An error message must not carry the URL's path or query (a Slack webhook's token is its path).
        parts = urlsplit(self.url)
        for secret in (self.url, parts.path, parts.query):
            if secret and len(secret) > 1:
                text = text.replace(secret, "<redacted>")
        return text

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._own_client:
            client.close()

    def __repr__(self) -> str:
        return f"WebhookSink({self.name!r}, format={self.format!r})"
