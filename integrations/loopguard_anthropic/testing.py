"""A scripted Messages API for testing code built on the Anthropic SDK: the real client, no network, no key.

``ScriptedAPI`` answers the real ``anthropic.Anthropic`` / ``AsyncAnthropic`` client through an HTTP mock
transport, so everything the SDK does (request building, retries, parsing, ``messages.stream``, the beta tool
runner, client middleware such as ``loopguard_anthropic.guard``) runs for real. Each ``POST /v1/messages``
answers the next step of the script: a ``("tool", {input})`` pair is a ``tool_use`` reply, a list of pairs is
parallel tool calls, a ``str`` is a final text reply (``stop_reason="end_turn"``). ``loop=`` repeats one step
after the script (a runaway agent) up to ``cap`` replies; one request more is answered with HTTP 400 whose
message says the script ran out (:class:`~loopguard_core.testing.ScriptExhausted`, also kept in
``api.exhausted``), so an agent that was not stopped fails the test instead of hanging it.

Requests with ``"stream": true`` get server-sent events framed exactly as the API frames them;
``chunk_size=n`` re-cuts the byte stream into chunks of ``n`` bytes (across event boundaries),
``break_after=n`` drops each stream after ``n`` chunks with a read error (a connection lost mid-body), and
``errors=[529, ...]`` answers the first attempts with those statuses (``retry-after-ms: 1``) to exercise the SDK's
retries. ``messages.count_tokens`` answers 42.

The test "my agent is stopped when it loops"::

    import pytest
    from anthropic import beta_tool
    from loopguard_core import Breaker, LoopGuardTripped
    from loopguard_core.testing import BodyCounter
    from loopguard_anthropic import guard
    from loopguard_anthropic.testing import ScriptedAPI

    def test_my_agent_is_stopped_when_it_loops() -> None:
        counter = BodyCounter()

        @beta_tool
        def search(q: str) -> str:
            '''Search the docs.'''
            counter.hit("search")
            return "nothing new"

        api = ScriptedAPI(loop=("search", {"q": "refund policy"}))
        client = guard(api.client(), Breaker())
        prompt = [{"role": "user", "content": "refund?"}]
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-6", max_tokens=512, messages=prompt, tools=[search]
        )
        with pytest.raises(LoopGuardTripped) as trip:
            runner.until_done()
        assert trip.value.reason == "loop"
        assert counter.count("search") == 3  # the fourth identical call never ran

Your own ``messages.create`` loop works the same way.

``api.calls`` counts the replies the script gave (a request refused pre-flight never reaches the API),
``api.http_attempts`` every Messages request that arrived (scripted errors included) and ``api.bodies`` the JSON
body of each answered request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anthropic
import httpx2

from loopguard_core.testing import ModelScript, ScriptedTurn, ScriptExhausted, Step

__all__ = ["ScriptExhausted", "ScriptedAPI", "Step"]

_DEFAULT_MODEL = "claude-sonnet-4-6"


class ScriptedAPI:
    """A scripted Anthropic Messages API; ``api.client()`` / ``api.async_client()`` are real SDK clients on it."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        loop: Step | None = None,
        cap: int = 30,
        usage: tuple[int, int] = (100, 20),
        errors: Iterable[int] = (),
        chunk_size: int | None = None,
        break_after: int | None = None,
    ) -> None:
        self._script = ModelScript(script, loop=loop, cap=cap, owner="ScriptedAPI")
        self.usage = usage
        self.errors = list(errors)
        self.chunk_size = chunk_size
        self.break_after = break_after
        self.bodies: list[dict[str, Any]] = []  # the JSON body of every answered Messages request
        self.http_attempts = 0  # every Messages request that arrived, scripted errors included
        self.counted = 0  # messages.count_tokens requests
        self.exhausted: ScriptExhausted | None = None  # set when a request found the script used up
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------------------------------------
    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """A real ``anthropic.Anthropic`` client whose requests this API answers (``kwargs`` go to the client)."""
        kwargs.setdefault("max_retries", 2)
        return anthropic.Anthropic(
            api_key="test-key",
            base_url="http://scripted.test",
            http_client=httpx2.Client(transport=httpx2.MockTransport(self._sync_handler)),
            **kwargs,
        )

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """A real ``anthropic.AsyncAnthropic`` client whose requests this API answers."""
        kwargs.setdefault("max_retries", 2)
        return anthropic.AsyncAnthropic(
            api_key="test-key",
            base_url="http://scripted.test",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self._async_handler)),
            **kwargs,
        )

    @property
    def calls(self) -> int:
        """How many replies the script gave (a request refused pre-flight never reached the API)."""
        return self._script.calls

    # -- the "API" ----------------------------------------------------------------------------------------------
    def _sync_handler(self, request: httpx2.Request) -> httpx2.Response:
        return self._answer(request, async_=False)

    async def _async_handler(self, request: httpx2.Request) -> httpx2.Response:
        return self._answer(request, async_=True)

    def _answer(self, request: httpx2.Request, *, async_: bool) -> httpx2.Response:
        path = request.url.path
        if path.endswith("/v1/messages/count_tokens"):
            with self._lock:
                self.counted += 1
            return httpx2.Response(200, json={"input_tokens": 42})
        if not path.endswith("/v1/messages"):
            return _error(404, "not_found_error", f"ScriptedAPI answers /v1/messages only, not {path}")
        with self._lock:
            self.http_attempts += 1
            if self.errors:
                status = self.errors.pop(0)
                return _error(status, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"})
            body: dict[str, Any] = json.loads(request.content)
            try:
                turn = self._script.next_turn()
            except ScriptExhausted as exhausted:
                self.exhausted = exhausted
                return _error(400, "invalid_request_error", str(exhausted))
            self.bodies.append(body)
        message = self._message(turn, str(body.get("model") or _DEFAULT_MODEL))
        if not body.get("stream"):
            return httpx2.Response(200, json=message)
        events = list(_sse_events(message))
        if self.chunk_size:
            raw = b"".join(events)
            events = [raw[i : i + self.chunk_size] for i in range(0, len(raw), self.chunk_size)]
        return _stream_response(request, events, self.break_after, async_=async_)

    def _message(self, turn: ScriptedTurn, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]]
        if turn.text is not None:
            content, stop = [{"type": "text", "text": turn.text}], "end_turn"
        else:
            content = [
                {"type": "tool_use", "id": f"toolu_{turn.index:03d}_{n}", "name": name, "input": args}
                for n, (name, args) in enumerate(turn.tool_calls)
            ]
            stop = "tool_use"
        return {
            "id": f"msg_{turn.index:03d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.usage[0],
                "output_tokens": self.usage[1],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }


def _error(status: int, kind: str, message: str, *, headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return httpx2.Response(status, json=body, headers=headers)


def _stream_response(request: httpx2.Request, events: list[bytes], cut: int | None, *, async_: bool) -> httpx2.Response:
    headers = {"content-type": "text/event-stream"}

    def dropped() -> httpx2.ReadError:
        return httpx2.ReadError("peer closed connection without sending complete message body", request=request)

    if async_:

        async def agen() -> AsyncIterator[bytes]:
            for event in events[:cut]:
                yield event
            if cut is not None:
                raise dropped()

        return httpx2.Response(200, content=agen(), headers=headers)

    def gen() -> Iterator[bytes]:
        yield from events[:cut]
        if cut is not None:
            raise dropped()

    return httpx2.Response(200, content=gen(), headers=headers)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _sse_events(message: dict[str, Any]) -> Iterator[bytes]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    yield _sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})
