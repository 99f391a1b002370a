"""The one place that runs a side effect at most once per key: claim, run, record; or answer from the record.

The decorator (:func:`side_effect`) and the framework adapters are thin layers over :class:`SideEffects`.

A call goes like this:

1. Its key is derived (run id + tool + canonical arguments, or your key + tool) and a claim is made.
2. ``claimed``: the body runs (no lock, no transaction is held meanwhile), then its outcome is serialized and
   recorded *before* it is returned. If the body raises, the claim is released (``on_error="release"``: a
   retry runs it again) or kept as a failure whose outcome is unknown (``on_error="keep"``).
3. ``completed``: the recorded outcome is returned; the body does not run.
4. ``in_flight`` (another caller holds the claim, inside its lease): wait for it (``in_flight="wait"``, up to
   ``wait_seconds``, polling with back-off) or refuse at once (``"refuse"``): ``side_effect_in_flight``.
5. ``unknown`` (a claim whose lease ran out with no outcome: a crash, a ``kill -9``): refused,
   ``side_effect_unknown``, because the side effect may have happened; ``on_unknown="retry"`` takes the claim
   over and runs the body again, for bodies you know are safe to repeat.
6. Same key, other arguments: refused, ``side_effect_conflict``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from ..errors import _ADVICE, LoopGuardTripped, LoopGuardWarning, StoreError
from ._base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_TTL_SECONDS,
    DEFAULT_WAIT_SECONDS,
    Claim,
    SideEffectRecord,
    SideEffectStore,
    check_seconds,
)
from ._keys import args_digest, call_key, user_key
from ._memory import MemorySideEffects
from ._serializer import JSONSerializer, Serializer
from ._url import side_effect_store

__all__ = ["KeyOption", "SideEffects", "current_key"]

logger = logging.getLogger("loopguard.idempotency")

_T = TypeVar("_T")
#: A key you choose: a str, or a callable from the call's arguments to a str.
KeyOption = str | Callable[[Any], str]

# The first byte of a recorded outcome says what it holds.
_VALUE = b"v"  # the serialized return value
_FAILED = b"x"  # the body raised (on_error="keep") or was interrupted: its side effect is unknown
_UNSERIALIZABLE = b"u"  # the body returned a value the serializer could not store

_CHOICES = {
    "in_flight": ("wait", "refuse"),
    "on_unknown": ("refuse", "retry"),
    "on_error": ("release", "keep"),
}
_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("loopguard_side_effect_key", default=None)
_FIRST_PAUSE = 0.02
_MAX_PAUSE = 0.5


def current_key() -> str | None:
    """The idempotency key of the side effect whose body is running in this context (thread or task), else None.

    Pass it on to an API that is idempotent itself (Stripe's ``Idempotency-Key`` header, a database unique
    constraint), so that even a repeat after a crash (``on_unknown="retry"``) cannot act twice there.
    """
    return _CURRENT.get()


def _choice(param: str, value: object) -> str:
    allowed = _CHOICES[param]
    if value not in allowed:
        raise ValueError(f"{param} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return str(value)


def _check_key_option(key: object, param: str = "key") -> KeyOption | None:
    if key is None or callable(key):
        return key
    if isinstance(key, str) and key:
        return key
    raise TypeError(f"{param} must be a non-empty str or a callable(args) -> str, got {key!r}")


def _when(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.0f}"


def _type_name(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__


def _trip(reason: str, detail: str, **facts: Any) -> LoopGuardTripped:
    advice = _ADVICE.get(reason, "inspect the record before calling again")
    message = f"loopguard refused the call [{reason}]: {detail}; this call did not run. To continue: {advice}."
    return LoopGuardTripped(reason, message, **facts)


class _Waiter:
    """Polls with back-off until ``wait_seconds`` have passed since the first in-flight answer."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds
        self.started: float | None = None
        self.pause = _FIRST_PAUSE

    def next_pause(self) -> float | None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        left = self.started + self.wait_seconds - now
        if left <= 0:
            return None
        pause = min(self.pause, left)
        self.pause = min(self.pause * 2, _MAX_PAUSE)
        return pause

    @property
    def waited(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


class _Call:
    """One guarded call: what identifies it and where its claim stands."""

    __slots__ = ("digest", "facts", "key", "token", "tool", "ttl")

    def __init__(self, tool: str, key: str, digest: str, ttl: float, facts: dict[str, Any]) -> None:
        self.tool, self.key, self.digest, self.ttl, self.facts = tool, key, digest, ttl, facts
        self.token = uuid.uuid4().hex


class SideEffects:
    """Runs side effects at most once per idempotency key, recording each outcome in ``store``.

    ``store``: a :class:`SideEffectStore`, a URL (``side_effect_store``), or None for a
    :class:`MemorySideEffects` of its own (this process only). ``breaker``: where the run id comes from
    (``breaker.session_id``); ``key``: your own key (a str or ``callable(args) -> str``) instead of the run id
    and the arguments. ``ttl_seconds`` (default 24 h): how long a completed record answers repeats.
    ``lease_seconds`` (default 300 s): how long a claim may stay in flight before a repeat calls its outcome
    unknown; make it longer than the body can take. ``in_flight``, ``wait_seconds``, ``on_unknown``,
    ``on_error``: see the module docs. ``serializer``: turns outcomes into bytes (default JSON).
    """

    def __init__(
        self,
        store: SideEffectStore | str | None = None,
        *,
        breaker: Any = None,
        key: KeyOption | None = None,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        in_flight: str = "wait",
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        on_unknown: str = "refuse",
        on_error: str = "release",
        serializer: Serializer | None = None,
    ) -> None:
        if store is None:
            store = MemorySideEffects()
        elif isinstance(store, str):
            store = side_effect_store(store)
        if not isinstance(store, SideEffectStore):
            raise TypeError(
                "store must be a SideEffectStore (MemorySideEffects, SQLiteSideEffects, RedisSideEffects, "
                f"PostgresSideEffects) or a URL such as 'sqlite:///effects.db', got {type(store).__name__}"
            )
        self.store: SideEffectStore = store
        if breaker is not None and not hasattr(breaker, "session_id"):
            raise TypeError(f"breaker must be a loopguard Breaker (it gives the run id), got {type(breaker).__name__}")
        self.breaker = breaker
        self.key = _check_key_option(key)
        self.ttl_seconds = check_seconds("ttl_seconds", ttl_seconds)
        self.lease_seconds = check_seconds("lease_seconds", lease_seconds)
        self.in_flight = _choice("in_flight", in_flight)
        self.wait_seconds = check_seconds("wait_seconds", wait_seconds, allow_zero=True)
        self.on_unknown = _choice("on_unknown", on_unknown)
        self.on_error = _choice("on_error", on_error)
        if serializer is None:
            serializer = JSONSerializer()
        if not isinstance(serializer, Serializer):
            raise TypeError(
                f"serializer must have dumps(value) -> bytes and loads(bytes) -> value, got {type(serializer).__name__}"
            )
        self.serializer: Serializer = serializer

    # -- keys -------------------------------------------------------------------------------------
    def identify(
        self, tool: str, args: Any, *, key: KeyOption | None = None, run_id: str | None = None
    ) -> tuple[str, str]:
        """The store key of a call and the digest of its arguments."""
        if not isinstance(tool, str) or not tool:
            raise TypeError(f"tool must be the tool's name (a non-empty str), got {tool!r}")
        digest = args_digest(args)
        chosen = _check_key_option(key) if key is not None else self.key
        if chosen is not None:
            text = chosen(args) if callable(chosen) else chosen
            if not isinstance(text, str) or not text:
                raise TypeError(f"key must give a non-empty str for {tool!r}, got {text!r}")
            return user_key(tool, text), digest
        return call_key(self._run_id(run_id), tool, digest), digest

    def _run_id(self, run_id: str | None) -> str:
        if run_id is not None:
            if not isinstance(run_id, str) or not run_id:
                raise TypeError(f"run_id must be a non-empty str, got {run_id!r}")
            return run_id
        if self.breaker is None:
            raise TypeError(
                "an idempotency key needs a run id or a key of yours: pass breaker= (its current run id is used), "
                "run_id=, or key="
            )
        current = self.breaker.session_id
        if not isinstance(current, str) or not current:
            raise TypeError(f"breaker.session_id must be a non-empty str, got {current!r}")
        return current

    def _call(
        self, tool: str, args: Any, key: KeyOption | None, run_id: str | None, ttl_seconds: float | None
    ) -> _Call:
        ttl = self.ttl_seconds if ttl_seconds is None else check_seconds("ttl_seconds", ttl_seconds)
        store_key, digest = self.identify(tool, args, key=key, run_id=run_id)
        facts: dict[str, Any] = {"tool": tool, "key": store_key}
        if key is None and self.key is None:
            facts["session_id"] = self._run_id(run_id)
        return _Call(tool, store_key, digest, ttl, facts)

    # -- running ----------------------------------------------------------------------------------
    def run(
        self,
        tool: str,
        args: Any,
        body: Callable[[], _T],
        *,
        key: KeyOption | None = None,
        run_id: str | None = None,
        ttl_seconds: float | None = None,
    ) -> _T:
        """Run ``body()`` for the call ``tool(args)`` unless its key already has an outcome; return the outcome.

        ``key`` / ``run_id`` / ``ttl_seconds`` override this object's for one call (adapters pass a tool's own).
        Raises :class:`LoopGuardTripped` (``side_effect_in_flight``, ``side_effect_unknown``,
        ``side_effect_conflict``) when the body may not run, :class:`StoreError` when the store cannot be used
        (the body does not run), and whatever the body raises.
        """
        if not callable(body):
            raise TypeError(f"body must be a callable taking no arguments, got {body!r}")
        call = self._call(tool, args, key, run_id, ttl_seconds)
        waiter = _Waiter(self.wait_seconds)
        while True:
            verdict, value = self._step(self._claim(call), call, waiter)
            if verdict == "run":
                break
            if verdict == "replay":
                return value  # type: ignore[no-any-return]
            time.sleep(value)
        running = _CURRENT.set(call.key)
        try:
            outcome = body()
        except Exception as exc:
            self._failed(call, exc, interrupted=False)
            raise
        except BaseException as exc:
            self._failed(call, exc, interrupted=True)
            raise
        finally:
            _CURRENT.reset(running)
        if inspect.isawaitable(outcome):
            self._not_awaited(call, outcome)
        self._record(call, outcome)
        return outcome

    async def arun(
        self,
        tool: str,
        args: Any,
        body: Callable[[], Awaitable[_T]],
        *,
        key: KeyOption | None = None,
        run_id: str | None = None,
        ttl_seconds: float | None = None,
    ) -> _T:
        """:meth:`run` for an async body: waits with ``asyncio.sleep``; store calls are short synchronous calls."""
        if not callable(body):
            raise TypeError(f"body must be a callable taking no arguments, got {body!r}")
        call = self._call(tool, args, key, run_id, ttl_seconds)
        waiter = _Waiter(self.wait_seconds)
        while True:
            verdict, value = self._step(self._claim(call), call, waiter)
            if verdict == "run":
                break
            if verdict == "replay":
                return value  # type: ignore[no-any-return]
            await asyncio.sleep(value)
        running = _CURRENT.set(call.key)
        try:
            pending = body()
            # A body that is not async after all has already run: its return value is the outcome.
            outcome = await pending if inspect.isawaitable(pending) else pending
        except Exception as exc:
            self._failed(call, exc, interrupted=False)
            raise
        except BaseException as exc:  # cancelled or interrupted: its effect may have happened or not
            self._failed(call, exc, interrupted=True)
            raise
        finally:
            _CURRENT.reset(running)
        self._record(call, outcome)
        return outcome

    # -- the record -------------------------------------------------------------------------------
    def release(self, tool: str, args: Any, *, key: KeyOption | None = None, run_id: str | None = None) -> bool:
        """Forget the record of ``tool(args)`` (after checking the external system), so the next call runs it.

        Returns whether there was one. The same as ``store.release(trip.facts["key"])``.
        """
        store_key, _ = self.identify(tool, args, key=key, run_id=run_id)
        return self.store.release(store_key)

    def get(
        self, tool: str, args: Any, *, key: KeyOption | None = None, run_id: str | None = None
    ) -> SideEffectRecord | None:
        """The record of ``tool(args)``, or None."""
        store_key, _ = self.identify(tool, args, key=key, run_id=run_id)
        return self.store.get(store_key)

    # -- steps ------------------------------------------------------------------------------------
    def _claim(self, call: _Call) -> Claim:
        return self.store.claim(
            call.key,
            call.digest,
            call.token,
            lease_seconds=self.lease_seconds,
            ttl_seconds=call.ttl,
            take_over=self.on_unknown == "retry",
        )

    def _step(self, claim: Claim, call: _Call, waiter: _Waiter) -> tuple[str, Any]:
        """("run", None), ("replay", outcome) or ("wait", seconds); raises a trip when the call may not run."""
        state, record = claim
        if state == "claimed":
            return "run", None
        if record is None:
            raise StoreError(f"the side-effect store answered {state!r} for {call.tool!r} without a record")
        facts = {
            **call.facts,
            "state": state,
            "started_at": _when(record.created_at),
            "lease_expires_at": _when(record.lease_expires_at),
        }
        if record.args_digest != call.digest:
            raise _trip(
                "side_effect_conflict",
                f"{call.tool!r} was called with an idempotency key already used (started {facts['started_at']}) for "
                f"different arguments (recorded arguments digest {record.args_digest[:12]}, this call's "
                f"{call.digest[:12]})",
                args_digest=call.digest,
                recorded_args_digest=record.args_digest,
                **facts,
            )
        if state == "completed":
            return "replay", self._decode(record, call, facts)
        if state == "unknown":
            raise _trip(
                "side_effect_unknown",
                f"{call.tool!r} with the same idempotency key started at {facts['started_at']} and never recorded an "
                f"outcome before its lease ended at {facts['lease_expires_at']} (its process crashed or was killed, "
                "or the body runs longer than lease_seconds), so its side effect may or may not have happened",
                cause="lease_expired",
                **facts,
            )
        pause = waiter.next_pause() if self.in_flight == "wait" else None
        if pause is None:
            waited = (
                f"it was still running after waiting {waiter.waited:.1f} s"
                if self.in_flight == "wait"
                else "in_flight='refuse'"
            )
            raise _trip(
                "side_effect_in_flight",
                f"{call.tool!r} is already running with the same idempotency key (started {facts['started_at']}, "
                f"lease until {facts['lease_expires_at']}) and {waited}",
                waited_seconds=round(waiter.waited, 3),
                **facts,
            )
        return "wait", pause

    def _decode(self, record: SideEffectRecord, call: _Call, facts: dict[str, Any]) -> Any:
        data = record.outcome or b""
        tag, payload = data[:1], data[1:]
        if tag == _VALUE:
            try:
                value = self.serializer.loads(payload)
            except Exception as exc:
                raise TypeError(
                    f"the recorded outcome of {call.tool!r} could not be read back with serializer="
                    f"{self.serializer!r} ({type(exc).__name__}: {exc}): every process must use the serializer that "
                    "wrote it"
                ) from exc
            logger.debug("loopguard: %r answered from its record (key %s); the body did not run", call.tool, call.key)
            return value
        if tag == _FAILED:
            info = _json(payload)
            error = str(info.get("error", "an exception"))
            why = (
                f"was interrupted ({error}) before it finished"
                if info.get("interrupted")
                else f"raised {error}, and on_error='keep' kept its record"
            )
            raise _trip(
                "side_effect_unknown",
                f"{call.tool!r} with the same idempotency key started at {facts['started_at']} and {why}, so its side "
                "effect may or may not have happened",
                cause="interrupted" if info.get("interrupted") else "error_kept",
                error_type=error,
                **{**facts, "state": "unknown"},
            )
        if tag == _UNSERIALIZABLE:
            info = _json(payload)
            raise TypeError(
                f"{call.tool!r} already ran with this idempotency key (started {facts['started_at']}; its side effect "
                f"happened) but its outcome, a {info.get('type', '?')}, could not be serialized, so there is nothing "
                "to return to this repeat and the body will not run again. Pass serializer= (an object with "
                "dumps(value) -> bytes and loads(bytes) -> value) that can store it, or return JSON-ready data; "
                f"store.release({call.key!r}) lets it run again"
            )
        raise StoreError(f"the record of {call.tool!r} (key {call.key}) holds an outcome loopguard cannot read")

    def _record(self, call: _Call, outcome: Any) -> None:
        problem: Exception | None = None
        try:
            payload = self.serializer.dumps(outcome)
            if not isinstance(payload, bytes):
                raise TypeError(f"serializer.dumps returned {type(payload).__name__}, not bytes")
            data = _VALUE + payload
        except Exception as exc:
            problem = exc
            data = _UNSERIALIZABLE + json.dumps({"type": _type_name(outcome), "error": type(exc).__name__}).encode()
        try:
            mine = self.store.complete(call.key, call.token, data, ttl_seconds=call.ttl)
        except Exception as exc:
            logger.error(
                "loopguard: %r ran but its outcome could not be recorded (%s); it is returned to this caller, and "
                "repeats of this call will be refused (side_effect_unknown) once its %s s lease ends, until "
                "store.release(%r)",
                call.tool,
                exc,
                self.lease_seconds,
                call.key,
            )
            mine = True
        if not mine:
            logger.warning(
                "loopguard: %r finished after its claim (key %s) was released or taken over by another caller "
                "(lease_seconds=%s shorter than the body?): its outcome was not recorded and the body may have run "
                "twice",
                call.tool,
                call.key,
                self.lease_seconds,
            )
        if problem is not None:
            message = (
                f"loopguard: the outcome of {call.tool!r}, a {_type_name(outcome)}, cannot be serialized "
                f"({type(problem).__name__}: {problem}); it was returned to this caller and the call will not run "
                "again, but a repeat will get a TypeError instead of the outcome: pass serializer= to side_effect / "
                "SideEffects, or return JSON-ready data"
            )
            logger.warning("%s", message)
            warnings.warn(message, LoopGuardWarning, stacklevel=4)

    def _failed(self, call: _Call, exc: BaseException, *, interrupted: bool) -> None:
        try:
            if interrupted or self.on_error == "keep":
                info = {"error": type(exc).__name__, "interrupted": interrupted}
                self.store.complete(call.key, call.token, _FAILED + json.dumps(info).encode(), ttl_seconds=call.ttl)
            else:
                self.store.release(call.key, call.token)
        except Exception as err:
            logger.error(
                "loopguard: %r raised %s and its claim could not be updated (%s): repeats will be refused "
                "(side_effect_unknown) once its %s s lease ends, until store.release(%r)",
                call.tool,
                type(exc).__name__,
                err,
                self.lease_seconds,
                call.key,
            )

    def _release_quietly(self, call: _Call) -> None:
        try:
            self.store.release(call.key, call.token)
        except Exception as err:  # pragma: no cover - the store went away in between
            logger.error("loopguard: could not release the claim of %r (%s)", call.tool, err)

    def _not_awaited(self, call: _Call, outcome: Any) -> None:
        close = getattr(outcome, "close", None)
        if inspect.iscoroutine(outcome) and callable(close):
            close()  # never started: nothing ran
        self._release_quietly(call)
        raise TypeError(f"body of {call.tool!r} returned an awaitable: use arun() (or decorate the async function)")

    def __repr__(self) -> str:
        return (
            f"SideEffects({self.store!r}, ttl_seconds={self.ttl_seconds:g}, lease_seconds={self.lease_seconds:g}, "
            f"in_flight={self.in_flight!r}, on_unknown={self.on_unknown!r}, on_error={self.on_error!r})"
        )


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
