"""``LoopGuardMiddleware``: Anthropic client middleware that checks every Messages request and response.

Why client middleware (``anthropic>=2.11``): it sees every request the client makes, including the ones the
beta tool runner makes on its own, and an exception it raises reaches the caller unchanged and is never
retried by the SDK. It runs once per HTTP *attempt*, so the model pre-flight runs only on the first
attempt (``retries_taken == 0``) and is keyed by the SDK's idempotency key, which every retry shares.

Per request:
1. ``tool_result`` blocks answering tool calls this middleware admitted are reported (``after_tool``).
2. Model pre-flight (``before_model``): the body's ``max_tokens`` plus the estimated input tokens.
3. After a successful response: usage recorded (``after_model``), then every ``tool_use`` block checked
   (``before_tool``) *before the message is returned*, so neither the caller's loop nor the tool runner
   executes a refused call. Streamed responses are checked as they are read (see ``_sse``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from anthropic import AnthropicError, Middleware

from loopguard_core import Breaker, LoopGuardTripped

from ._body import (
    ToolUse,
    estimate_input_tokens,
    is_messages_call,
    max_output_tokens,
    tool_results,
    tool_uses,
    usage_tokens,
)
from ._sse import StreamWatch, Usage

__all__ = ["LoopGuardMiddleware"]

_MAX_PENDING = 4_096


class LoopGuardMiddleware(Middleware):
    """Checks Messages API calls against ``breaker``; ``agent`` names who makes them (for attribution)."""

    def __init__(self, breaker: Breaker, *, agent: str | None = None) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(
                f"LoopGuardMiddleware needs a loopguard_core.Breaker, got {type(breaker).__name__}; "
                "use guard(client, Breaker(...))"
            )
        if agent is not None and (not isinstance(agent, str) or not agent):
            raise TypeError(f"agent must be a non-empty str naming the agent, got {agent!r}")
        self.breaker = breaker
        self.agent = agent
        # tool_use id -> (tool, input): admitted calls whose result has not come back yet
        self._pending: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LoopGuardMiddleware(breaker={self.breaker!r}, agent={self.agent!r})"

    # -- sync client ---------------------------------------------------------------------------------
    def handle(self, request: Any, call_next: Callable[[Any], Any]) -> Any:
        body = _messages_body(request)
        if body is None:
            return call_next(request)
        call_id = _call_id(request)
        if request.retries_taken == 0:
            for tool, args, kwargs in self._outcomes(body):
                self.breaker.after_tool(tool, args, agent=self.agent, **kwargs)
            self.breaker.before_model(**self._preflight(body, call_id))
        try:
            response = call_next(request)
        except Exception as exc:  # a connection error: release the request's reservation, then go on
            self.breaker.model_failed(model=body.get("model"), agent=self.agent, call_id=call_id, error=exc)
            raise
        http = getattr(response, "http_response", None)
        if http is None or not http.is_success:
            if http is not None:  # an error status: the SDK retries or raises it; nothing was generated
                self.breaker.model_failed(model=body.get("model"), agent=self.agent, call_id=call_id)
            return response
        watch_input = body.get("messages")
        if request.stream:
            _watch_sync(http, lambda steps, watch: self._apply_sync(steps, watch, call_id, watch_input))
            return response
        data = _json(http.read())
        self._apply_sync(_message_steps(data), None, call_id, watch_input)
        return response

    def _apply_sync(
        self, steps: list[ToolUse | Usage], watch: StreamWatch | None, call_id: str | None, messages: Any
    ) -> None:
        try:
            for step in steps:
                if isinstance(step, Usage):
                    self.breaker.after_model(**self._usage(step, call_id, messages))
                else:
                    self.breaker.before_tool(step.name, step.input, agent=self.agent, call_id=step.id or None)
                    self._remember(step)
        except LoopGuardTripped:
            if watch is not None and not watch.usage_done:  # a trip mid-stream: what was spent still counts
                self.breaker.after_model(**self._usage(watch.take_usage(), call_id, messages))
            raise

    # -- async client --------------------------------------------------------------------------------
    async def handle_async(self, request: Any, call_next: Callable[[Any], Any]) -> Any:
        body = _messages_body(request)
        if body is None:
            return await call_next(request)
        call_id = _call_id(request)
        if request.retries_taken == 0:
            for tool, args, kwargs in self._outcomes(body):
                await self.breaker.aafter_tool(tool, args, agent=self.agent, **kwargs)
            await self.breaker.abefore_model(**self._preflight(body, call_id))
        try:
            response = await call_next(request)
        except Exception as exc:  # a connection error: release the request's reservation, then go on
            await self.breaker.amodel_failed(model=body.get("model"), agent=self.agent, call_id=call_id, error=exc)
            raise
        http = getattr(response, "http_response", None)
        if http is None or not http.is_success:
            if http is not None:  # an error status: the SDK retries or raises it; nothing was generated
                await self.breaker.amodel_failed(model=body.get("model"), agent=self.agent, call_id=call_id)
            return response
        watch_input = body.get("messages")
        if request.stream:

            async def apply(steps: list[ToolUse | Usage], watch: StreamWatch) -> None:
                await self._apply_async(steps, watch, call_id, watch_input)

            _watch_async(http, apply)
            return response
        data = _json(await http.aread())
        await self._apply_async(_message_steps(data), None, call_id, watch_input)
        return response

    async def _apply_async(
        self, steps: list[ToolUse | Usage], watch: StreamWatch | None, call_id: str | None, messages: Any
    ) -> None:
        try:
            for step in steps:
                if isinstance(step, Usage):
                    await self.breaker.aafter_model(**self._usage(step, call_id, messages))
                else:
                    await self.breaker.abefore_tool(step.name, step.input, agent=self.agent, call_id=step.id or None)
                    self._remember(step)
        except LoopGuardTripped:
            if watch is not None and not watch.usage_done:
                await self.breaker.aafter_model(**self._usage(watch.take_usage(), call_id, messages))
            raise

    # -- shared ---------------------------------------------------------------------------------------
    def _preflight(self, body: Mapping[str, Any], call_id: str | None) -> dict[str, Any]:
        model = body.get("model")
        return {
            "model": model if isinstance(model, str) else None,
            "estimated_input_tokens": estimate_input_tokens(body),
            "max_output_tokens": max_output_tokens(body),
            "agent": self.agent,
            "call_id": call_id,
        }

    def _usage(self, usage: Usage, call_id: str | None, messages: Any) -> dict[str, Any]:
        return {
            # Cache writes and reads are input the model processed: they count toward the token budget.
            "input_tokens": usage.input_tokens + usage.cache_creation + usage.cache_read,
            "output_tokens": usage.output_tokens,
            "model": usage.model,
            "agent": self.agent,
            "cost_usd": self._cost(usage),
            "call_id": call_id,
            "input": messages,  # hashed into the ledger, never stored
        }

    def _cost(self, usage: Usage) -> float | None:
        # With a USD ceiling and the default price source, price cache tokens at their own rates.
        from loopguard_core import GenaiPrices

        if self.breaker.limits.max_cost_usd is None or not isinstance(self.breaker.prices, GenaiPrices):
            return None
        if usage.model is None:
            return None
        try:
            import genai_prices

            price = genai_prices.calc_price(
                genai_prices.Usage(
                    input_tokens=usage.input_tokens + usage.cache_creation + usage.cache_read,
                    cache_write_tokens=usage.cache_creation,
                    cache_read_tokens=usage.cache_read,
                    output_tokens=usage.output_tokens,
                ),
                model_ref=usage.model,
                provider_id="anthropic",
            )
            return float(price.total_price)
        except Exception:  # unknown model or no price data: the breaker prices (and warns) by itself
            return None

    def _remember(self, call: ToolUse) -> None:
        if not call.id:
            return
        with self._lock:
            self._pending[call.id] = (call.name, call.input)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)

    def _outcomes(self, body: Mapping[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
        """``(tool, input, after_tool kwargs)`` for each tool_result answering a call admitted here."""
        for result in tool_results(body):
            with self._lock:
                pending = self._pending.pop(result.tool_use_id, None)
            if pending is None:
                continue  # not ours, or already reported (the whole history is sent every time)
            tool, args = pending
            if result.is_error:
                outcome = {"error": result.content if result.content not in (None, "", []) else "tool error"}
            else:
                outcome = {"result": result.content}
            yield tool, args, {"call_id": result.tool_use_id, **outcome}


def _messages_body(request: Any) -> Mapping[str, Any] | None:
    if not is_messages_call(str(request.method), str(request.url)):
        return None
    body = request.json
    return body if isinstance(body, Mapping) else None


def _call_id(request: Any) -> str | None:
    # The SDK reuses one idempotency key for every retry of a logical request.
    key = getattr(request.options, "idempotency_key", None)
    return key if isinstance(key, str) and key else None


def _json(content: bytes) -> Mapping[str, Any]:
    import json

    try:
        data = json.loads(content)
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _message_steps(data: Mapping[str, Any]) -> list[ToolUse | Usage]:
    input_tokens, cache_creation, cache_read, output_tokens = usage_tokens(data.get("usage"))
    model = data.get("model")
    usage = Usage(input_tokens, cache_creation, cache_read, output_tokens, model if isinstance(model, str) else None)
    return [usage, *tool_uses(data.get("content"))]


# -- streams: watch the decoded bytes as the SDK's Stream reads them ------------------------------------------
#
# The check runs inside the response's byte iterator, so the bytes that complete a refused call never pass.
# From anthropic 2.17 the SDK's Stream wraps anything that iterator raises into APIConnectionError("Connection
# error."), and it closes the response (in a ``finally``) while that wrapper propagates. So ``close`` puts the
# guard's own exception back in its place. Older releases and raw readers (``iter_bytes``, ``read``) get it
# directly, and then ``close`` leaves it alone.


class _Raised:
    """What the guard's check raised inside one response body, kept until ``close`` can restore it."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def restore(self) -> None:
        """Called by ``close``: if an SDK error that wraps the guard's error is propagating, raise the guard's."""
        error, current = self.error, sys.exc_info()[1]
        if error is None or not isinstance(current, AnthropicError) or not _caused_by(current, error):
            return
        self.error = None
        raise error from None  # the wrapper was the SDK's reading of our raise, not a connection failure


def _caused_by(error: BaseException, cause: BaseException) -> bool:
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if current is cause:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def _watch_sync(http: Any, apply: Callable[[list[ToolUse | Usage], StreamWatch], None]) -> None:
    original_iter, original_close = http.iter_bytes, http.close
    watch, raised = StreamWatch(), _Raised()

    def check(steps: list[ToolUse | Usage]) -> None:
        try:
            apply(steps, watch)
        except Exception as exc:
            raised.error = exc
            raise

    def iter_bytes(chunk_size: int | None = None) -> Iterator[bytes]:
        with contextlib.closing(original_iter(chunk_size)) as chunks:
            for chunk in chunks:
                check(watch.feed(chunk))  # may raise: the bytes that complete a refused call never pass
                yield chunk
            check(watch.finish())

    def close() -> None:
        original_close()
        raised.restore()

    # This response only: every reader (Stream, iter_text, read) goes through them.
    http.iter_bytes = iter_bytes
    http.close = close


def _watch_async(http: Any, apply: Callable[[list[ToolUse | Usage], StreamWatch], Awaitable[None]]) -> None:
    original_iter, original_close = http.aiter_bytes, http.aclose
    watch, raised = StreamWatch(), _Raised()

    async def check(steps: list[ToolUse | Usage]) -> None:
        try:
            await apply(steps, watch)
        except Exception as exc:
            raised.error = exc
            raise

    async def aiter_bytes(chunk_size: int | None = None) -> AsyncIterator[bytes]:
        chunks = original_iter(chunk_size)
        try:
            async for chunk in chunks:
                await check(watch.feed(chunk))
                yield chunk
            await check(watch.finish())
        finally:
            await chunks.aclose()

    async def aclose() -> None:
        await original_close()
        raised.restore()

    http.aiter_bytes = aiter_bytes
    http.aclose = aclose
