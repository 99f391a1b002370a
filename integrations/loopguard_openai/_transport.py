"""``LoopGuardTransport``: an HTTP transport that checks every Chat Completions and Responses call.

Why a transport (the SDK's supported extension point: ``OpenAI(http_client=...)``): it sees every request the
client makes, its own retries included, streamed or not, and it can answer in place of the network, so a
refused request is never sent.

Why a refusal is not simply raised from the transport: the SDK retries every exception ``send`` raises
(``max_retries``, with back-off sleeps) and then wraps it in ``APIConnectionError``; only ``OpenAIError``
subclasses pass through as they are (openai 2.x ``_base_client.py``, ``SyncAPIClient.request``; 3.x retries and
wraps only the HTTP library's request errors, and the answer below works on both). loopguard's trip
is not an SDK error, so the transport *answers*: a ``400`` response (nothing sent upstream, or the real body
withheld) whose ``raise_for_status`` raises the trip. The SDK calls ``raise_for_status`` right after ``send``,
outside its retry ``try``, so the trip reaches the caller as the same ``LoopGuardTripped`` object, unwrapped
and never retried. Should a later SDK stop calling it, the 400 still fails closed (``BadRequestError``).

Streams are checked as they are read: the check runs inside the response's byte stream, which the SDK's
``Stream`` iterates without wrapping anything but transport errors, so the trip arrives unwrapped there too.

``on_trip="steer"``: a refused tool call in a complete reply is answered in the caller's place and the model is
asked again when nothing else was in the reply (see ``_steer``); a refusal that must stop the run still goes out
through the refusal response above.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from types import ModuleType
from typing import Any

from loopguard_core import Breaker, LoopGuardTripped

from ._body import (
    Endpoint,
    ToolCall,
    Usage,
    endpoint,
    estimate_input_tokens,
    max_output_tokens,
    response_steps,
    tool_results,
)
from ._sse import StreamWatch
from ._steer import Steering, reply_bytes, steerable

__all__ = ["ON_TRIP", "LoopGuardCore", "transport_classes"]

_MAX_PENDING = 4_096
_DROP_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
ON_TRIP = ("raise", "steer")


class _Call:
    """One guarded model call: what was parsed from the request and what the breaker needs to know."""

    __slots__ = ("_estimate", "body", "call_id", "kind", "model", "restored")

    def __init__(self, kind: Endpoint, body: Mapping[str, Any], call_id: str, restored: bool = False) -> None:
        self.kind = kind
        self.body = body
        self.call_id = call_id
        self.restored = restored  # steer: the body is the caller's with what it never saw put back
        model = body.get("model")
        self.model = model if isinstance(model, str) else None
        self._estimate: int | None = None

    def estimated_input(self) -> int:
        """The request's input tokens, estimated on first use: reading the whole conversation is most of a
        request's work here, and only a token or USD ceiling, a budget, or a reply without usage needs it."""
        if self._estimate is None:
            self._estimate = estimate_input_tokens(self.kind, self.body)
        return self._estimate


class LoopGuardCore:
    """What the sync and async transports share: request parsing, bookkeeping and the steer state."""

    def __init__(self, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"loopguard_openai needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if agent is not None and (not isinstance(agent, str) or not agent):
            raise TypeError(f"agent must be a non-empty str naming the agent, got {agent!r}")
        check_on_trip(on_trip)
        self.breaker = breaker
        self.agent = agent
        self.on_trip = on_trip
        self.steering = Steering()  # steer: what the caller's history lacks, put back into its next requests
        self._lock = threading.Lock()
        # tool call id -> (tool, arguments): admitted calls whose result has not come back yet
        self._pending: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        # request body digest -> call id: a retry of a logical request shares its first attempt's call id
        self._attempts: OrderedDict[str, str] = OrderedDict()

    # -- requests -------------------------------------------------------------------------------------
    def parse(self, request: Any) -> tuple[_Call, bool] | None:
        """``(call, first_attempt)`` for a guarded model call, ``None`` for anything else."""
        kind = endpoint(str(request.method), str(request.url.path))
        if kind is None:
            return None
        content = request.content
        try:
            body = json.loads(content) if content else {}
        except ValueError:
            return None
        if not isinstance(body, Mapping):
            return None
        retries = request.headers.get("x-stainless-retry-count", "0")
        first = retries in ("0", "")
        digest = hashlib.sha256(content or b"").hexdigest()
        with self._lock:
            if first:
                call_id = self._attempts[digest] = uuid.uuid4().hex
                while len(self._attempts) > _MAX_PENDING:
                    self._attempts.popitem(last=False)
            else:
                call_id = self._attempts.get(digest) or uuid.uuid4().hex
        restored = self.steering.restore(kind, body) if self.on_trip == "steer" else None
        if restored is not None:
            return _Call(kind, restored, call_id, True), first
        return _Call(kind, body, call_id), first

    def steers(self, call: _Call, data: Mapping[str, Any]) -> bool:
        """Whether the complete reply ``data`` to ``call`` is steered (else a refusal in it is raised)."""
        return self.on_trip == "steer" and steerable(call.kind, call.body, data)

    def reask(self, call: _Call, body: Mapping[str, Any], attempt: int) -> _Call:
        """The model call that asks ``call`` again with the refusals: a new call, not a retry of the refused one."""
        return _Call(call.kind, body, f"{call.call_id}:steer-{attempt}")

    def outcomes(self, call: _Call) -> Iterator[tuple[str, Any, dict[str, Any]]]:
        """``(tool, arguments, after_tool kwargs)`` for each tool result answering a call admitted here."""
        for result in tool_results(call.kind, call.body):
            with self._lock:
                pending = self._pending.pop(result.call_id, None)
            if pending is not None:
                yield pending[0], pending[1], {"call_id": result.call_id, "result": result.content}

    def preflight(self, call: _Call) -> dict[str, Any]:
        return {
            "model": call.model,
            "estimated_input_tokens": call.estimated_input() if self.breaker.needs_token_estimate else 0,
            "max_output_tokens": max_output_tokens(call.kind, call.body),
            "agent": self.agent,
            "call_id": call.call_id,
        }

    def usage(self, call: _Call, usage: Usage) -> dict[str, Any]:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "model": usage.model or call.model,
            "agent": self.agent,
            "call_id": call.call_id,
            "input": call.body.get("messages") if call.kind == "chat" else call.body.get("input"),
        }

    def fallback(self, call: _Call) -> Usage:
        """What a response without a usage block is counted as: the estimate, and the cap for output."""
        return Usage(call.estimated_input(), max_output_tokens(call.kind, call.body), call.model, True)

    def remember(self, tool: ToolCall) -> None:
        if not tool.id:
            return
        with self._lock:
            self._pending[tool.id] = (tool.name, tool.arguments)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)


def check_on_trip(on_trip: str) -> None:
    if on_trip not in ON_TRIP:
        raise ValueError(
            f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a client has no run to end gracefully: "
            "your loop decides when to stop)"
        )


def rebuilt(module: ModuleType, request: Any, body: Mapping[str, Any]) -> Any:
    """``request`` with ``body`` as its JSON body (the length recomputed)."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    content = json.dumps(body, ensure_ascii=False).encode()
    return module.Request(request.method, request.url, headers=headers, content=content, extensions=request.extensions)


def refusal_response(module: ModuleType, request: Any, trip: LoopGuardTripped) -> Any:
    """A response that nothing upstream produced: the SDK's ``raise_for_status`` raises ``trip`` from it."""
    error = {"error": {"message": str(trip), "type": "loopguard_refused", "code": trip.reason, "param": None}}
    response = module.Response(
        400,
        headers={"content-type": "application/json", "x-loopguard-refused": trip.reason},
        content=json.dumps(error).encode(),
        request=request,
    )

    def raise_for_status() -> Any:
        raise trip

    response.raise_for_status = raise_for_status  # this response only
    return response


def _headers(upstream: Any) -> list[tuple[str, str]]:
    # The body handed on is decoded already: drop the headers that described the encoded one.
    return [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in _DROP_HEADERS]


_CLASSES: dict[str, tuple[type, type]] = {}


def transport_classes(module: ModuleType) -> tuple[type, type]:
    """``(LoopGuardTransport, AsyncLoopGuardTransport)`` for ``httpx`` (openai 2.x) or ``httpx2`` (openai 3.x)."""
    cached = _CLASSES.get(module.__name__)
    if cached is None:
        cached = _CLASSES[module.__name__] = _build(module)
    return cached


def _build(module: ModuleType) -> tuple[type, type]:
    class _Stream(module.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, core: LoopGuardCore, call: _Call, upstream: Any) -> None:
            self._core, self._call, self._upstream = core, call, upstream
            self._watch = StreamWatch(call.kind, estimated_input=call.estimated_input, model=call.model)

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._upstream.iter_bytes():
                self._apply(self._watch.feed(chunk))  # may raise: the bytes completing a refused call never pass
                yield chunk
            self._apply(self._watch.finish())

        def _apply(self, steps: list[ToolCall | Usage]) -> None:
            _apply_sync(self._core, self._call, steps, self._watch)

        def close(self) -> None:
            self._upstream.close()

    class _AsyncStream(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, core: LoopGuardCore, call: _Call, upstream: Any) -> None:
            self._core, self._call, self._upstream = core, call, upstream
            self._watch = StreamWatch(call.kind, estimated_input=call.estimated_input, model=call.model)

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._upstream.aiter_bytes():
                await _apply_async(self._core, self._call, self._watch.feed(chunk), self._watch)
                yield chunk
            await _apply_async(self._core, self._call, self._watch.finish(), self._watch)

        async def aclose(self) -> None:
            await self._upstream.aclose()

    class LoopGuardTransport(module.BaseTransport):  # type: ignore[misc,name-defined]
        """Forwards to ``inner`` (the client you had: its transport, proxies, hooks and timeouts stay in force)."""

        def __init__(self, inner: Any, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> None:
            self.inner = inner
            self.core = LoopGuardCore(breaker, agent=agent, on_trip=on_trip)

        def handle_request(self, request: Any) -> Any:
            parsed = self.core.parse(request)
            if parsed is None:
                return _passthrough(module, self.inner.send(request, stream=True), request)
            call, first = parsed
            core, breaker = self.core, self.core.breaker
            if call.restored:
                request = rebuilt(module, request, call.body)
            if first:
                for tool, args, kwargs in core.outcomes(call):
                    breaker.after_tool(tool, args, agent=core.agent, **kwargs)
                try:
                    breaker.before_model(**core.preflight(call))
                except LoopGuardTripped as trip:
                    return refusal_response(module, request, trip)
            try:
                upstream = self.inner.send(request, stream=True)
            except Exception as exc:  # a connection error: release the reservation; the SDK retries or raises
                breaker.model_failed(model=call.model, agent=core.agent, call_id=call.call_id, error=exc)
                raise
            if not upstream.is_success:  # an error status: nothing was generated; the SDK retries or raises
                breaker.model_failed(model=call.model, agent=core.agent, call_id=call.call_id)
                return _passthrough(module, upstream, request)
            if call.body.get("stream"):
                return module.Response(
                    upstream.status_code,
                    headers=_headers(upstream),
                    stream=_Stream(core, call, upstream),
                    request=request,
                    extensions=upstream.extensions,
                )
            try:
                content = upstream.read()
            finally:
                upstream.close()
            data = _json(content)
            if core.steers(call, data):
                return self._steer(request, call, upstream, content, data)
            try:
                _apply_sync(core, call, response_steps(call.kind, data, core.fallback(call)), None)
            except LoopGuardTripped as trip:
                return refusal_response(module, request, trip)
            return _complete(module, upstream, content, request)

        def _steer(self, request: Any, call: _Call, upstream: Any, content: bytes, data: Mapping[str, Any]) -> Any:
            core, breaker = self.core, self.core.breaker
            exchanges: list[dict[str, Any]] = []
            current = call
            for attempt in itertools.count(1):
                try:
                    refused = _judge_sync(core, current, data)
                except LoopGuardTripped as trip:  # a budget ceiling, or too many refusals: the run stops
                    return refusal_response(module, request, trip)
                verdict = core.steering.judge(call.kind, call.body, data, refused, exchanges)
                if verdict.reask is None:
                    return _complete(
                        module, upstream, content if verdict.reply is None else reply_bytes(verdict.reply), request
                    )
                # Every tool call of the reply was refused: ask again at once, with the refusals.
                exchanges, current = verdict.exchanges, core.reask(call, verdict.reask, attempt)
                try:
                    breaker.before_model(**core.preflight(current))
                except LoopGuardTripped as trip:
                    return refusal_response(module, request, trip)
                try:
                    upstream = self.inner.send(rebuilt(module, request, current.body), stream=True)
                except Exception as exc:
                    breaker.model_failed(model=current.model, agent=core.agent, call_id=current.call_id, error=exc)
                    raise
                if not upstream.is_success:
                    breaker.model_failed(model=current.model, agent=core.agent, call_id=current.call_id)
                    return _passthrough(module, upstream, request)
                try:
                    content = upstream.read()
                finally:
                    upstream.close()
                data = _json(content)
            raise AssertionError("unreachable")  # pragma: no cover

        def close(self) -> None:
            """The inner client is yours: it stays open (close it yourself when you are done with it)."""

    class AsyncLoopGuardTransport(module.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        """The async twin of ``LoopGuardTransport``, forwarding to an ``AsyncClient``."""

        def __init__(self, inner: Any, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> None:
            self.inner = inner
            self.core = LoopGuardCore(breaker, agent=agent, on_trip=on_trip)

        async def handle_async_request(self, request: Any) -> Any:
            parsed = self.core.parse(request)
            if parsed is None:
                return _apassthrough(module, await self.inner.send(request, stream=True), request)
            call, first = parsed
            core, breaker = self.core, self.core.breaker
            if call.restored:
                request = rebuilt(module, request, call.body)
            if first:
                for tool, args, kwargs in core.outcomes(call):
                    await breaker.aafter_tool(tool, args, agent=core.agent, **kwargs)
                try:
                    await breaker.abefore_model(**core.preflight(call))
                except LoopGuardTripped as trip:
                    return refusal_response(module, request, trip)
            try:
                upstream = await self.inner.send(request, stream=True)
            except Exception as exc:
                await breaker.amodel_failed(model=call.model, agent=core.agent, call_id=call.call_id, error=exc)
                raise
            if not upstream.is_success:
                await breaker.amodel_failed(model=call.model, agent=core.agent, call_id=call.call_id)
                return _apassthrough(module, upstream, request)
            if call.body.get("stream"):
                return module.Response(
                    upstream.status_code,
                    headers=_headers(upstream),
                    stream=_AsyncStream(core, call, upstream),
                    request=request,
                    extensions=upstream.extensions,
                )
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
            data = _json(content)
            if core.steers(call, data):
                return await self._steer(request, call, upstream, content, data)
            try:
                await _apply_async(core, call, response_steps(call.kind, data, core.fallback(call)), None)
            except LoopGuardTripped as trip:
                return refusal_response(module, request, trip)
            return _complete(module, upstream, content, request)

        async def _steer(
            self, request: Any, call: _Call, upstream: Any, content: bytes, data: Mapping[str, Any]
        ) -> Any:
            core, breaker = self.core, self.core.breaker
            exchanges: list[dict[str, Any]] = []
            current = call
            for attempt in itertools.count(1):
                try:
                    refused = await _judge_async(core, current, data)
                except LoopGuardTripped as trip:
                    return refusal_response(module, request, trip)
                verdict = core.steering.judge(call.kind, call.body, data, refused, exchanges)
                if verdict.reask is None:
                    return _complete(
                        module, upstream, content if verdict.reply is None else reply_bytes(verdict.reply), request
                    )
                exchanges, current = verdict.exchanges, core.reask(call, verdict.reask, attempt)
                try:
                    await breaker.abefore_model(**core.preflight(current))
                except LoopGuardTripped as trip:
                    return refusal_response(module, request, trip)
                try:
                    upstream = await self.inner.send(rebuilt(module, request, current.body), stream=True)
                except Exception as exc:
                    await breaker.amodel_failed(
                        model=current.model, agent=core.agent, call_id=current.call_id, error=exc
                    )
                    raise
                if not upstream.is_success:
                    await breaker.amodel_failed(model=current.model, agent=core.agent, call_id=current.call_id)
                    return _apassthrough(module, upstream, request)
                try:
                    content = await upstream.aread()
                finally:
                    await upstream.aclose()
                data = _json(content)
            raise AssertionError("unreachable")  # pragma: no cover

        async def aclose(self) -> None:
            """The inner client is yours: it stays open."""

    class _Passthrough(module.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, upstream: Any) -> None:
            self._upstream = upstream

        def __iter__(self) -> Iterator[bytes]:
            yield from self._upstream.iter_bytes()

        def close(self) -> None:
            self._upstream.close()

    class _AsyncPassthrough(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, upstream: Any) -> None:
            self._upstream = upstream

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._upstream.aiter_bytes():
                yield chunk

        async def aclose(self) -> None:
            await self._upstream.aclose()

    def _passthrough(module: ModuleType, upstream: Any, request: Any) -> Any:
        return module.Response(
            upstream.status_code,
            headers=_headers(upstream),
            stream=_Passthrough(upstream),
            request=request,
            extensions=upstream.extensions,
        )

    def _apassthrough(module: ModuleType, upstream: Any, request: Any) -> Any:
        return module.Response(
            upstream.status_code,
            headers=_headers(upstream),
            stream=_AsyncPassthrough(upstream),
            request=request,
            extensions=upstream.extensions,
        )

    return LoopGuardTransport, AsyncLoopGuardTransport


def _complete(module: ModuleType, upstream: Any, content: bytes, request: Any) -> Any:
    """The complete reply handed on: ``content`` (read from ``upstream``, or steered) with upstream's status."""
    return module.Response(
        upstream.status_code,
        headers=_headers(upstream),
        content=content,
        request=request,
        extensions=upstream.extensions,
    )


def _json(content: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(content)
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _apply_sync(core: LoopGuardCore, call: _Call, steps: list[ToolCall | Usage], watch: StreamWatch | None) -> None:
    breaker = core.breaker
    try:
        for step in steps:
            if isinstance(step, Usage):
                breaker.after_model(**core.usage(call, step))
            else:
                breaker.before_tool(step.name, step.arguments, agent=core.agent, call_id=step.id or None)
                core.remember(step)
    except LoopGuardTripped:
        if watch is not None and not watch.usage_done:  # a trip mid-stream: what was spent still counts
            breaker.after_model(**core.usage(call, watch.take_usage()))
        raise


async def _apply_async(
    core: LoopGuardCore, call: _Call, steps: list[ToolCall | Usage], watch: StreamWatch | None
) -> None:
    breaker = core.breaker
    try:
        for step in steps:
            if isinstance(step, Usage):
                await breaker.aafter_model(**core.usage(call, step))
            else:
                await breaker.abefore_tool(step.name, step.arguments, agent=core.agent, call_id=step.id or None)
                core.remember(step)
    except LoopGuardTripped:
        if watch is not None and not watch.usage_done:
            await breaker.aafter_model(**core.usage(call, watch.take_usage()))
        raise


def _judge_sync(core: LoopGuardCore, call: _Call, data: Mapping[str, Any]) -> dict[str, str]:
    """Steer: record the reply's usage and check its tool calls; returns call id -> what to tell the model for each
    refused one. Raises when the run must stop (``Breaker.steer``)."""
    breaker, refused = core.breaker, {}
    for step in response_steps(call.kind, data, core.fallback(call)):
        if isinstance(step, Usage):
            breaker.after_model(**core.usage(call, step))
            continue
        try:
            breaker.before_tool(step.name, step.arguments, agent=core.agent, call_id=step.id or None)
        except LoopGuardTripped as trip:
            refused[step.id] = breaker.steer(trip)
            continue
        core.remember(step)
    return refused


async def _judge_async(core: LoopGuardCore, call: _Call, data: Mapping[str, Any]) -> dict[str, str]:
    breaker, refused = core.breaker, {}
    for step in response_steps(call.kind, data, core.fallback(call)):
        if isinstance(step, Usage):
            await breaker.aafter_model(**core.usage(call, step))
            continue
        try:
            await breaker.abefore_tool(step.name, step.arguments, agent=core.agent, call_id=step.id or None)
        except LoopGuardTripped as trip:
            refused[step.id] = await breaker.asteer(trip)
            continue
        core.remember(step)
    return refused


def http_module(http_client: Any) -> ModuleType:
    """The HTTP library of the client the SDK uses: ``httpx`` (openai 2.x) or ``httpx2`` (openai 3.x)."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is None:
            continue
        sync, asyncc = getattr(module, "Client", None), getattr(module, "AsyncClient", None)
        if (sync is not None and isinstance(http_client, sync)) or (
            asyncc is not None and isinstance(http_client, asyncc)
        ):
            return module
    raise TypeError(f"guard() needs an OpenAI client built on httpx or httpx2, got an http client {http_client!r}")
