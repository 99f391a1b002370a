"""Breaker state in Redis: one breaker shared by every process and host that names the same scope.

Each step (admit or record a tool or model call, reset) is one Lua call: one round trip that decides and
records atomically, so two workers can never both take the last unit of a budget. The store's own client on
one server calls the steps as Redis Functions (FCALL; the library is loaded on first use), elsewhere, or where
the server has no Functions, as scripts (EVALSHA). The Lua code ships as package data (``stores/lua``) and
mirrors :mod:`._run_state`'s ceilings and state machine step for step. Loop judgement is written once, in
Python (:mod:`loopguard_core.detection`): a tool admission hands back the run's window of finished calls
(digests only, appended atomically by ``record_tool``, packed newest first; only the steps pushed since the
window's version this process holds), the client alone decides whether any detector can fire and the
detectors judge it here, and only a refusal costs a second round trip (``refuse_tool``: the admission is
taken back and the breaker trips).

- Idempotent per call id: a retried request gets the first verdict back and never counts twice.
- Money is integer micro-USD; time is Redis ``TIME`` (one clock for every host), not the caller's.
- Keys share one hash tag per run, ``{lg:<scope>:<run>}``, so a Redis Cluster keeps a run in one slot.
- Loop memory is bounded (``LoopDetection.window`` steps, ``LoopDetection.memory`` signatures in
  flight, 4,096 call ids) and every key expires
  about ``ttl_seconds`` after the run's last write (the TTL is set when a key is created and refreshed
  every ``ttl_seconds / 64``), so finished runs do not accumulate.
- The HALF_OPEN probe is a reservation with an expiry: exactly one caller probes; if it never reports,
  another may probe after the recovery window.
- Admitted model calls reserve their projected tokens and micro-USD until they report back (or the
  reservation expires), so concurrent workers cannot overshoot a ceiling together.

With ``defer_seconds`` (off by default) a tool outcome waits in this process and rides with the same run's
next step, which applies it first, exactly as ``record_tool`` would have: one round trip per guarded tool call
in the steady state. It is sent on its own before a snapshot, when a step of the store finds it older than
``defer_seconds``, on ``flush()``/``close()`` and at exit. Within one process nothing changes; other processes
of the same run see the call finish later (docs/deployment.md, "Redis round trips per guarded call").

When Redis cannot be reached, ``failure_policy="closed"`` (the default) refuses the call with reason
``store_unavailable`` within the socket timeouts (0.25 s by default; redis-py's own retries are off, a
debit is never re-sent blindly); ``failure_policy="open"`` admits it and logs a rate-limited warning.

A busy store is not a down one: at most ``max_connections`` checks per process (per event loop for the
async twins) talk to Redis at once, each on its own pooled connection; the others wait their turn, up to
``pool_timeout``. Waiting for a connection never starts the outage back-off, and a command that could not
get a connection was never sent, so it is the one thing that may safely be tried again.

``redis+cluster://host:port,host:port/0`` (``rediss+cluster://`` for TLS) talks to a Redis Cluster: every
key of a run carries one hash tag, so each script runs on the one master that holds the run's slot.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .._extras import require
from ..detection import Call, Finding, MalformedWindow, PackedWindow, Step, pack_step
from ..detection._policy import finding_facts
from ..detection._step import _new_step, newest_step, without_siblings
from ..errors import StoreError
from ..limits import Limits
from ..state import BreakerState
from ._idle import IdleConnections
from ._slots import Slots
from .base import (
    ModelRequest,
    ModelUsage,
    RunKey,
    RunSnapshot,
    ToolOutcome,
    ToolRequest,
    Transition,
    Verdict,
    _new_verdict,
)

__all__ = ["RedisStore", "key_pattern", "redact_url"]

logger = logging.getLogger("loopguard.stores.redis")

_STEPS = (
    "admit_tool",
    "record_tool",
    "refuse_tool",
    "admit_model",
    "record_model",
    "reset",
    "snapshot",
    "steer",
    "settle",
)
_SUFFIXES = (":h", ":seenq", ":res", ":resmin", ":w", ":p")
_STATES = {"c": BreakerState.CLOSED, "o": BreakerState.OPEN, "h": BreakerState.HALF_OPEN}
_POLICIES = ("closed", "open")
_CLOCKS = ("server", "request")
_US = 1_000_000
_NO_FACTS: Mapping[str, Any] = MappingProxyType({})
_WARN_EVERY = 30.0  # seconds between two warnings about the same outage
# Options a URL query string may carry (everything else goes to redis-py).
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "failure_policy": str,
    "ttl_seconds": float,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "outage_backoff_seconds": float,
    "reservation_seconds": float,
    "namespace": str,
    "max_connections": int,
    "pool_timeout": float,
    "defer_seconds": float,
}
# URL schemes of a Redis Cluster (the value: TLS or not).
_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
# What redis-py says when no pooled connection could be had: the command was never sent.
_POOL_MESSAGES = frozenset({"No connection available.", "Too many connections"})

# Bumped in a forked child: the connection gate of a store is rebuilt there (a thread of the parent may
# have held a slot at the fork, and that slot would never come back).
_fork_generation = [0]
# Deferred outcomes (see RedisStore: defer_seconds): at most this many wait per run, and admissions whose
# outcome may be deferred are remembered for this many calls per run and this many runs.
_HELD_RUNS = 1_024  # runs whose window this process holds (about 4 kB each at most), then it starts over
_PENDING_MAX = 16
_CALM_MAX = 256
_CALM_RUNS = 1_024
# Stores with deferred outcomes to send when the interpreter exits.
_live_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _settle_at_exit() -> None:
    for store in list(_live_stores):
        try:
            store.flush()
        except Exception:  # pragma: no cover - exit path, best effort
            logger.debug("loopguard could not send deferred outcomes at exit", exc_info=True)


atexit.register(_settle_at_exit)


def _after_fork() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _lua(name: str) -> str:
    return resources.files("loopguard_core.stores").joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _script_text(step: str) -> str:
    """A step as a script (EVALSHA): the shared code, ``begin(KEYS, ARGV)``, the step."""
    return _lua("_script") + _lua("_common") + "\nbegin(KEYS, ARGV)\n" + _lua(step)


_NO_FUNCTIONS = ("unknown command", "unsupported command", "not support")  # Redis < 7, proxies (Envoy, ...)
_READING = frozenset({"snapshot"})  # steps that never write: they run on a full server (maxmemory) too
_READ_ONLY = ", flags = { 'no-writes' }"
_FUNCTIONS_RETRY = 60.0  # seconds of scripts after a passing failure to use Functions, before they are tried again


def _library() -> tuple[str, dict[str, str]]:
    """Every step as a function of one Redis Function library (Redis >= 7, Valkey), and the function of each step.

    The shared code is defined once, when the library is loaded, instead of on every call as a script does (about
    half of a step's time inside Redis). Library and functions are named by a digest of the code, so processes
    of different loopguard versions on one server each call their own."""
    steps = "".join(
        f"redis.register_function{{function_name = 'lg_@_{step}', callback = function(k, a)\nbegin(k, a)\n{_lua(step)}"
        f"\nend{_READ_ONLY if step in _READING else ''}}}\n"
        for step in _STEPS
    )
    body = _lua("_common") + "\n" + steps
    tag = _sha1(body)[:16]
    code = f"#!lua name=loopguard_{tag}\n" + body.replace("'lg_@_", f"'lg_{tag}_")
    return code, {step: f"lg_{tag}_{step}" for step in _STEPS}


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _escape(part: str) -> str:
    # ':' separates scope from run and braces delimit the cluster hash tag: keep both unambiguous.
    return part.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


def key_pattern(scope: str, namespace: str = "lg") -> str:
    """A ``SCAN MATCH`` pattern for every key of ``scope`` (e.g. to clear one tenant by hand)."""
    prefix = f"{{{_escape(namespace)}:{_escape(scope)}:"
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


def _us(seconds: float) -> int:
    return round(seconds * _US)


def _msgpack(values: Sequence[int | float | None]) -> bytes:
    """Values as a msgpack stream (nil, unsigned ints, doubles): the scripts read it with one C call."""
    out = bytearray()
    for value in values:
        if value is None:
            out.append(0xC0)
        elif isinstance(value, float):
            out += b"\xcb" + struct.pack(">d", value)
        elif 0 <= value < 0x80:
            out.append(value)
        elif 0 <= value < 1 << 32:
            out += b"\xce" + struct.pack(">I", value)
        elif 0 <= value < 1 << 63:
            out += b"\xcf" + struct.pack(">Q", value)
        else:
            raise ValueError(f"cannot pass {value!r} to the Redis scripts")
    return bytes(out)


_LOWER_HEX = "0123456789abcdef"


def _hex(value: str, size: int) -> str:
    """``value`` as ``size`` bytes of hex: the breaker's digests pass through, any other string is hashed
    (a store may be driven directly, with readable signatures)."""
    if len(value) == 2 * size:
        if not value.strip(_LOWER_HEX):  # the breaker's own digests: lowercase hex already, nothing to check
            return value
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(float(_text(value)))


def _decodes(client: Any) -> bool:
    """Whether a redis-py client (sync, async or cluster) decodes replies to str (``decode_responses=True``)."""
    try:
        return bool(client.get_encoder().decode_responses)
    except Exception:  # not a redis-py client, or one that cannot tell: its first reply will
        return False


def _needs_command_name(pool: Any) -> bool:
    """Whether the pool's ``get_connection`` takes a required ``command_name`` (redis-py 5)."""
    import inspect

    try:
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):  # pragma: no cover - a pool whose signature cannot be read
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def redact_url(url: str) -> str:
    """The URL without its password (safe for logs, errors and trip facts)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


class _HeldWindow(NamedTuple):
    """A run's window as this process last saw it: packed steps, newest first, as of the window's ``version``."""

    version: int
    data: bytes  # the window's steps and possibly older ones after them (never read)
    depth: int  # steps in data
    limit: int  # LoopDetection.window of the limits it was read with
    newest: bytes  # the newest step (Redis checks that the steps it sends follow this one)


# NamedTuples the hot path builds without NamedTuple.__new__'s Python frame (every field given, in order; verdicts
# and steps: base._new_verdict, detection._step._new_step).
_new_held: Callable[[type[_HeldWindow], tuple[Any, ...]], _HeldWindow] = tuple.__new__
_new_call: Callable[[type[Call], tuple[Any, ...]], Call] = tuple.__new__


class _LimitArgs:
    """The configuration argument of each script for one Limits object, computed once (per tool for
    tool calls): ttl and limits as one msgpack argument instead of a dozen to encode per call."""

    __slots__ = ("limits", "model", "record", "steer", "tools", "ttl", "window")

    def __init__(self, limits: Limits, ttl_ms: int, reservation_us: int | None) -> None:
        self.limits, self.ttl = limits, ttl_ms
        self.tools: dict[str, bytes] = {}
        reserve = reservation_us is not None and (limits.max_tokens is not None or limits.max_cost_usd is not None)
        self.model = _msgpack(
            (
                ttl_ms,
                limits.max_turns,
                limits.max_tokens,
                limits.max_cost_micros,
                _us(limits.recovery_seconds),
                None if limits.max_seconds is None else _us(limits.max_seconds),
                reservation_us if reserve else None,
                1 if limits.observing else 0,
            )
        )
        self.record = _msgpack((ttl_ms, limits.loop.window if limits.loop.enabled else None))
        self.window = str(limits.loop.window) if limits.loop.enabled else ""  # of a deferred outcome
        self.steer = _msgpack((ttl_ms, limits.max_refusals))

    def tool(self, name: str) -> bytes:
        config = self.tools.get(name)
        if config is None:
            limits, loop = self.limits, self.limits.loop
            checked = loop.enabled and name not in loop.exempt_tools
            config = _msgpack(
                (
                    self.ttl,
                    limits.max_tool_calls,
                    limits.max_calls_per_tool.get(name),
                    limits.max_consecutive_failures,
                    1 if checked else 0,
                    _us(limits.recovery_seconds),
                    None if limits.max_seconds is None else _us(limits.max_seconds),
                    1 if limits.observing else 0,
                    loop.window,
                    loop.memory,
                )
            )
            if len(self.tools) < 4_096:  # tool names come from models: keep the cache bounded
                self.tools[name] = config
        return config


class RedisStore:
    """Breaker state in Redis (extra ``redis``), shared across processes and hosts.

    Build it from a URL (``Breaker(store="redis://host:6379/0", scope="crew-42")`` does this for you;
    ``redis+cluster://host:7000,host:7001/0`` for a Redis Cluster), or pass your own ``client`` (a
    ``redis.Redis`` or ``redis.cluster.RedisCluster``; then its timeouts and retries are yours to set: turn
    its retries off, ``retry=Retry(NoBackoff(), 0)``, or a debit may be re-sent and counted twice).

    Options: ``failure_policy`` ``"closed"`` (refuse when Redis is unreachable) or ``"open"`` (admit and
    warn); ``ttl_seconds`` after a run's last write before its keys expire (default 24 h, give or take
    1/64 of it);
    ``socket_timeout`` / ``socket_connect_timeout`` (default 0.25 s each), the bound on how long a call
    waits for an unreachable Redis; ``outage_backoff_seconds`` during which, after a failure, calls are
    answered by the policy without trying Redis again (default 1 s; 0 retries every call);
    ``max_connections`` (default 64): checks of this process that talk to Redis at once, each on a pooled
    connection of its own (per event loop for the async twins), and ``pool_timeout`` (default 5 s): how long
    any further check waits for one of them (waiting is not an outage: it never starts the back-off);
    ``reservation_seconds`` after which a model call that never reported back releases its reservation
    (default 600); ``namespace`` of the keys (default ``lg``); ``clock`` ``"server"`` (Redis TIME) or
    ``"request"`` (the breaker's injected clock; for tests with a FakeClock, single host only);
    ``digest_key`` (default ``$LOOPGUARD_DIGEST_KEY``): the key of every digest this store writes (call,
    answer and request-shape digests, and the word hashes kept for the paraphrase rule), shared by the
    processes of a scope. Without one, call digests are plain BLAKE2b and each process keys its own word
    hashes. Other keyword arguments go to redis-py's connection pool (``redis.BlockingConnectionPool.from_url``)
    or, for a cluster, to ``redis.cluster.RedisCluster``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        failure_policy: str = "closed",
        ttl_seconds: float = 86_400.0,
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        outage_backoff_seconds: float = 1.0,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        reservation_seconds: float | None = 600.0,
        namespace: str = "lg",
        clock: str = "server",
        digest_key: str | bytes | None = None,
        defer_seconds: float | None = None,
        **redis_options: Any,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"RedisStore needs a URL such as 'redis://127.0.0.1:6379/0', got {url!r}")
        if failure_policy not in _POLICIES:
            raise ValueError(f"failure_policy must be 'closed' or 'open', got {failure_policy!r}")
        if clock not in _CLOCKS:
            raise ValueError(f"clock must be 'server' (Redis TIME) or 'request', got {clock!r}")
        for name, value in (
            ("ttl_seconds", ttl_seconds),
            ("socket_timeout", socket_timeout),
            ("socket_connect_timeout", socket_connect_timeout),
            ("pool_timeout", pool_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if isinstance(outage_backoff_seconds, bool) or not isinstance(outage_backoff_seconds, (int, float)):
            raise ValueError(f"outage_backoff_seconds must be a number >= 0, got {outage_backoff_seconds!r}")
        if not outage_backoff_seconds >= 0:
            raise ValueError(f"outage_backoff_seconds must be a number >= 0, got {outage_backoff_seconds!r}")
        if type(max_connections) is not int or not 0 < max_connections <= 100_000:
            raise ValueError(f"max_connections must be an int from 1 to 100,000, got {max_connections!r}")
        if pool_timeout > 86_400:
            raise ValueError(f"pool_timeout must be at most 86,400 seconds, got {pool_timeout!r}")
        if reservation_seconds is not None and (
            isinstance(reservation_seconds, bool)
            or not isinstance(reservation_seconds, (int, float))
            or not reservation_seconds > 0
        ):
            raise ValueError(f"reservation_seconds must be > 0 or None, got {reservation_seconds!r}")
        if defer_seconds is not None and (
            isinstance(defer_seconds, bool) or not isinstance(defer_seconds, (int, float)) or not defer_seconds >= 0
        ):
            raise ValueError(f"defer_seconds must be a number of seconds >= 0 or None, got {defer_seconds!r}")
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        if digest_key is None:
            digest_key = os.environ.get("LOOPGUARD_DIGEST_KEY") or None
        if digest_key is not None and (not isinstance(digest_key, (str, bytes)) or not digest_key):
            raise ValueError("digest_key must be a non-empty str or bytes (or None)")
        # The key of the digests written to Redis (the key itself never is): processes that share a scope
        # should share it, so a call (or a question reworded) by one process is recognised by another.
        self.digest_key: bytes | None = (
            None if digest_key is None else digest_key.encode() if isinstance(digest_key, str) else digest_key
        )
        self._mac_key = None if self.digest_key is None else _mac_key(self.digest_key)
        self._redis = require("redis", extra="redis", purpose="The Redis breaker store")
        exceptions = require("redis.exceptions", extra="redis", purpose="The Redis breaker store")
        self._errors: tuple[type[BaseException], ...] = (
            exceptions.RedisError,
            OSError,
            getattr(exceptions, "RedisClusterException", exceptions.RedisError),
        )
        self._no_script: type[BaseException] = exceptions.NoScriptError
        self._response_error: type[BaseException] = exceptions.ResponseError
        self._no_permission: type[BaseException] = getattr(exceptions, "NoPermissionError", exceptions.ResponseError)
        self._connection_error: type[BaseException] = exceptions.ConnectionError
        self._pool_error: type[BaseException] | None = getattr(exceptions, "MaxConnectionsError", None)
        self.url = redact_url(url)
        self.failure_policy = failure_policy
        self._raw_url = url
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._ttl = _msgpack((self._ttl_ms,))
        self._server_clock = clock == "server"
        self._backoff = float(outage_backoff_seconds)
        self._pool_timeout = float(pool_timeout)
        self._max_connections = max_connections
        self._reservation_us = None if reservation_seconds is None else _us(reservation_seconds)
        self._namespace = _escape(namespace)
        self._client_options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            **redis_options,
        }
        scheme = url.split("://", 1)[0].lower()
        self._cluster: dict[str, Any] | None = _cluster_options(url) if scheme in _CLUSTER_SCHEMES else None
        # redis-py reads the first occurrence of an option in the URL
        decode = next((v for k, v in parse_qsl(urlsplit(url).query) if k == "decode_responses"), "").upper()
        if redis_options.get("decode_responses") or decode not in ("", "0", "F", "FALSE", "N", "NO"):
            raise ValueError(
                "RedisStore needs replies as bytes (they hold binary digests): leave out decode_responses=True"
            )
        self._pool: Any = None
        self._client_lock = threading.Lock()
        gate_size = max_connections
        if client is None:
            self._owns_client = True
            # A cluster client reaches the cluster when it is made: it is made on first use, so that
            # building a store (a Breaker) never fails because Redis is down at that moment.
            client = None if self._cluster is not None else self._new_client()
        else:
            self._owns_client = False
            if _decodes(client):
                raise ValueError(
                    "RedisStore needs a client that returns bytes: this one was made with decode_responses=True,"
                    " and the store's replies hold binary digests. Pass a client made without it (the default),"
                    " or a URL."
                )
            pool_size = getattr(getattr(client, "connection_pool", None), "max_connections", None)
            if isinstance(pool_size, int) and not isinstance(pool_size, bool) and 0 < pool_size < gate_size:
                gate_size = pool_size  # never ask the user's pool for more connections than it has
        self._client: Any = client
        # The store's own client on one server: FCALL or EVALSHA goes straight to a pooled connection (_direct_call).
        self._direct = self._owns_client and self._pool is not None
        # redis-py 5 requires a command name to get a connection; 6 and later deprecate it (a warning per call).
        self._conn_args: tuple[str, ...] = ("EVALSHA",) if self._direct and _needs_command_name(self._pool) else ()
        self._heads: dict[tuple[str, Sequence[bytes], bool], tuple[int, bytes]] = {}
        self._gate_size = gate_size
        self._gate = Slots(gate_size)
        self._gate_generation = _fork_generation[0]
        # The direct path's connections between its calls (see _idle.py); at most gate_size - 1 wait there, so the
        # client's own commands (script and library loads, ping) find one in the pool once the checks have finished.
        self._idle = IdleConnections(self._pool, gate_size - 1)
        self._texts = {step: _script_text(step) for step in _STEPS}
        # EVALSHA by the script's SHA-1 (computed here, as Redis does); the text is sent only after NOSCRIPT.
        self._shas = {step: _sha1(text) for step, text in self._texts.items()}
        # The store's own client on one server calls the steps as Redis Functions (FCALL), loading the library on
        # the first "Function not found"; a server without them (Redis < 7) or a user not allowed them turns this
        # off for good, and the steps run as scripts. A client passed in, and a cluster, run scripts.
        self._library, self._functions = _library()
        self._use_functions = self._direct
        self._functions_ok = False  # an FCALL has answered: from then on its errors are the steps' own
        self._functions_again = 0.0  # after a passing failure: when to try Functions again (0: not waiting)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncEntry]
        self._async = weakref.WeakKeyDictionary()
        self._async_lock = threading.Lock()
        self._keys: dict[RunKey, tuple[bytes, ...]] = {}
        self._signature_names: dict[str, str] = {}
        self._limit_args: dict[int, _LimitArgs] = {}
        self._down_until = 0.0
        self._down_error = ""
        self._warned_at = -_WARN_EVERY
        self._suppressed = 0
        # Deferred tool outcomes (see the module docstring): run -> [first deferred at, 8 values per outcome...],
        # oldest run first; and, per run, the admissions of this process whose outcome may wait: call key ->
        # [turn, calls] (the key is '=' + call id, or '#' + signature digest for calls without an id).
        self._defer = None if not defer_seconds else float(defer_seconds)
        self._pending: dict[RunKey, list[Any]] = {}
        self._calm: dict[RunKey, dict[str, list[int]]] = {}
        self._pending_lock = threading.Lock()
        self._pending_generation = _fork_generation[0]
        if self._defer is not None:
            _live_stores.add(self)
        # The window of each run as of its version, as the last loop-checked admission left it: the next one sends
        # that version and gets back only the steps pushed since (any consistent pair serves; no lock needed).
        self._held: dict[RunKey, _HeldWindow] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Build a store from ``redis://[:password@]host:port/db`` (``rediss://`` for TLS, ``unix://``).

        The query string may carry this store's options, e.g.
        ``redis://127.0.0.1:6379/0?failure_policy=open&ttl_seconds=3600``; keyword options win.
        """
        if not isinstance(url, str):
            raise TypeError(f"store URL must be a str, got {type(url).__name__}")
        parts = urlsplit(url)
        kept = []
        from_query: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            convert = _URL_OPTIONS.get(key)
            if convert is None:
                kept.append((key, value))
                continue
            try:
                from_query[key] = convert(value)
            except ValueError:
                raise ValueError(f"store URL option {key}={value!r} is not valid in {redact_url(url)}") from None
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
        return cls(clean, **{**from_query, **options})

    def keys(self, run: RunKey) -> tuple[str, ...]:
        """The Redis keys that hold ``run`` (all in one hash slot)."""
        return tuple(key.decode() for key in self._run_keys(run))

    # -- plumbing ----------------------------------------------------------------------------------
    def _run_keys(self, run: RunKey) -> tuple[bytes, ...]:
        keys = self._keys.get(run)
        if keys is None:
            tag = f"{{{self._namespace}:{_escape(run.scope)}:{_escape(run.run_id)}}}"
            keys = tuple((tag + suffix).encode() for suffix in _SUFFIXES)  # encoded once, not per call
            if len(self._keys) >= 1_024:
                self._keys.clear()
            self._keys[run] = keys
        return keys

    def _args_for(self, limits: Limits) -> _LimitArgs:
        cached = self._limit_args.get(id(limits))
        if cached is None or cached.limits is not limits:
            cached = _LimitArgs(limits, self._ttl_ms, self._reservation_us)
            if len(self._limit_args) >= 64:
                self._limit_args.clear()
            self._limit_args[id(limits)] = cached
        return cached

    def _clock(self, now: float) -> str:
        return "" if self._server_clock else str(_us(now))

    def _digest(self, value: str, size: int) -> str:
        """What Redis holds for a signature, shape or outcome digest: ``size`` bytes of hex, keyed with
        ``digest_key`` when there is one (then whoever reads Redis cannot confirm a guessed argument)."""
        if self._mac_key is None:
            return _hex(value, size)
        data = value.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=size, key=self._mac_key).hexdigest()

    def _signature(self, signature: str) -> str:
        """The call's digest as Redis holds it; this process remembers which signature it stands for, so a
        refusal's facts name the caller's own signature, never the stored digest."""
        digest = self._digest(signature, 16)
        if digest != signature:
            names = self._signature_names
            if len(names) >= 4_096:
                names.clear()
            names[digest] = signature
        return digest

    def _own_signature(self, verdict: Verdict) -> Verdict:
        stored = verdict.facts.get("signature")
        if not isinstance(stored, str):
            return verdict
        signature = self._signature_names.get(stored, stored)
        return verdict if signature == stored else verdict._replace(facts={**verdict.facts, "signature": signature})

    def _tool_argv(self, request: ToolRequest, limits: Limits, held: _HeldWindow | None) -> tuple[str | bytes, ...]:
        call_id = "" if request.call_id is None else "=" + request.call_id
        agent = "" if request.agent is None else "=" + request.agent
        config = self._args_for(limits).tool(request.tool)
        signature = self._signature(request.signature)
        known, newest = ("", b"") if held is None else (str(held.version), held.newest)
        return (self._clock(request.now), config, call_id, request.tool, signature, agent, known, newest)

    def _held_window(self, run: RunKey, limits: Limits) -> _HeldWindow | None:
        held = self._held.get(run)
        return held if held is not None and held.limit == limits.loop.window else None

    def _window(
        self, run: RunKey, limits: Limits, held: _HeldWindow | None, reply: tuple[int, bytes, int, int]
    ) -> bytes:
        """The run's window (packed, newest first) from an admission's reply: all of it, or the steps pushed since
        the version this process held, in front of the steps it held; kept as the run's new held window."""
        size, steps, version, delta = reply
        if not delta:
            data, depth = steps, size
        elif held is None:
            raise _Unavailable("admit_tool answered with the newest steps of a window this process does not hold")
        else:
            data, depth = steps + held.data, held.depth + version - held.version
            if depth > held.limit + 32:  # deeper steps are never read again: keep the window's own
                data, depth = PackedWindow(data, size).newest(size), size
        if len(self._held) >= _HELD_RUNS:
            self._held.clear()
        newest = newest_step(data) if size else b""
        self._held[run] = _new_held(_HeldWindow, (version, data, depth, limits.loop.window, newest))
        return data

    def _outcome_fields(self, outcome: ToolOutcome) -> tuple[str | bytes, ...]:
        call_id = "" if outcome.call_id is None else "=" + outcome.call_id
        shape = outcome.shape and self._digest(outcome.shape, 16)
        action, digest = self._digest(outcome.signature, 16), self._digest(outcome.outcome, 8)
        step = _new_step(Step, (0, outcome.tool, action, digest, outcome.flags, shape, outcome.words))
        return (
            call_id,
            outcome.tool,
            action,
            "1" if outcome.failed else "0",
            pack_step(step)[4:],  # the script puts the call's number in front
            digest,  # a failure streak counts the same error again (by its digest)
        )

    def _outcome_argv(self, outcome: ToolOutcome, limits: Limits) -> tuple[str | bytes, ...]:
        return (self._clock(outcome.now), self._args_for(limits).record, *self._outcome_fields(outcome))

    def _refuse_argv(self, request: ToolRequest, finding: Finding, facts: dict[str, Any]) -> tuple[str | bytes, ...]:
        call_id = "" if request.call_id is None else "=" + request.call_id
        agent = "" if request.agent is None else "=" + request.agent
        signature = self._signature(request.signature)
        stored = {**facts, "signature": signature} if "signature" in facts else facts
        return (
            self._clock(request.now),
            self._ttl,
            call_id,
            request.tool,
            signature,
            agent,
            finding.reason,
            str(finding.limit),
            str(facts["observed"]) if "observed" in facts else "",
            json.dumps(stored, default=str),
        )

    def _model_argv(self, request: ModelRequest, limits: Limits) -> tuple[str | bytes, ...]:
        call_id = "" if request.call_id is None else "=" + request.call_id
        tokens, micros = max(0, request.projected_tokens), max(0, request.projected_cost_micros)
        return (self._clock(request.now), self._args_for(limits).model, call_id, str(tokens), str(micros))

    def _usage_argv(self, usage: ModelUsage) -> tuple[str | bytes, ...]:
        call_id = "" if usage.call_id is None else "=" + usage.call_id
        return (
            self._clock(usage.now),
            self._ttl,
            call_id,
            str(max(0, usage.tokens)),
            str(max(0, usage.cost_micros)),
            "1" if usage.failed else "0",
        )

    # -- talking to Redis ---------------------------------------------------------------------------
    def _new_client(self) -> Any:
        """The store's own sync client: a blocking pool of ``max_connections``, no client-side retries."""
        backoff = require("redis.backoff", extra="redis", purpose="The Redis breaker store")
        retry = require("redis.retry", extra="redis", purpose="The Redis breaker store")
        # No client-side retries: a debit re-sent after a timeout may count twice, and an outage
        # would cost seconds of backoff instead of one bounded timeout.
        no_retry = retry.Retry(backoff.NoBackoff(), 0)
        if self._cluster is not None:
            cluster = require("redis.cluster", extra="redis", purpose="The Redis Cluster breaker store")
            nodes = [cluster.ClusterNode(host, port) for host, port in self._cluster["nodes"]]
            options = {k: v for k, v in self._cluster.items() if k != "nodes"}
            return cluster.RedisCluster(
                startup_nodes=nodes,
                retry=no_retry,
                max_connections=self._max_connections,
                **{**options, **self._client_options},
            )
        self._pool = self._redis.BlockingConnectionPool.from_url(
            self._raw_url,
            max_connections=self._max_connections,
            timeout=self._pool_timeout,
            retry=no_retry,
            **self._client_options,
        )
        return self._redis.Redis(connection_pool=self._pool)

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:  # a cluster client, made on first use
            with self._client_lock:
                client = self._client
                if client is None:
                    client = self._client = self._new_client()
        return client

    def _enter(self) -> Slots:
        """Take one of the ``max_connections`` slots, waiting up to ``pool_timeout`` for one."""
        gate = self._gate
        if self._gate_generation != _fork_generation[0]:  # a forked child: slots held by the parent's threads
            gate = self._gate = Slots(self._gate_size)
            self._idle.forget()
            self._gate_generation = _fork_generation[0]
        if gate.acquire(False):
            return gate
        if not gate.acquire(True, self._pool_timeout):
            raise self._busy()
        if self._down_until and time.monotonic() < self._down_until:  # it went down while this call waited
            gate.release()
            raise _Unavailable(self._down_error, sent=False)
        return gate

    # -- deferred outcomes -----------------------------------------------------------------------------
    def _admitted(self, run: RunKey, request: ToolRequest, verdict: Verdict, plain: bool) -> Verdict:
        """Note a plain admission (closed breaker, no probe, not a retry): its outcome may wait for the run's
        next step. Anything else (a probe, a transition, a retried id, a call admitted by another process)
        is recorded at once. ``plain``: the script answered with its plain integer, or with the window and
        "fresh" (a loop-checked tool), which, for a call with an id, also says that Redis holds no outcome for
        that id yet (a report under it is no retry)."""
        if self._defer is None:
            return verdict
        if not verdict.admitted or verdict.probe or verdict.duplicate or verdict.transitions:
            return self._saw(run, verdict)
        if request.call_id is None:
            key = "#" + request.signature
        elif plain:
            key = "=" + request.call_id
        else:
            return verdict
        with self._pending_lock:
            calm = self._calm.get(run)
            if calm is None:
                if len(self._calm) >= _CALM_RUNS:
                    self._calm.clear()
                calm = self._calm[run] = {}
            elif len(calm) >= _CALM_MAX:  # admissions that never report: start over
                calm.clear()
            entry = calm.get(key)
            if entry is None or (request.call_id is not None and entry[0] != verdict.turn):
                # (an id admitted in an earlier model turn names a new call: the older one's outcome is a retry)
                calm[key] = [verdict.turn, 1]
            else:
                entry[1] += 1
            seen = calm.get("")  # the run's turn as this process last saw it
            calm[""] = [verdict.turn if seen is None else max(seen[0], verdict.turn), 0]
        return verdict

    def _saw(self, run: RunKey, verdict: Verdict) -> Verdict:
        """Keep the run's turn as a step of this process saw it (a deferred outcome reports it). After a refusal
        or a change of state, outcomes of calls admitted before are recorded at once (one may settle a probe)."""
        calm = self._calm.get(run)
        if calm is not None:
            if verdict.transitions or not verdict.admitted:
                with self._pending_lock:
                    calm.clear()
            if not verdict.duplicate:  # a retried request reports the turn of its first answer
                seen = calm.get("")
                calm[""] = [verdict.turn if seen is None else max(seen[0], verdict.turn), 0]
        return verdict

    def _deferred(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict | None:
        """Queue ``outcome`` for the run's next step when its admission was a plain one made here: the verdict
        record_tool would give (admitted, the turn seen at admission, no transition), else None."""
        if self._defer is None:
            return None
        key = "#" + outcome.signature if outcome.call_id is None else "=" + outcome.call_id
        with self._pending_lock:
            if self._pending_generation != _fork_generation[0]:
                self._forked()
            calm = self._calm.get(run)
            entry = None if calm is None else calm.get(key)
            if entry is None or calm is None:
                return None
            if entry[1] > 1:
                entry[1] -= 1
            else:
                del calm[key]
            turn = calm.get("", entry)[0]
            queue = self._pending.get(run)
            if queue is None:
                queue = self._pending[run] = [time.monotonic()]
            elif len(queue) > 8 * _PENDING_MAX:  # enough waiting: this one takes them along now
                return None
            queue += (self._clock(outcome.now), self._args_for(limits).window, *self._outcome_fields(outcome))
        return _new_verdict(Verdict, (True, None, False, _NO_FACTS, (), turn, False, False, ()))

    def _forked(self) -> None:
        # A forked child: the parent's deferred outcomes are the parent's to send (under _pending_lock).
        self._pending.clear()
        self._calm.clear()
        self._pending_generation = _fork_generation[0]

    def _take(self, run: RunKey) -> tuple[str | bytes, ...]:
        """The run's deferred outcomes (8 values each, oldest first), handed to the step about to be sent."""
        with self._pending_lock:
            if self._pending_generation != _fork_generation[0]:
                self._forked()
            queue = self._pending.pop(run, None)
        return () if queue is None else tuple(queue[1:])

    def _stale(self, run: RunKey | None) -> list[tuple[RunKey, tuple[str | bytes, ...]]]:
        """Runs but ``run`` whose outcomes waited ``defer_seconds`` already (oldest first), taken to be sent now."""
        assert self._defer is not None
        pending = self._pending
        if len(pending) == 1 and run in pending:  # only run's own wait (they ride with its step): nothing to scan
            return []
        limit = time.monotonic() - self._defer
        with self._pending_lock:
            if self._pending_generation != _fork_generation[0]:
                self._forked()
                return []
            due = []
            for other, queue in self._pending.items():
                if queue[0] > limit:
                    break
                if other != run:
                    due.append(other)
            return [(other, tuple(self._pending.pop(other)[1:])) for other in due]

    def _requeue(self, run: RunKey, values: tuple[str | bytes, ...]) -> None:
        """Outcomes whose step was never sent (no connection to be had): they wait again, in front."""
        with self._pending_lock:
            queue = self._pending.pop(run, None)
            self._pending[run] = [time.monotonic(), *values, *(queue[1:] if queue else ())]

    def _lost(self, values: tuple[str | bytes, ...], error: str) -> None:
        if values:
            self._warn("record_tool", f"{error}; {len(values) // 8} deferred tool outcome(s) not recorded")

    def _settle_args(self, values: tuple[str | bytes, ...]) -> tuple[str | bytes, ...]:
        return (b"", self._ttl, *values)

    def flush(self) -> None:
        """Send every deferred tool outcome now (``close`` and interpreter exit do)."""
        with self._pending_lock:
            if self._pending_generation != _fork_generation[0]:
                self._forked()
            items = [(run, tuple(queue[1:])) for run, queue in self._pending.items()]
            self._pending.clear()
        for run, values in items:
            self._send_settle(run, values)

    def _send_settle(self, run: RunKey, values: tuple[str | bytes, ...]) -> None:
        try:
            self._eval("settle", self._run_keys(run), self._settle_args(values))
        except _Unavailable as exc:
            if exc.sent:
                self._lost(values, exc.error)
            else:
                self._requeue(run, values)

    async def _asend_settle(self, run: RunKey, values: tuple[str | bytes, ...]) -> None:
        try:
            await self._aeval("settle", self._run_keys(run), self._settle_args(values))
        except _Unavailable as exc:
            if exc.sent:
                self._lost(values, exc.error)
            else:
                self._requeue(run, values)

    def _run(self, step: str, keys: Sequence[bytes], argv: Sequence[str | bytes], run: RunKey | None = None) -> Any:
        """One step of ``run``: its deferred outcomes ride along (and those of runs that waited too long go
        first, on their own)."""
        if not self._pending:
            return self._eval(step, keys, argv)
        if self._defer is not None:
            for other, values in self._stale(run):
                self._send_settle(other, values)
        carried = () if run is None else self._take(run)
        if not carried:
            return self._eval(step, keys, argv)
        try:
            return self._eval(step, keys, (*argv, *carried))
        except _Unavailable as exc:
            self._undelivered(run, carried, exc)
            raise

    async def _arun(
        self, step: str, keys: Sequence[bytes], argv: Sequence[str | bytes], run: RunKey | None = None
    ) -> Any:
        if not self._pending:
            return await self._aeval(step, keys, argv)
        if self._defer is not None:
            for other, values in self._stale(run):
                await self._asend_settle(other, values)
        carried = () if run is None else self._take(run)
        if not carried:
            return await self._aeval(step, keys, argv)
        try:
            return await self._aeval(step, keys, (*argv, *carried))
        except _Unavailable as exc:
            self._undelivered(run, carried, exc)
            raise

    def _undelivered(self, run: RunKey | None, carried: tuple[str | bytes, ...], exc: _Unavailable) -> None:
        """Deferred outcomes whose step failed: lost if the command may have reached Redis, else queued again."""
        if exc.sent:
            self._lost(carried, exc.error)
        else:
            assert run is not None
            self._requeue(run, carried)

    def _eval(self, step: str, keys: Sequence[bytes], argv: Sequence[str | bytes]) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            raise _Unavailable(self._down_error, sent=False)
        gate = self._enter()
        try:
            deadline = 0.0
            while True:
                try:
                    client = self._client if self._client is not None else self._sync_client()
                    # What redis-py's Script.__call__ does, minus its per-call overhead: EVALSHA, and only on an
                    # explicit NOSCRIPT (restart, failover, SCRIPT FLUSH) load the script and send it again.
                    if self._direct:
                        if self._functions_again:
                            self._functions_due()
                        if self._use_functions:
                            try:
                                answer = self._direct_call(step, keys, argv, True)
                            except self._response_error as exc:
                                if not self._functions_missing(exc, client):
                                    raise
                            else:
                                self._functions_ok = True
                                return answer
                            if self._use_functions:  # loaded now
                                return self._direct_call(step, keys, argv, True)
                        try:
                            return self._direct_call(step, keys, argv, False)
                        except self._no_script:
                            client.script_load(self._texts[step])
                            return self._direct_call(step, keys, argv, False)
                    sha = self._shas[step]
                    try:
                        return client.evalsha(sha, len(keys), *keys, *argv)
                    except self._no_script:
                        client.script_load(self._texts[step])
                        return client.evalsha(sha, len(keys), *keys, *argv)
                except self._errors as exc:
                    if not self._pool_exhausted(exc):
                        raise self._went_down(exc) from exc
                    # No connection could be had (a user's client with a smaller pool): the command was never
                    # sent, so sending it again cannot count it twice.
                    now = time.monotonic()
                    deadline = deadline or now + self._pool_timeout
                    if now >= deadline:
                        raise self._busy() from exc
                    time.sleep(min(0.005, deadline - now))
        finally:
            gate.release()

    def _fcall_failed(self, exc: BaseException) -> bool | None:
        """What an FCALL that failed with ``exc`` means: True, the library is missing (to be loaded); False,
        Functions cannot be had here (off: the steps run as scripts); None, the function ran and failed, or the
        server refused a step that Functions do run here (raised, as a failing script's error). Only None may
        have run any of the step."""
        message = str(exc)
        if message.startswith("Function not found"):
            return True
        if "user_function" in message:  # an error inside the step (Redis names where it stopped)
            return None
        lowered = message.lower()
        if isinstance(exc, self._no_permission) or any(word in lowered for word in _NO_FUNCTIONS):
            self._functions_off(message, for_good=True)  # an old server, a proxy, an ACL
            return False
        if not self._functions_ok:  # never answered here: scripts, and Functions again later
            self._functions_off(message, for_good=False)
            return False
        return None

    def _load_failed(self, error: BaseException) -> None:
        if "already exists" not in str(error):  # else another process loaded it first
            # (out of memory, a replica just promoted, a busy script: scripts serve for now)
            self._functions_off(str(error), for_good=isinstance(error, self._no_permission))

    def _functions_missing(self, exc: BaseException, client: Any) -> bool:
        """After a failed FCALL: whether to go on (the library loaded, or scripts from now on) or to raise."""
        missing = self._fcall_failed(exc)
        if missing:
            try:
                client.function_load(self._library)
            except self._response_error as error:
                self._load_failed(error)
        return missing is not None

    async def _afunctions_missing(self, exc: BaseException, client: Any) -> bool:
        missing = self._fcall_failed(exc)
        if missing:
            try:
                await client.function_load(self._library)
            except self._response_error as error:
                self._load_failed(error)
        return missing is not None

    def _functions_off(self, why: str, *, for_good: bool) -> None:
        self._use_functions = False
        self._functions_again = 0.0 if for_good else time.monotonic() + _FUNCTIONS_RETRY
        when = "from now on" if for_good else f"for {_FUNCTIONS_RETRY:.0f} s"
        logger.info(
            "loopguard: Redis Functions are not available on %s (%s); steps run as scripts %s", self.url, why, when
        )

    def _functions_due(self) -> None:
        """Functions again, once the scripts that followed a passing failure have served their time."""
        if time.monotonic() >= self._functions_again:
            self._functions_again = 0.0
            self._use_functions = True

    def _direct_call(self, step: str, keys: Sequence[bytes], argv: Sequence[str | bytes], function: bool) -> Any:
        """FCALL (or EVALSHA) on a connection of the store's own pool, packed here: the command's head (name or
        sha, and keys) is encoded once per run and step, and redis-py's generic packing and per-command
        bookkeeping (a good share of a check's client time) is skipped. The connection comes from the store's idle
        ones (else the pool) and goes back there once its reply is read whole; after any other failure it is
        disconnected and goes back to the pool."""
        head = self._heads.get((step, keys, function))
        if head is None:
            if len(self._heads) >= 4_096:
                self._heads.clear()
            parts = _bulk(b"FCALL") + _bulk(self._functions[step].encode()) if function else _bulk(b"EVALSHA")
            if not function:
                parts += _bulk(self._shas[step].encode())
            parts += _bulk(str(len(keys)).encode())
            for key in keys:
                parts += _bulk(key)
            head = self._heads[(step, keys, function)] = (len(keys) + 3, b"".join(parts))
        count, packed = head
        out = [b"*%d\r\n%b" % (count + len(argv), packed)]
        for arg in argv:
            data = arg if type(arg) is bytes else arg.encode()  # type: ignore[union-attr]
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
        idle = self._idle
        connection, sock, poller = idle.take(*self._conn_args)
        try:
            connection.send_packed_command((b"".join(out),))
            answer = connection.read_response()
        except self._response_error:  # an error reply, read whole: the connection is ready for the next command
            idle.keep(connection, sock, poller)
            raise
        except BaseException:  # the reply may be unread (an interrupt between send and read)
            idle.drop(connection)
            raise
        idle.keep(connection, sock, poller)
        return answer

    async def _aeval(self, step: str, keys: Sequence[bytes], argv: Sequence[str | bytes]) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            raise _Unavailable(self._down_error, sent=False)
        entry = self._async_entry()
        gate = entry.gate
        if gate.locked():
            try:
                await asyncio.wait_for(gate.acquire(), self._pool_timeout)
            except asyncio.TimeoutError:
                raise self._busy() from None
            if self._down_until and time.monotonic() < self._down_until:
                gate.release()
                raise _Unavailable(self._down_error, sent=False)
        else:
            await gate.acquire()  # free: returns at once
        try:
            client, sha, deadline = entry.client, self._shas[step], 0.0
            while True:
                try:
                    if self._functions_again and self._cluster is None:
                        self._functions_due()
                    if self._use_functions and self._cluster is None:  # the store's own client on one server
                        name = self._functions[step]
                        try:
                            answer = await client.fcall(name, len(keys), *keys, *argv)
                        except self._response_error as exc:
                            if not await self._afunctions_missing(exc, client):
                                raise
                        else:
                            self._functions_ok = True
                            return answer
                        if self._use_functions:
                            return await client.fcall(name, len(keys), *keys, *argv)
                    try:
                        return await client.evalsha(sha, len(keys), *keys, *argv)
                    except self._no_script:
                        await client.script_load(self._texts[step])
                        return await client.evalsha(sha, len(keys), *keys, *argv)
                except self._errors as exc:
                    if not self._pool_exhausted(exc):
                        raise self._went_down(exc) from exc
                    now = time.monotonic()
                    deadline = deadline or now + self._pool_timeout
                    if now >= deadline:
                        raise self._busy() from exc
                    await asyncio.sleep(min(0.005, deadline - now))
        finally:
            gate.release()

    def _pool_exhausted(self, exc: BaseException) -> bool:
        """No connection could be had from the client's pool: the command never left this process."""
        if self._pool_error is not None and isinstance(exc, self._pool_error):
            return True
        return isinstance(exc, self._connection_error) and str(exc) in _POOL_MESSAGES

    def _busy(self) -> _Unavailable:
        # Not an outage: no back-off, the next call tries again.
        return _Unavailable(
            f"ConnectionPoolBusy: all {self._gate_size} connections of this process were in use for "
            f"{self._pool_timeout:g} s (pool_timeout); raise max_connections or pool_timeout",
            sent=False,
        )

    def _went_down(self, exc: BaseException) -> _Unavailable:
        error = f"{type(exc).__name__}: {exc}"
        if self._backoff:
            self._down_error = error
            self._down_until = time.monotonic() + self._backoff
        return _Unavailable(error)

    def _async_entry(self) -> _AsyncEntry:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            with self._async_lock:
                entry = self._async.get(loop)
                if entry is None:
                    entry = self._new_async_client()
                    self._async[loop] = entry
        return entry

    def _new_async_client(self) -> _AsyncEntry:
        if not self._owns_client:
            raise _NoAsync
        backoff = require("redis.backoff", extra="redis", purpose="The async Redis breaker store")
        retry = require("redis.asyncio.retry", extra="redis", purpose="The async Redis breaker store")
        no_retry = retry.Retry(backoff.NoBackoff(), 0)
        if self._cluster is not None:
            cluster = require("redis.asyncio.cluster", extra="redis", purpose="The async Redis Cluster store")
            nodes = [cluster.ClusterNode(host, port) for host, port in self._cluster["nodes"]]
            options = {k: v for k, v in self._cluster.items() if k != "nodes"}
            client = cluster.RedisCluster(
                startup_nodes=nodes,
                retry=no_retry,
                max_connections=self._max_connections,
                **{**options, **self._client_options},
            )
            return _AsyncEntry(client, None, asyncio.Semaphore(self._max_connections))
        aioredis = require("redis.asyncio", extra="redis", purpose="The async Redis breaker store")
        pool = aioredis.BlockingConnectionPool.from_url(
            self._raw_url,
            max_connections=self._max_connections,
            timeout=self._pool_timeout,
            retry=no_retry,
            **self._client_options,
        )
        client = aioredis.Redis(connection_pool=pool)
        return _AsyncEntry(client, pool, asyncio.Semaphore(self._max_connections))

    def _unavailable(self, step: str, error: str) -> Verdict:
        facts = {"url": self.url, "policy": self.failure_policy, "error": error, "store": "redis", "step": step}
        admitting = step.startswith("admit")
        if self.failure_policy == "open" or not admitting:
            self._warn(step, error)
            return Verdict(True, None, False, facts)
        return Verdict(False, "store_unavailable", False, facts)

    def _warn(self, step: str, error: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._warned_at = self._suppressed, 0, now
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        if step.startswith("record"):
            logger.error(
                "loopguard could not record a call in the Redis store %s (%s); that usage is not counted%s",
                self.url,
                error,
                more,
            )
        else:
            logger.warning(
                "loopguard Redis store %s is unavailable (%s); failure_policy='open' admits calls unchecked%s",
                self.url,
                error,
                more,
            )

    # -- decoding ----------------------------------------------------------------------------------
    def _verdict(self, raw: Any, limits: Limits, base: dict[str, Any] | None, signature: str = "") -> Verdict:
        if isinstance(raw, int):  # the common case: admitted, no change of state
            return _new_verdict(Verdict, (True, None, False, _NO_FACTS, (), raw >> 1, raw & 1 == 1, False, ()))
        status = raw[0]
        duplicate = status == 2
        if duplicate:
            raw, first = json.loads(_text(raw[1]))
            status = raw[0]
            if first:  # the first request's tool, signature and agent
                tool, signature, agent = first
                base = {"tool": tool, "agent": agent[1:] if agent else None}
        moves = () if duplicate else _transitions(_text(raw[5]))
        turn, probe = _int(raw[3]), not duplicate and _int(raw[4]) == 1
        if status in (1, 3):
            noted = _observed(raw[6] if len(raw) > 6 else b"", limits, base, signature)
            return Verdict(True, None, False, _NO_FACTS, moves, turn, probe, duplicate, noted)
        terminal = _int(raw[2]) == 1
        reason, facts = _facts(_text(raw[1]), list(raw[6:]), terminal, limits, base, signature)
        return Verdict(False, reason, terminal, facts, moves, turn, False, duplicate)

    def _judgement(
        self, raw: bytes | list[Any], request: ToolRequest, limits: Limits, run: RunKey, held: _HeldWindow | None
    ) -> tuple[Verdict, Finding | None, Call, bool]:
        """An admission that carries the run's window: what the detectors say about it, and whether the reply said
        what the plain integer says (nothing to report, no outcome in Redis yet for the call's id)."""
        if type(raw) is bytes:  # b"<turn*2+probe> <call number> <in flight*2+fresh> <steps> <version> <delta>:<window>"
            head, colon, newest = raw.partition(b":")
            try:
                plain, number, flight, size, version, delta = map(int, head.split() if colon else ())
            except ValueError:  # not what admit_tool writes: Redis (or whatever answered) is not sound
                raise _Unavailable(f"admit_tool answered with {raw[:64]!r}, not an admission") from None
            verdict, inflight, fresh = self._verdict(plain, limits, None), flight >> 1, flight & 1 == 1
            reply = (size, newest, version, delta)
        else:
            verdict = self._verdict(raw, limits, _base(request), request.signature)
            number, inflight, size = _int(raw[7]), _int(raw[8]), _int(raw[10])
            # (with transitions or observed ceilings the outcome is recorded at once whatever raw[9] says)
            fresh = _int(raw[9]) == 1 and not verdict.observed and not verdict.transitions
            reply = (size, bytes(raw[11]), _int(raw[12]), _int(raw[13]))
        action, shape = self._digest(request.signature, 16), request.shape and self._digest(request.shape, 16)
        try:
            steps = self._window(run, limits, held, reply)
            # Steps of this call's own batch are left out (the model saw none of them); its twins among them count
            # as still in flight.
            window, twins = without_siblings(PackedWindow(steps, size), request.siblings_done, action)
            call = _new_call(
                Call,
                (number, request.tool, action, shape, request.words, request.poll, inflight + twins, request.prose),
            )
            finding, noted = limits.loop.judge(window, call, limits.mode)
        except MalformedWindow as exc:  # not what admit_tool writes: Redis (or whatever answered) is not sound
            self._held.pop(run, None)
            raise _Unavailable(f"admit_tool answered with {exc}") from None
        if noted:
            base = _base(request)
            extra = tuple((f.reason, {**finding_facts(f, call), "signature": request.signature, **base}) for f in noted)
            verdict = verdict._replace(observed=verdict.observed + extra)
            fresh = False
        return verdict, finding, call, fresh

        # -- the Store protocol ------------------------------------------------------------------------

    def admit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict:
        keys, held = self._run_keys(run), self._held_window(run, limits)
        try:
            raw = self._run("admit_tool", keys, self._tool_argv(request, limits, held), run)
            if type(raw) is not bytes and (not isinstance(raw, list) or raw[0] != 3):  # no window in the reply
                verdict = self._own_signature(self._verdict(raw, limits, _base(request), request.signature))
                return self._admitted(run, request, verdict, type(raw) is int)
            verdict, finding, call, fresh = self._judgement(raw, request, limits, run, held)
            if finding is None:
                return self._admitted(run, request, verdict, fresh)
            facts = {**finding_facts(finding, call), "signature": request.signature}
            facts.update(tool=request.tool, agent=request.agent)
            raw = self._run("refuse_tool", keys, self._refuse_argv(request, finding, facts))
        except _Unavailable as exc:
            return self._unavailable("admit_tool", exc.error)
        refused = self._own_signature(self._verdict(raw, limits, _base(request), request.signature))
        refused = refused._replace(transitions=verdict.transitions + refused.transitions, observed=verdict.observed)
        return refused if self._defer is None else self._saw(run, refused)

    def record_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict:
        if self._defer is not None:
            deferred = self._deferred(run, outcome, limits)
            if deferred is not None:
                return deferred
        try:
            raw = self._run("record_tool", self._run_keys(run), self._outcome_argv(outcome, limits), run)
        except _Unavailable as exc:
            return self._unavailable("record_tool", exc.error)
        return self._verdict(raw, limits, None)

    def admit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict:
        try:
            raw = self._run("admit_model", self._run_keys(run), self._model_argv(request, limits), run)
        except _Unavailable as exc:
            return self._unavailable("admit_model", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    def record_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict:
        try:
            raw = self._run("record_model", self._run_keys(run), self._usage_argv(usage), run)
        except _Unavailable as exc:
            return self._unavailable("record_model", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    def snapshot(self, run: RunKey) -> RunSnapshot:
        if self._pending:  # what this process deferred is part of what it reads
            carried = self._take(run)
            if carried:
                self._send_settle(run, carried)
        try:
            raw = self._run("snapshot", self._run_keys(run)[:1], ())
        except _Unavailable as exc:
            raise self._store_error("read the breaker state", exc.error) from None
        return _snapshot(raw)

    def steer(self, run: RunKey, limits: Limits, now: float) -> Verdict:
        try:
            raw = self._run("steer", self._run_keys(run), (self._clock(now), self._args_for(limits).steer), run)
        except _Unavailable as exc:
            return self._unavailable("admit_tool", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    async def asteer(self, run: RunKey, limits: Limits, now: float) -> Verdict:
        try:
            raw = await self._arun("steer", self._run_keys(run), (self._clock(now), self._args_for(limits).steer), run)
        except _NoAsync:
            return await asyncio.to_thread(self.steer, run, limits, now)
        except _Unavailable as exc:
            return self._unavailable("admit_tool", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    def reset(self, run: RunKey) -> Verdict:
        try:
            raw = self._run("reset", self._run_keys(run), (self._clock(time.monotonic()), self._ttl), run)
        except _Unavailable as exc:
            raise self._store_error("reset the breaker", exc.error) from None
        return self._saw(run, self._verdict(raw, Limits(), None))

    def drop(self, run: RunKey) -> None:
        """Forget a finished run now (its keys would expire after ``ttl_seconds`` anyway)."""
        with self._pending_lock:  # its deferred outcomes go with it
            self._pending.pop(run, None)
            self._calm.pop(run, None)
        self._held.pop(run, None)
        try:
            self._sync_client().delete(*self._run_keys(run))
        except self._errors as exc:
            logger.info("loopguard could not drop run keys in %s (%s); they expire on their own", self.url, exc)
        self._keys.pop(run, None)

    # -- async twins (redis.asyncio, same scripts) ---------------------------------------------------
    async def aadmit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict:
        keys, held = self._run_keys(run), self._held_window(run, limits)
        try:
            raw = await self._arun("admit_tool", keys, self._tool_argv(request, limits, held), run)
            if type(raw) is not bytes and (not isinstance(raw, list) or raw[0] != 3):  # no window in the reply
                verdict = self._own_signature(self._verdict(raw, limits, _base(request), request.signature))
                return self._admitted(run, request, verdict, type(raw) is int)
            verdict, finding, call, fresh = self._judgement(raw, request, limits, run, held)
            if finding is None:
                return self._admitted(run, request, verdict, fresh)
            facts = {**finding_facts(finding, call), "signature": request.signature}
            facts.update(tool=request.tool, agent=request.agent)
            raw = await self._arun("refuse_tool", keys, self._refuse_argv(request, finding, facts))
        except _NoAsync:
            return await asyncio.to_thread(self.admit_tool, run, request, limits)
        except _Unavailable as exc:
            return self._unavailable("admit_tool", exc.error)
        refused = self._own_signature(self._verdict(raw, limits, _base(request), request.signature))
        refused = refused._replace(transitions=verdict.transitions + refused.transitions, observed=verdict.observed)
        return refused if self._defer is None else self._saw(run, refused)

    async def arecord_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict:
        if self._defer is not None:
            deferred = self._deferred(run, outcome, limits)
            if deferred is not None:
                return deferred
        try:
            raw = await self._arun("record_tool", self._run_keys(run), self._outcome_argv(outcome, limits), run)
        except _NoAsync:
            return await asyncio.to_thread(self.record_tool, run, outcome, limits)
        except _Unavailable as exc:
            return self._unavailable("record_tool", exc.error)
        return self._verdict(raw, limits, None)

    async def aadmit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict:
        try:
            raw = await self._arun("admit_model", self._run_keys(run), self._model_argv(request, limits), run)
        except _NoAsync:
            return await asyncio.to_thread(self.admit_model, run, request, limits)
        except _Unavailable as exc:
            return self._unavailable("admit_model", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    async def arecord_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict:
        try:
            raw = await self._arun("record_model", self._run_keys(run), self._usage_argv(usage), run)
        except _NoAsync:
            return await asyncio.to_thread(self.record_model, run, usage, limits)
        except _Unavailable as exc:
            return self._unavailable("record_model", exc.error)
        return self._saw(run, self._verdict(raw, limits, None))

    async def asnapshot(self, run: RunKey) -> RunSnapshot:
        if self._pending:
            carried = self._take(run)
            if carried:
                await self._asend_settle(run, carried)
        try:
            raw = await self._arun("snapshot", self._run_keys(run)[:1], ())
        except _NoAsync:
            return await asyncio.to_thread(self.snapshot, run)
        except _Unavailable as exc:
            raise self._store_error("read the breaker state", exc.error) from None
        return _snapshot(raw)

    # -- housekeeping ------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise :class:`StoreError` (naming the URL and policy) unless Redis answers now."""
        try:
            self._sync_client().ping()
        except self._errors as exc:
            raise self._store_error("reach", f"{type(exc).__name__}: {exc}") from exc
        self._down_until = 0.0

    def close(self) -> None:
        """Send deferred tool outcomes, then close the connections this store opened (sync client; see
        :meth:`aclose` for async)."""
        if self._pending:
            self.flush()
        if self._owns_client and self._client is not None:
            self._idle.release_all()
            self._client.close()
            if self._pool is not None:
                self._pool.disconnect()

    async def aclose(self) -> None:
        """Close the async connections opened on the running event loop."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.client.aclose()
            if entry.pool is not None:
                await entry.pool.disconnect()

    def _store_error(self, what: str, error: str) -> StoreError:
        return StoreError(
            f"loopguard could not {what} in the Redis store {self.url} ({error}); failure_policy="
            f"{self.failure_policy!r}. Check that Redis is running and reachable from this host."
        )

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} failure_policy={self.failure_policy!r}>"


class _Unavailable(Exception):
    def __init__(self, error: str, sent: bool = True) -> None:
        super().__init__(error)
        self.error = error
        #: the command may have reached Redis (so what it carried must not be sent again)
        self.sent = sent


class _NoAsync(Exception):
    """A user-supplied sync client has no async twin: run the sync step in a thread."""


class _AsyncEntry(NamedTuple):
    """What the store keeps per event loop: its client, the client's pool (None for a cluster) and the gate
    of ``max_connections`` slots."""

    client: Any
    pool: Any
    gate: asyncio.Semaphore


def _bulk(data: bytes) -> list[bytes]:
    return [b"$%d\r\n" % len(data), data, b"\r\n"]


def _base(request: ToolRequest) -> dict[str, Any]:
    return {"tool": request.tool, "agent": request.agent}


def _mac_key(digest_key: bytes) -> bytes:
    """The BLAKE2b key of the store's digests, derived from ``digest_key`` (kept apart from the word hashes
    the breaker keys with the same secret)."""
    return hashlib.blake2b(b"loopguard redis digests v1", key=hashlib.blake2b(digest_key).digest()).digest()


def _cluster_options(url: str) -> dict[str, Any]:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0]`` -> RedisCluster arguments."""
    redacted = redact_url(url)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if has_password:
            options["username"] = unquote(user) or None
            options["password"] = unquote(password)
        else:
            options["password"] = unquote(user)  # redis://secret@host means a password, as redis-py reads it
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        host, port = item, "6379"
        if item.startswith("["):  # [::1]:7000
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "6379"
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad node {item!r} in the Redis Cluster URL {redacted}: use host:port,host:port")
        nodes.append((host, int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {parts.path.strip('/')!r} ({redacted})")
    if parts.query:
        names = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
        raise ValueError(
            f"the Redis Cluster URL {redacted} carries options {names} that are not store options: pass them "
            "as keyword arguments of RedisStore (they go to redis.cluster.RedisCluster)"
        )
    options["nodes"] = nodes
    options["ssl"] = _CLUSTER_SCHEMES[parts.scheme.lower()]
    return options


def _transitions(text: str) -> tuple[Transition, ...]:
    if not text:
        return ()
    moves = []
    for item in text.split("|"):
        source, target, why = item.split(">", 2)
        moves.append(Transition(_STATES[source], _STATES[target], why))
    return tuple(moves)


def _limit_fact(kind: str, raw: Any, limits: Limits) -> Any:
    value = _int(raw)
    if kind == "wall_clock":
        same = limits.max_seconds is not None and _us(limits.max_seconds) == value
        return limits.max_seconds if same else value / _US
    if kind == "cost_ceiling":
        return limits.max_cost_usd if limits.max_cost_micros == value else value / _US
    return value


def _observed_fact(kind: str, raw: Any) -> Any:
    value = _int(raw)
    if kind == "wall_clock":
        return round(value / _US, 3)
    if kind == "cost_ceiling":
        return value / _US
    return value


def _facts(
    reason: str, f: list[Any], terminal: bool, limits: Limits, base: dict[str, Any] | None, signature: str
) -> tuple[str, dict[str, Any]]:
    """The facts of a refusal, built exactly as RunState builds them."""
    if reason == "open":
        tripped_by, retry, kind, tool, limit, observed = (_text(x) if isinstance(x, bytes) else x for x in f)
        facts: dict[str, Any] = {
            "tripped_by": _text(tripped_by) or None,
            "terminal": terminal,
            "retry_in_seconds": None if terminal else round(_int(retry) / _US, 3),
        }
        if _text(tool):
            facts["tool"] = _text(tool)
        if _text(limit):
            facts["limit"] = _limit_fact(_text(kind), limit, limits)
        if _text(observed):
            facts["observed"] = _observed_fact(_text(kind), observed)
        return "open", facts
    if reason == "probe_busy":
        tool = None if base is None else base["tool"]
        return "open", {"tripped_by": _text(f[0]) or None, "probe_in_flight": True, "tool": tool}
    head = dict(base) if base is not None else {}
    limit, observed, extra = f[0], f[1], f[2:]
    if reason == "wall_clock":
        facts = {**head, "observed": _observed_fact(reason, observed), "limit": limits.max_seconds}
    elif reason == "tool_ceiling":
        applies = "all tools" if _text(extra[0]) == "all" else "this tool"
        facts = {**head, "observed": _int(observed), "limit": _int(limit), "applies_to": applies}
    elif reason == "failures":
        facts = {**head, "observed": _int(observed), "limit": _int(limit)}
    elif len(extra) > 1 and _text(extra[0]) == "json":  # a detector's refusal: its facts as it built them
        facts = {**head, **json.loads(_text(extra[1]))}
    elif reason == "turn_ceiling":
        facts = {"observed": _int(observed), "limit": _int(limit)}
    elif reason == "token_ceiling":
        facts = {"observed": _int(observed), "limit": _int(limit), "spent": _int(extra[0])}
        if _int(extra[1]):
            facts["in_flight"] = _int(extra[1])
    elif reason == "cost_ceiling":
        facts = {
            "observed": _int(observed) / _US,
            "limit": limits.max_cost_usd,
            "spent": _int(extra[0]) / _US,
        }
        if _int(extra[1]):
            facts["in_flight"] = _int(extra[1]) / _US
    else:  # a newer script's reason: keep what it said
        facts = {**head, "limit": limit, "observed": observed}
    return reason, facts


def _observed(
    raw: Any, limits: Limits, base: dict[str, Any] | None, signature: str
) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """What observe mode noted in a script: [[reason, limit, observed, extra...], ...] as JSON."""
    text = _text(raw)
    if not text:
        return ()
    noted = []
    for reason, limit, observed, *extra in json.loads(text):
        f = [limit if limit is not False else "", observed if observed is not False else "", *extra]
        noted.append(_facts(reason, f, reason in _BUDGET, limits, base, signature))
    return tuple(noted)


_BUDGET = frozenset({"turn_ceiling", "token_ceiling", "cost_ceiling", "tool_ceiling", "wall_clock"})


def _snapshot(raw: Any) -> RunSnapshot:
    st, term, tr, turns, tokens, cost, tool_calls, trips, started, opened, tools, refusals = raw
    flat = [_text(x) for x in tools or ()]
    return RunSnapshot(
        state=_STATES[_text(st) or "c"],
        terminal=_text(term) == "1",
        trip_reason=_text(tr) or None,
        turns=_int(turns or 0),
        tokens=_int(tokens or 0),
        cost_micros=_int(cost or 0),
        tool_calls=_int(tool_calls or 0),
        # A tool whose only call was refused after its admission counts 0: not a tool the run used.
        calls_per_tool={flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2) if int(flat[i + 1])},
        trips=_int(trips or 0),
        started_at=_int(started) / _US if _text(started) else None,
        opened_at=_int(opened) / _US if _text(opened) else None,
        refusals=_int(refusals or 0),
    )
