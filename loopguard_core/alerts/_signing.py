"""HMAC-SHA256 signatures for webhook bodies, in the shape Stripe made familiar.

The header is ``X-Loopguard-Signature: t=<unix seconds>,v1=<hex>``, where ``hex`` is
``HMAC-SHA256(secret, f"{t}." + body)`` over the exact bytes of the request body. The receiver recomputes it,
compares in constant time, and refuses a timestamp older than its tolerance (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature"]

SIGNATURE_HEADER = "X-Loopguard-Signature"


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("a webhook secret must be a non-empty str or bytes")
    return secret


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Loopguard-Signature`` header value for ``body``: ``t=<unix>,v1=<hex>``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_digest(_key(secret), t, body)}"


def verify_signature(
    secret: str | bytes | list[str | bytes],
    header: str | None,
    body: bytes | str,
    tolerance: float | None = 300,
    *,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (the ``X-Loopguard-Signature`` value) signs ``body`` with ``secret``, made within
    ``tolerance`` seconds of ``now`` (None: any age). ``secret`` may be a list (a rotation: old and new both verify).

    Pass the raw request body, byte for byte, before any JSON parsing. Never raises on a malformed header.
    """
    if not header or not isinstance(header, str):
        return False
    raw = body.encode("utf-8") if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - timestamp) > tolerance:
        return False
    secrets = secret if isinstance(secret, list) else [secret]
    for one in secrets:
        try:
            expected = _digest(_key(one), timestamp, raw)
        except ValueError:
            continue
        if any(hmac.compare_digest(expected, given) for given in candidates):
            return True
    return False
