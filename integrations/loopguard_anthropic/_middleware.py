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

Approval gates: a gated ``tool_use`` (``ToolPolicy(irreversible=True)``) raises ``ApprovalRequired`` before the
reply reaches the caller, so neither your loop nor the tool runner executes it; resume by making the request again
under the same run id (``with breaker.run("ticket-42"):``) once a person decided. An approval with edited arguments
rewrites that block's ``input`` in the reply the caller (or the tool runner) gets; a streamed reply cannot be
rewritten, so there it is refused with ``ApprovalError``. A rejection is a steerable trip.

``on_trip="raise"`` (default) raises the refusal to the caller. ``on_trip="steer"`` answers a refused
``tool_use`` in the caller's place with an ``is_error`` ``tool_result`` carrying ``Breaker.steer``'s text, asks
the model again when a reply held nothing else, and keeps the caller's history consistent (see ``_steer``); a
budget ceiling, a refused model call or the ``max_refusals`` stop is raised as in ``"raise"``. A *streamed*
reply is not steered: its ``tool_use`` block is already in the caller's hands, event by event, before its input
is complete enough to judge, so a refusal inside a stream is raised in both modes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jiter  # the SDK's own JSON parser: anthropic depends on it
from anthropic import AnthropicError, Middleware

from loopguard_core import ApprovalError, Breaker, GenaiPrices, LoopGuardTripped

from ._body import (
    BodyReader,
    ToolUse,
    is_messages_call,
    latest_tool_results,
    max_output_tokens,
    tool_uses,
    usage_tokens,
)
from ._sse import StreamWatch, Usage
from ._steer import Splice, Splices, as_param, refusal_result, reply_bytes, with_inputs, without_blocks

__all__ = ["LoopGuardMiddleware", "declare_tools"]

_MAX_PENDING = 4_096
_ON_TRIP = ("raise", "steer")


class LoopGuardMiddleware(Middleware):
    """Checks Messages API calls against ``breaker``; ``agent`` names who makes them (for attribution)."""

    def __init__(
        self, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise", tools: Any = None
    ) -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(
                f"LoopGuardMiddleware needs a loopguard_core.Breaker, got {type(breaker).__name__}; "
                "use guard(client, Breaker(...))"
            )
        if agent is not None and (not isinstance(agent, str) or not agent):
            raise TypeError(f"agent must be a non-empty str naming the agent, got {agent!r}")
        if on_trip not in _ON_TRIP:
            raise ValueError(
                f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a client has no run to end gracefully: "
                "your loop decides when to stop)"
            )
        declare_tools(breaker, tools)
        self.breaker = breaker
        self.agent = agent
        self.on_trip = on_trip
        # tool_use id -> (tool, input): admitted calls whose result has not come back yet
        self._pending: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._splices = Splices()  # steer: what the caller's history lacks, put back into its next requests
        self._bodies = BodyReader()  # estimates and digests that read only what each request adds

    def __repr__(self) -> str:
        return f"LoopGuardMiddleware(breaker={self.breaker!r}, agent={self.agent!r}, on_trip={self.on_trip!r})"

    # -- sync client ---------------------------------------------------------------------------------
    def handle(self, request: Any, call_next: Callable[[Any], Any]) -> Any:
        body = _messages_body(request)
        if body is None:
            return call_next(request)
        request, body = self._restored(request, body)
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
            _watch_sync(http, lambda steps, watch: _none(self._apply_sync(steps, watch, call_id, watch_input)))
            return response
        data = _json(http.read())
        if self.on_trip == "steer":
            return self._steer_sync(request, call_next, body, response, data, call_id)
        edits = self._apply_sync(_message_steps(data), None, call_id, watch_input)
        if edits:
            _replace_reply(response, with_inputs(data, edits))
        else:
            _lend_parse(http, data)
        return response

    def _apply_sync(
        self, steps: list[ToolUse | Usage], watch: StreamWatch | None, call_id: str | None, messages: Any
    ) -> dict[str, Any]:
        edits: dict[str, Any] = {}
        try:
            for step in steps:
                if isinstance(step, Usage):
                    self.breaker.after_model(**self._usage(step, call_id, messages))
                else:
                    approval = self.breaker.before_tool(
                        step.name, step.input, agent=self.agent, call_id=step.id or None
                    )
                    self._remember(step)
                    _edit(edits, step, approval, streamed=watch is not None)
            return edits
        except LoopGuardTripped:
            if watch is not None and not watch.usage_done:  # a trip mid-stream: what was spent still counts
                self.breaker.after_model(**self._usage(watch.take_usage(), call_id, messages))
            raise

    # -- async client --------------------------------------------------------------------------------
    async def handle_async(self, request: Any, call_next: Callable[[Any], Any]) -> Any:
        body = _messages_body(request)
        if body is None:
            return await call_next(request)
        request, body = self._restored(request, body)
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
        if self.on_trip == "steer":
            return await self._steer_async(request, call_next, body, response, data, call_id)
        edits = await self._apply_async(_message_steps(data), None, call_id, watch_input)
        if edits:
            _replace_reply(response, with_inputs(data, edits))
        else:
            _lend_parse(http, data)
        return response

    async def _apply_async(
        self, steps: list[ToolUse | Usage], watch: StreamWatch | None, call_id: str | None, messages: Any
    ) -> dict[str, Any]:
        edits: dict[str, Any] = {}
        try:
            for step in steps:
                if isinstance(step, Usage):
                    await self.breaker.aafter_model(**self._usage(step, call_id, messages))
                else:
                    approval = await self.breaker.abefore_tool(
                        step.name, step.input, agent=self.agent, call_id=step.id or None
                    )
                    self._remember(step)
                    _edit(edits, step, approval, streamed=watch is not None)
            return edits
        except LoopGuardTripped:
            if watch is not None and not watch.usage_done:
                await self.breaker.aafter_model(**self._usage(watch.take_usage(), call_id, messages))
            raise

    # -- steer (non-streamed replies) -------------------------------------------------------------------
    def _restored(self, request: Any, body: Mapping[str, Any]) -> tuple[Any, Mapping[str, Any]]:
        """The request with what the caller never saw (steered refusals) put back into its history."""
        if self.on_trip != "steer":
            return request, body
        patched = self._splices.restore(body)
        if patched is None:
            return request, body
        return request.copy(body=patched), patched

    def _steer_sync(
        self,
        request: Any,
        call_next: Callable[[Any], Any],
        body: Mapping[str, Any],
        response: Any,
        data: Mapping[str, Any],
        call_id: str | None,
    ) -> Any:
        exchanges: list[dict[str, Any]] = []
        current_id, messages = call_id, body.get("messages")
        for attempt in itertools.count(1):
            steps = _message_steps(data)
            self.breaker.after_model(**self._usage(_reply_usage(steps), current_id, messages))
            refused: list[tuple[ToolUse, str]] = []
            edits: dict[str, Any] = {}
            for use in _reply_uses(steps):
                try:
                    approval = self.breaker.before_tool(use.name, use.input, agent=self.agent, call_id=use.id or None)
                except LoopGuardTripped as trip:
                    refused.append((use, self.breaker.steer(trip)))  # raises when the run must stop
                    continue
                self._remember(use)
                _edit(edits, use, approval, streamed=False)
            data = _edited_reply(response, data, edits, bool(refused))
            exchanges, again = self._after_judging(response, data, steps, refused, exchanges)
            if not again:
                if not refused and not edits:  # the reply the API sent, untouched
                    _lend_parse(response.http_response, data)
                return response
            # Every call of the reply was refused: ask again at once, with the refusals.
            current_id, reask, retry_body = self._reask(request, body, exchanges, call_id, attempt)
            messages = retry_body.get("messages")
            self.breaker.before_model(**self._preflight(retry_body, current_id))
            try:
                response = call_next(reask)
            except Exception as exc:
                self.breaker.model_failed(model=body.get("model"), agent=self.agent, call_id=current_id, error=exc)
                raise
            http = getattr(response, "http_response", None)
            if http is None or not http.is_success:
                if http is not None:
                    self.breaker.model_failed(model=body.get("model"), agent=self.agent, call_id=current_id)
                return response
            data = _json(http.read())
        raise AssertionError("unreachable")  # pragma: no cover

    async def _steer_async(
        self,
        request: Any,
        call_next: Callable[[Any], Any],
        body: Mapping[str, Any],
        response: Any,
        data: Mapping[str, Any],
        call_id: str | None,
    ) -> Any:
        exchanges: list[dict[str, Any]] = []
        current_id, messages = call_id, body.get("messages")
        for attempt in itertools.count(1):
            steps = _message_steps(data)
            await self.breaker.aafter_model(**self._usage(_reply_usage(steps), current_id, messages))
            refused: list[tuple[ToolUse, str]] = []
            edits: dict[str, Any] = {}
            for use in _reply_uses(steps):
                try:
                    approval = await self.breaker.abefore_tool(
                        use.name, use.input, agent=self.agent, call_id=use.id or None
                    )
                except LoopGuardTripped as trip:
                    refused.append((use, await self.breaker.asteer(trip)))
                    continue
                self._remember(use)
                _edit(edits, use, approval, streamed=False)
            data = _edited_reply(response, data, edits, bool(refused))
            exchanges, again = self._after_judging(response, data, steps, refused, exchanges)
            if not again:
                if not refused and not edits:
                    _lend_parse(response.http_response, data)
                return response
            current_id, reask, retry_body = self._reask(request, body, exchanges, call_id, attempt)
            messages = retry_body.get("messages")
            await self.breaker.abefore_model(**self._preflight(retry_body, current_id))
            try:
                response = await call_next(reask)
            except Exception as exc:
                await self.breaker.amodel_failed(
                    model=body.get("model"), agent=self.agent, call_id=current_id, error=exc
                )
                raise
            http = getattr(response, "http_response", None)
            if http is None or not http.is_success:
                if http is not None:
                    await self.breaker.amodel_failed(model=body.get("model"), agent=self.agent, call_id=current_id)
                return response
            data = _json(await http.aread())
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_judging(
        self,
        response: Any,
        data: Mapping[str, Any],
        steps: Sequence[ToolUse | Usage],
        refused: Sequence[tuple[ToolUse, str]],
        exchanges: list[dict[str, Any]],
    ) -> tuple[list[dict[str, Any]], bool]:
        """Hand the reply over (True: ask again first). Returns the exchanges the caller will not see."""
        uses = _reply_uses(steps)
        if not refused:
            if exchanges:  # the caller sees only this reply: put the refused exchanges back before it later
                self._splices.keep([use.id for use in uses], Splice(before=tuple(exchanges)))
            return exchanges, False
        results = tuple(refusal_result(use, text) for use, text in refused)
        refused_ids = {use.id for use, _ in refused}
        admitted = [use for use in uses if use.id not in refused_ids]
        if admitted:  # the caller runs these; the refused ones and their answers come back in its next request
            blocks = tuple(
                as_param(block)
                for block in data.get("content") or ()
                if isinstance(block, Mapping) and block.get("type") == "tool_use" and block.get("id") in refused_ids
            )
            _replace_reply(response, without_blocks(data, refused_ids))
            splice = Splice(tuple(exchanges), blocks, results)
            self._splices.keep([use.id for use in admitted], splice, reply_id=data.get("id"))
            return exchanges, False
        reply = {"role": "assistant", "content": [as_param(block) for block in data.get("content") or ()]}
        return [*exchanges, reply, {"role": "user", "content": list(results)}], True

    @staticmethod
    def _reask(
        request: Any, body: Mapping[str, Any], exchanges: list[dict[str, Any]], call_id: str | None, attempt: int
    ) -> tuple[str, Any, Mapping[str, Any]]:
        retry_body = {**body, "messages": [*(body.get("messages") or ()), *exchanges]}
        reask = request.copy(body=retry_body)
        base = call_id or f"anthropic-{id(request):x}"
        current_id = f"{base}:steer-{attempt}"
        options = getattr(reask, "options", None)
        if options is not None and getattr(options, "idempotency_key", None):
            options.idempotency_key = current_id  # a new model call, not a retry of the refused one
        return current_id, reask, retry_body

    # -- shared ---------------------------------------------------------------------------------------
    def _preflight(self, body: Mapping[str, Any], call_id: str | None) -> dict[str, Any]:
        model = body.get("model")
        return {
            "model": model if isinstance(model, str) else None,
            # Read only when a ceiling or budget uses it (the body's new messages, every request).
            "estimated_input_tokens": self._bodies.estimate(body) if self.breaker.needs_token_estimate else 0,
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
            # hashed into the ledger, never stored (nothing is computed without a ledger)
            "input": self._bodies.digest(messages) if self.breaker.ledger is not None else None,
        }

    def _cost(self, usage: Usage) -> float | None:
        # With a USD ceiling and the default price source, price cache tokens at their own rates.
        if self.breaker.limits.max_cost_usd is None or usage.model is None:
            return None
        if not isinstance(self.breaker.prices, GenaiPrices):
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
        """``(tool, input, after_tool kwargs)`` for each tool_result answering a call admitted here (they answer the
        reply before this request, so only the latest exchange is read, however long the history). A generator:
        each is taken from the pending calls only as it is reported, so a report that fails loses no other."""
        if not self._pending:
            return
        for result in latest_tool_results(body):
            with self._lock:
                pending = self._pending.pop(result.tool_use_id, None)
            if pending is None:
                continue  # not ours, or already reported
            tool, args = pending
            if result.is_error:
                outcome = {"error": result.content if result.content not in (None, "", []) else "tool error"}
            else:
                outcome = {"result": result.content}
            yield tool, args, {"call_id": result.tool_use_id, **outcome}


def declare_tools(breaker: Breaker, tools: Any) -> None:
    """Declare what the caller knows about its tools (the Messages API's tool definitions carry no annotations).

    ``tools``: ``{name: ToolPolicy or metadata}`` (MCP annotation keys, ``{"loopguard": {...}}``), or a list of
    MCP tools (objects or dicts with ``name`` and ``annotations``, as ``mcp.ClientSession.list_tools()`` returns
    them), or None. Declared once, when the client is guarded: nothing is read per request.
    """
    if tools is None:
        return
    if isinstance(tools, Mapping):
        for name, declared in tools.items():
            breaker.declare_tool(name, declared)
        return
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Iterable):
        raise TypeError(f"tools must map tool names to a ToolPolicy or metadata, or list MCP tools; got {tools!r}")
    for item in tools:
        name = item.get("name") if isinstance(item, Mapping) else getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"each tool in tools= needs a name (an MCP tool or a dict with 'name'), got {item!r}")
        annotations = item.get("annotations") if isinstance(item, Mapping) else getattr(item, "annotations", None)
        metadata = item.get("metadata") if isinstance(item, Mapping) else getattr(item, "metadata", None)
        facts: dict[str, Any] = dict(metadata) if isinstance(metadata, Mapping) else {}
        if annotations is not None:
            facts["annotations"] = annotations
        breaker.declare_tool(name, facts)


def _messages_body(request: Any) -> Mapping[str, Any] | None:
    if not is_messages_call(str(request.method), str(request.url)):
        return None
    body = request.json
    return body if type(body) is dict or isinstance(body, Mapping) else None


def _call_id(request: Any) -> str | None:
    # The SDK reuses one idempotency key for every retry of a logical request.
    key = getattr(request.options, "idempotency_key", None)
    return key if isinstance(key, str) and key else None


def _json(content: bytes) -> Mapping[str, Any]:
    """The reply body as a JSON object, ``{}`` when it is none (never an exception: the SDK reports bad JSON)."""
    try:
        # A UTF-8 object (what the API sends) goes to jiter, twice as fast as json.loads; anything else (a BOM,
        # UTF-16's zero bytes) is sniffed by json.loads as before. A bad byte is a ValueError either way.
        if type(content) is bytes and content[:1] == b"{" and content[1:2] != b"\x00":
            try:
                data = jiter.from_json(content)
            except ValueError:  # what jiter refuses and json accepts (a lone surrogate escape): json decides
                data = json.loads(content.decode())
        else:
            data = json.loads(content)
    except ValueError:
        return {}
    return data if type(data) is dict or isinstance(data, Mapping) else {}


def _lend_parse(http: Any, data: Mapping[str, Any]) -> None:
    """Let the SDK take the guard's parse of a reply instead of parsing the same bytes again.

    The SDK reads a reply with ``http_response.json()``: the first such call without arguments (the SDK's, or
    whoever reads a raw response first) gets ``data``, every later call parses as before. The guard keeps its own
    copy of each tool input (``tool_uses``), so nothing it records is shared with the caller's reply. An SDK that
    reads the reply another way just parses it itself. Only a parsed object is lent: a body that is no JSON object
    stays the SDK's to report. An unread lend holds a reference cycle (the response and its one-shot reader) until
    the garbage collector frees it, and a response holding one cannot be pickled.
    """
    if not data:
        return
    parse = http.json

    def json_once(**kwargs: Any) -> Any:
        vars(http).pop("json", None)  # once: the next call is the response's own
        return parse(**kwargs) if kwargs else data

    # A response that takes no attribute of its own is parsed by the SDK again. (try, not contextlib.suppress: a
    # context manager per turn costs more than the whole lend.)
    try:  # noqa: SIM105
        http.json = json_once
    except (AttributeError, TypeError):
        pass


def _none(_: object) -> None:
    return None


def _edit(edits: dict[str, Any], use: ToolUse, approval: Any, *, streamed: bool) -> None:
    """Note the arguments a person gave on approval, to run instead of the model's (by tool_use id)."""
    changed = None if approval is None else approval.args()
    if changed is None:
        return
    if streamed or not use.id:
        # The block's input already reached the caller, delta by delta: it cannot be rewritten any more.
        raise ApprovalError(
            f"a person approved {use.name!r} with edited arguments (request {approval.id}), but this reply was "
            "streamed and its tool_use input cannot be rewritten, so it must not be run as the model asked. Ask "
            "again without stream=True (the tool runner's until_done() does not stream), or approve without --args."
        )
    edits[use.id] = changed


def _edited_reply(response: Any, data: Mapping[str, Any], edits: Mapping[str, Any], refused: bool) -> Mapping[str, Any]:
    """The reply with edited tool inputs; handed to the caller now unless a refusal rewrites it anyway."""
    if not edits:
        return data
    edited = with_inputs(data, edits)
    if not refused:
        _replace_reply(response, edited)
    return edited


def _reply_usage(steps: Sequence[ToolUse | Usage]) -> Usage:
    return next(step for step in steps if isinstance(step, Usage))


def _reply_uses(steps: Sequence[ToolUse | Usage]) -> list[ToolUse]:
    return [step for step in steps if isinstance(step, ToolUse)]


def _replace_reply(response: Any, data: Mapping[str, Any]) -> None:
    """Make ``response`` carry ``data`` instead of what the API sent (the body was already read)."""
    http = response.http_response
    skip = {"content-length", "content-encoding", "transfer-encoding"}
    headers = [(key, value) for key, value in http.headers.multi_items() if key.lower() not in skip]
    response.http_response = type(http)(
        http.status_code, headers=headers, content=reply_bytes(data), request=http.request
    )


# A Usage without its generated __new__ (a Python call): one per reply.
_new_usage: Callable[[type[Usage], tuple[int, int, int, int, str | None]], Usage] = tuple.__new__


def _message_steps(data: Mapping[str, Any]) -> list[ToolUse | Usage]:
    model = data.get("model")
    usage = _new_usage(Usage, (*usage_tokens(data.get("usage")), model if type(model) is str else None))
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
