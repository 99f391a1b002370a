"""``LoopGuardLogger``: the breaker as a LiteLLM ``CustomLogger``, for the proxy and the SDK.

Where LiteLLM swallows callback exceptions (verified on litellm 1.110): everything a logging callback raises
in the SDK is logged and dropped: ``log_pre_api_call`` in ``Logging.pre_call``
(``litellm_core_utils/litellm_logging.py``, "[Non-Blocking] Exception occurred while logging"), and the
success/failure handlers run after the call, off the caller's path. A callback can therefore neither refuse an
SDK request before it is sent nor stop the caller. The channels that do propagate:

- **proxy**: ``async_pre_call_hook`` runs before the proxy forwards a request, and what it raises becomes the
  client's error response (the request is never sent upstream); ``async_post_call_success_hook`` runs before
  the response is returned, so a refused tool call never reaches the client.
- **SDK**: the caller's own frame. ``logger.completion(...)`` / ``await logger.acompletion(...)`` (same
  arguments as ``litellm.completion``) run the pre-flight before calling LiteLLM and check the response (or
  each streamed chunk) before handing it back, so ``LoopGuardTripped`` reaches the caller unwrapped.

``on_trip="steer"`` works where the guard makes the call itself, the SDK's ``completion`` / ``acompletion`` with a
complete (not streamed) reply: a refused tool call is answered in the caller's place with a ``role: "tool"``
message and the model is asked again when nothing else was in the reply, the history kept true as for the OpenAI
client (``loopguard_openai._steer``). The proxy hooks cannot: a post-call hook can only pass or fail the response
it is given, not ask the model again, so a refusal there is raised in both modes.
"""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_openai._body import (
    ToolCall,
    Usage,
    estimate_input_tokens,
    max_output_tokens,
    response_steps,
    tool_results,
)
from loopguard_openai._sse import StreamWatch
from loopguard_openai._steer import Steering, Verdict, steerable

__all__ = ["LoopGuardLogger"]

_MAX_PENDING = 4_096


class LoopGuardLogger(CustomLogger):
    """Checks LiteLLM chat completions against ``breaker``; ``agent`` names who makes them.

    ``on_trip="raise"`` (default) raises a refusal to the caller. ``on_trip="steer"``: in ``completion`` /
    ``acompletion`` (not streamed), a refused tool call is answered for the caller with a tool message telling the
    model why, and the model is asked again when nothing else was in the reply; budget ceilings and the
    ``max_refusals`` stop are raised. Streams and the proxy hooks raise in both modes.
    """

    def __init__(self, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"LoopGuardLogger needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if on_trip not in ("raise", "steer"):
            raise ValueError(
                f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a completion call has no run to end "
                "gracefully: your loop decides when to stop)"
            )
        super().__init__()
        self.breaker = breaker
        self.agent = agent
        self.on_trip = on_trip
        self._pending: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._steering = Steering()  # steer: what the caller's history lacks, put back into its next requests

    # -- shared -----------------------------------------------------------------------------------
    def _preflight(self, body: Mapping[str, Any], call_id: str) -> dict[str, Any]:
        model = body.get("model")
        return {
            "model": _price_name(model),
            # Read only when a ceiling or budget uses it (reading the whole conversation is most of a request's
            # work); a reply without usage estimates its request itself (_fallback, StreamWatch).
            "estimated_input_tokens": estimate_input_tokens("chat", body) if self.breaker.needs_token_estimate else 0,
            "max_output_tokens": max_output_tokens("chat", body),
            "agent": self.agent,
            "call_id": call_id,
        }

    def _outcomes(self, body: Mapping[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
        for result in tool_results("chat", body):
            with self._lock:
                pending = self._pending.pop(result.call_id, None)
            if pending is not None:
                yield pending[0], pending[1], {"call_id": result.call_id, "result": result.content}

    def _usage(self, body: Mapping[str, Any], usage: Usage, call_id: str) -> dict[str, Any]:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "model": _price_name(usage.model or body.get("model")),
            "agent": self.agent,
            "call_id": call_id,
            "input": body.get("messages"),
        }

    def _fallback(self, body: Mapping[str, Any]) -> Usage:
        return Usage(estimate_input_tokens("chat", body), max_output_tokens("chat", body), None, True)

    def _remember(self, call: ToolCall) -> None:
        if call.id:
            with self._lock:
                self._pending[call.id] = (call.name, call.arguments)
                while len(self._pending) > _MAX_PENDING:
                    self._pending.popitem(last=False)

    def _apply(self, body: Mapping[str, Any], steps: list[ToolCall | Usage], call_id: str) -> None:
        for step in steps:
            if isinstance(step, Usage):
                self.breaker.after_model(**self._usage(body, step, call_id))
            else:
                self.breaker.before_tool(step.name, step.arguments, agent=self.agent, call_id=step.id or None)
                self._remember(step)

    async def _aapply(self, body: Mapping[str, Any], steps: list[ToolCall | Usage], call_id: str) -> None:
        for step in steps:
            if isinstance(step, Usage):
                await self.breaker.aafter_model(**self._usage(body, step, call_id))
            else:
                await self.breaker.abefore_tool(step.name, step.arguments, agent=self.agent, call_id=step.id or None)
                self._remember(step)

    # -- SDK: the caller's frame ----------------------------------------------------------------------
    def completion(self, **kwargs: Any) -> Any:
        """``litellm.completion(**kwargs)``, checked: refused pre-flight, tool calls checked before return."""
        kwargs = self._restored(kwargs)
        call_id = uuid.uuid4().hex
        for tool, args, extra in self._outcomes(kwargs):
            self.breaker.after_tool(tool, args, agent=self.agent, **extra)
        self.breaker.before_model(**self._preflight(kwargs, call_id))
        try:
            response = litellm.completion(**kwargs)
        except Exception as exc:
            self.breaker.model_failed(
                model=_price_name(kwargs.get("model")), agent=self.agent, call_id=call_id, error=exc
            )
            raise
        if kwargs.get("stream"):
            return self._watch(kwargs, response, call_id)
        data = _dump(response)
        if self._steers(kwargs, data):
            return self._steer(kwargs, response, data, call_id)
        self._apply(kwargs, response_steps("chat", data, self._fallback(kwargs)), call_id)
        return response

    async def acompletion(self, **kwargs: Any) -> Any:
        """``await litellm.acompletion(**kwargs)``, checked like :meth:`completion`."""
        kwargs = self._restored(kwargs)
        call_id = uuid.uuid4().hex
        for tool, args, extra in self._outcomes(kwargs):
            await self.breaker.aafter_tool(tool, args, agent=self.agent, **extra)
        await self.breaker.abefore_model(**self._preflight(kwargs, call_id))
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:
            await self.breaker.amodel_failed(
                model=_price_name(kwargs.get("model")), agent=self.agent, call_id=call_id, error=exc
            )
            raise
        if kwargs.get("stream"):
            return self._awatch(kwargs, response, call_id)
        data = _dump(response)
        if self._steers(kwargs, data):
            return await self._asteer(kwargs, response, data, call_id)
        await self._aapply(kwargs, response_steps("chat", data, self._fallback(kwargs)), call_id)
        return response

    # -- SDK: steer (complete replies) ------------------------------------------------------------------
    def _steers(self, kwargs: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        return self.on_trip == "steer" and steerable("chat", kwargs, data)

    def _restored(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments with what the caller never saw (steered refusals) put back into ``messages``."""
        messages = kwargs.get("messages")
        if self.on_trip != "steer" or not isinstance(messages, list):
            return kwargs
        plain = [message if isinstance(message, Mapping) else _dump(message) for message in messages]
        restored = self._steering.restore("chat", {**kwargs, "messages": plain})
        return kwargs if restored is None else restored

    def _judge(self, kwargs: Mapping[str, Any], data: Mapping[str, Any], call_id: str) -> dict[str, str]:
        refused: dict[str, str] = {}
        for step in response_steps("chat", data, self._fallback(kwargs)):
            if isinstance(step, Usage):
                self.breaker.after_model(**self._usage(kwargs, step, call_id))
                continue
            try:
                self.breaker.before_tool(step.name, step.arguments, agent=self.agent, call_id=step.id or None)
            except LoopGuardTripped as trip:
                refused[step.id] = self.breaker.steer(trip)  # raises when the run must stop
                continue
            self._remember(step)
        return refused

    async def _ajudge(self, kwargs: Mapping[str, Any], data: Mapping[str, Any], call_id: str) -> dict[str, str]:
        refused: dict[str, str] = {}
        for step in response_steps("chat", data, self._fallback(kwargs)):
            if isinstance(step, Usage):
                await self.breaker.aafter_model(**self._usage(kwargs, step, call_id))
                continue
            try:
                await self.breaker.abefore_tool(step.name, step.arguments, agent=self.agent, call_id=step.id or None)
            except LoopGuardTripped as trip:
                refused[step.id] = await self.breaker.asteer(trip)
                continue
            self._remember(step)
        return refused

    def _steer(self, kwargs: dict[str, Any], response: Any, data: Mapping[str, Any], call_id: str) -> Any:
        exchanges: list[dict[str, Any]] = []
        current, current_id = kwargs, call_id
        for attempt in itertools.count(1):
            verdict = self._steering.judge("chat", kwargs, data, self._judge(current, data, current_id), exchanges)
            if verdict.reask is None:
                return _handed_over(response, verdict)
            # Every tool call of the reply was refused: ask again at once, with the refusals.
            exchanges, current, current_id = verdict.exchanges, verdict.reask, f"{call_id}:steer-{attempt}"
            self.breaker.before_model(**self._preflight(current, current_id))
            try:
                response = litellm.completion(**current)
            except Exception as exc:
                model = _price_name(current.get("model"))
                self.breaker.model_failed(model=model, agent=self.agent, call_id=current_id, error=exc)
                raise
            data = _dump(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asteer(self, kwargs: dict[str, Any], response: Any, data: Mapping[str, Any], call_id: str) -> Any:
        exchanges: list[dict[str, Any]] = []
        current, current_id = kwargs, call_id
        for attempt in itertools.count(1):
            refused = await self._ajudge(current, data, current_id)
            verdict = self._steering.judge("chat", kwargs, data, refused, exchanges)
            if verdict.reask is None:
                return _handed_over(response, verdict)
            exchanges, current, current_id = verdict.exchanges, verdict.reask, f"{call_id}:steer-{attempt}"
            await self.breaker.abefore_model(**self._preflight(current, current_id))
            try:
                response = await litellm.acompletion(**current)
            except Exception as exc:
                model = _price_name(current.get("model"))
                await self.breaker.amodel_failed(model=model, agent=self.agent, call_id=current_id, error=exc)
                raise
            data = _dump(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _watch(self, body: Mapping[str, Any], stream: Any, call_id: str) -> Iterator[Any]:
        watch = StreamWatch("chat", estimated_input=functools.partial(estimate_input_tokens, "chat", body))
        try:
            for chunk in stream:
                self._apply_watched(body, watch, watch.feed_event(_dump(chunk)), call_id)
                yield chunk
            self._apply_watched(body, watch, watch.end(), call_id)
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()

    def _apply_watched(self, body: Mapping[str, Any], watch: StreamWatch, steps: list[Any], call_id: str) -> None:
        try:
            self._apply(body, steps, call_id)
        except LoopGuardTripped:
            if not watch.usage_done:
                self.breaker.after_model(**self._usage(body, watch.take_usage(), call_id))
            raise

    async def _awatch(self, body: Mapping[str, Any], stream: Any, call_id: str) -> AsyncIterator[Any]:
        watch = StreamWatch("chat", estimated_input=functools.partial(estimate_input_tokens, "chat", body))
        async for chunk in stream:
            await self._aapply_watched(body, watch, watch.feed_event(_dump(chunk)), call_id)
            yield chunk
        await self._aapply_watched(body, watch, watch.end(), call_id)

    async def _aapply_watched(
        self, body: Mapping[str, Any], watch: StreamWatch, steps: list[Any], call_id: str
    ) -> None:
        try:
            await self._aapply(body, steps, call_id)
        except LoopGuardTripped:
            if not watch.usage_done:
                await self.breaker.aafter_model(**self._usage(body, watch.take_usage(), call_id))
            raise

    # -- proxy ------------------------------------------------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> Any:
        """Proxy: before the request is forwarded. A trip refuses it: nothing is sent upstream."""
        if not _is_chat(call_type, data):
            return data
        metadata = data.setdefault("metadata", {}) if isinstance(data.get("metadata", {}), dict) else {}
        call_id = metadata.setdefault("loopguard_call_id", uuid.uuid4().hex)
        for tool, args, extra in self._outcomes(data):
            await self.breaker.aafter_tool(tool, args, agent=self._proxy_agent(user_api_key_dict), **extra)
        pre = self._preflight(data, call_id)
        pre["agent"] = self._proxy_agent(user_api_key_dict)
        await self.breaker.abefore_model(**pre)
        return data

    async def async_post_call_success_hook(self, data: dict[str, Any], user_api_key_dict: Any, response: Any) -> Any:
        """Proxy: before a (non-streamed) response is returned. A refused tool call never reaches the client."""
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        call_id = str((metadata or {}).get("loopguard_call_id") or uuid.uuid4().hex)
        payload = _dump(response)
        if "choices" not in payload:
            return response
        await self._aapply(data, response_steps("chat", payload, self._fallback(data)), call_id)
        return response

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        """Proxy: a forwarded request failed; release its reservation (never raises a trip)."""
        if isinstance(original_exception, LoopGuardTripped):
            return None
        metadata = request_data.get("metadata") if isinstance(request_data.get("metadata"), dict) else {}
        call_id = (metadata or {}).get("loopguard_call_id")
        if call_id:
            await self.breaker.amodel_failed(
                model=_price_name(request_data.get("model")), agent=self.agent, call_id=call_id
            )
        return None

    def _proxy_agent(self, user_api_key_dict: Any) -> str | None:
        if self.agent is not None:
            return self.agent
        for key in ("key_alias", "user_id", "team_id"):
            value = getattr(user_api_key_dict, key, None)
            if isinstance(value, str) and value:
                return value
        return None


def _handed_over(response: Any, verdict: Verdict) -> Any:
    """``response`` as the caller gets it: without the tool calls answered in its place (some were admitted)."""
    if verdict.reply is None or not verdict.refused:
        return response
    for choice in getattr(response, "choices", None) or ():
        message = getattr(choice, "message", None)
        calls = getattr(message, "tool_calls", None)
        if message is not None and calls:
            message.tool_calls = [call for call in calls if getattr(call, "id", None) not in verdict.refused]
    return response


def _is_chat(call_type: Any, data: Mapping[str, Any]) -> bool:
    name = getattr(call_type, "value", call_type)
    return str(name) in ("completion", "acompletion") or "messages" in data


def _price_name(model: Any) -> str | None:
    """``openai/gpt-4o`` -> ``gpt-4o``: the provider prefix is LiteLLM's routing, not the model's name."""
    if not isinstance(model, str) or not model:
        return None
    return model.split("/", 1)[1] if "/" in model else model


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        data = dump()
        return data if isinstance(data, dict) else {}
    return {}
