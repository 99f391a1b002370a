"""Idempotency records in Redis (extra ``redis``): shared by every process and host that names the server.

One hash per record, ``<namespace>:se:<key>`` (the key is a digest), with the fields ``a`` (arguments digest),
``s`` (``f`` in flight, ``c`` completed), ``t`` (claim token), ``c``/``e``/``l`` (created, expires, lease end:
epoch seconds) and ``o`` (outcome). Each operation is one Lua script, so a claim reads and writes atomically
and two workers can never both take the same key. Time is Redis ``TIME`` (one clock for every host) unless a
``clock`` is injected. Every hash also carries a Redis expiry (``PEXPIRE``) at its own expiry, so Redis
removes expired records by itself; :meth:`RedisSideEffects.purge_expired` is only needed with an injected clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._extras import require
from ..errors import StoreError
from ..stores.redis import redact_url
from ._base import (
    Claim,
    SideEffectRecord,
    WallClock,
    check_claim,
    check_clock,
    check_completion,
    check_key,
    check_seconds,
    check_token,
    state_of,
)

__all__ = ["RedisSideEffects"]

_T = TypeVar("_T")
_PURPOSE = "The Redis side-effect store (RedisSideEffects / side_effect_store('redis://...'))"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")

_PRELUDE = """
pcall(function() redis.replicate_commands() end)
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function ms(x) return string.format('%d', math.ceil(x * 1000) + 1000) end
"""

# KEYS[1] record; ARGV: now ('' = Redis TIME), args digest, token, lease s, ttl s, take over ('1'/'0').
_CLAIM = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local digest, token = ARGV[2], ARGV[3]
local lease, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local f = redis.call('HMGET', KEYS[1], 'a', 's', 't', 'c', 'e', 'l', 'o')
if f[2] and tonumber(f[5]) > now then
  local mine = f[2] == 'f' and f[3] == token
  local lapsed = f[2] == 'f' and tonumber(f[6]) <= now
  if mine or not (lapsed and ARGV[6] == '1' and f[1] == digest) then
    return {'existing', fmt(now), f[1], f[2], f[3], f[4], f[5], f[6], f[7] or false}
  end
end
local keep = math.max(ttl, lease)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'a', digest, 's', 'f', 't', token, 'c', fmt(now), 'e', fmt(now + keep),
  'l', fmt(now + lease))
redis.call('PEXPIRE', KEYS[1], ms(keep))
return {'claimed', fmt(now), digest, 'f', token, fmt(now), fmt(now + keep), fmt(now + lease), false}
"""
)

# KEYS[1] record; ARGV: now, token, ttl s, outcome bytes.
_COMPLETE = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 's', 't')
if not f[1] or f[2] ~= ARGV[2] then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 's', 'c', 'o', ARGV[4], 'e', fmt(now + ttl), 'l', fmt(now))
redis.call('PEXPIRE', KEYS[1], ms(ttl))
return 1
"""
)

# KEYS[1] record; ARGV: token ('' = whatever is there).
_RELEASE = """
if ARGV[1] == '' then return redis.call('DEL', KEYS[1]) end
local f = redis.call('HMGET', KEYS[1], 's', 't')
if f[1] == 'f' and f[2] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] record; ARGV: now.
_GET = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'a', 's', 't', 'c', 'e', 'l', 'o')
return {fmt(now), f[1] or false, f[2] or false, f[3] or false, f[4] or false, f[5] or false, f[6] or false,
  f[7] or false}
"""
)

# KEYS[1] record; ARGV: now. Deletes it if it has expired by that clock.
_PURGE = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local e = redis.call('HGET', KEYS[1], 'e')
if e and tonumber(e) <= now then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _record(key: str, fields: Sequence[Any]) -> SideEffectRecord | None:
    digest, state, token, created, expires, lease, outcome = fields
    if state is None:
        return None
    return SideEffectRecord(
        key=key,
        args_digest=_text(digest),
        state="completed" if _text(state) == "c" else "in_flight",
        created_at=float(_text(created)),
        expires_at=float(_text(expires)),
        lease_expires_at=float(_text(lease)),
        outcome=None if outcome is None else bytes(outcome),
        token=_text(token),
    )


class RedisSideEffects:
    """Records in the Redis server at ``url`` (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://``).

    ``namespace`` prefixes every key (also settable as ``?namespace=`` in the URL); ``socket_timeout`` and
    ``socket_connect_timeout`` bound how long a call waits for Redis before :class:`StoreError`; ``clock``
    replaces Redis ``TIME`` (tests). Other keyword arguments go to ``redis.Redis.from_url``. Nothing connects
    until the first call.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "lg",
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        clock: WallClock | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a Redis URL such as 'redis://127.0.0.1:6379/0', got {url!r}")
        redis = require("redis", extra="redis", purpose=_PURPOSE)
        self._errors = require("redis.exceptions", extra="redis", purpose=_PURPOSE)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        namespace = next((v for k, v in query if k == "namespace"), namespace)
        url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "namespace"])))
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise ValueError(f"namespace must be 1-64 letters, digits, '_', '.' or '-', got {namespace!r}")
        self.namespace = namespace
        self.url = redact_url(url)
        self._clock = check_clock(clock)
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=check_seconds("socket_timeout", socket_timeout),
                socket_connect_timeout=check_seconds("socket_connect_timeout", socket_connect_timeout),
                **options,
            )
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {self.url!r}: {exc}") from exc
        self._claim = self._client.register_script(_CLAIM)
        self._complete = self._client.register_script(_COMPLETE)
        self._release = self._client.register_script(_RELEASE)
        self._get = self._client.register_script(_GET)
        self._purge = self._client.register_script(_PURGE)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:se:{key}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    def _call(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except (self._errors.ConnectionError, self._errors.TimeoutError) as exc:
            raise StoreError(
                f"the side-effect store at {self.url} could not be reached ({type(exc).__name__}: {exc}): "
                "check that Redis is running there and reachable from this host (URL, port, password, TLS), "
                "or raise socket_timeout= if it is only slow; the call was not made"
            ) from exc
        except self._errors.RedisError as exc:
            raise StoreError(
                f"the side-effect store at {self.url} answered with an error ({type(exc).__name__}: {exc}): "
                f"check the server (is it read-only, out of memory, or is another program using the "
                f"{self.namespace!r} namespace?)"
            ) from exc

    # -- the protocol -----------------------------------------------------------------------------
    def claim(
        self,
        key: str,
        args_digest: str,
        token: str,
        *,
        lease_seconds: float,
        ttl_seconds: float,
        take_over: bool = False,
    ) -> Claim:
        lease, ttl = check_claim(key, args_digest, token, lease_seconds, ttl_seconds)
        args = [self._now(), args_digest, token, repr(lease), repr(ttl), "1" if take_over else "0"]
        reply = self._call(lambda: self._claim(keys=[self._key(key)], args=args))
        verdict, now = _text(reply[0]), float(_text(reply[1]))
        record = _record(key, reply[2:])
        if record is None:  # pragma: no cover - the script always returns a record
            raise StoreError(f"the side-effect store at {self.url} gave an unreadable answer to a claim")
        return Claim("claimed" if verdict == "claimed" else state_of(record, now, token), record)

    def complete(self, key: str, token: str, outcome: bytes, *, ttl_seconds: float) -> bool:
        ttl = check_completion(key, token, outcome, ttl_seconds)
        args = [self._now(), token, repr(ttl), outcome]
        return bool(self._call(lambda: self._complete(keys=[self._key(key)], args=args)))

    def release(self, key: str, token: str | None = None) -> bool:
        check_key(key)
        check_token(token, optional=True)
        return bool(self._call(lambda: self._release(keys=[self._key(key)], args=[token or ""])))

    def get(self, key: str) -> SideEffectRecord | None:
        check_key(key)
        reply = self._call(lambda: self._get(keys=[self._key(key)], args=[self._now()]))
        record = _record(key, reply[1:])
        if record is None or record.expires_at <= float(_text(reply[0])):
            return None
        return record

    def purge_expired(self) -> int:
        def run() -> int:
            gone = 0
            for name in self._client.scan_iter(match=f"{self.namespace}:se:*", count=1000):
                gone += int(self._purge(keys=[name], args=[self._now()]))
            return gone

        return self._call(run)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisSideEffects({self.url!r}, namespace={self.namespace!r})"
