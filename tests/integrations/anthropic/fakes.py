"""A scripted Messages API behind an ``httpx2.MockTransport``: the real Anthropic client, no network, no key.

``ScriptedAPI`` answers each ``POST /v1/messages`` with the next step of ``script``: a ``(tool, input)``
pair (or a list of them, for parallel calls) is a ``tool_use`` reply, a ``str`` is a final text reply.
When the script runs out it repeats ``loop`` (when set) up to ``cap`` replies, so a guard that fails shows up
as a wrong count rather than a hung test. ``"stream": true`` requests get server-sent events, one event per
chunk, exactly as the API frames them (``chunk_size=7`` re-cuts them across event boundaries).
``errors=[529, ...]`` answers the first attempts with those statuses (``retry-after-ms: 1``), to exercise
the SDK's retries. ``break_after=n`` drops every stream after ``n`` chunks with ``httpx2.ReadError`` (a
connection lost mid-body).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2

__all__ = ["BodyCounter", "ScriptedAPI"]

MODEL = "claude-sonnet-4-6"


class ScriptedAPI:
    def __init__(
        self,
        script: list[Any] | None = None,
        *,
        loop: Any = None,
        cap: int = 30,
        usage: tuple[int, int] = (100, 20),
        errors: list[int] | None = None,
        chunk_size: int | None = None,
        break_after: int | None = None,
    ) -> None:
        self.script = list(script or [])
        self.loop = loop
        self.cap = cap
        self.usage = usage
        self.errors = list(errors or [])
        self.chunk_size = chunk_size  # re-cut the event stream into chunks of this many bytes
        self.break_after = break_after
        self.bodies: list[dict[str, Any]] = []  # every Messages request that reached the "API"
        self.http_attempts = 0
        self.counted = 0  # count_tokens calls
        self._replies = 0
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------------------------
    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        transport = httpx2.MockTransport(self._sync_handler)
        kwargs.setdefault("max_retries", 2)
        return anthropic.Anthropic(
            api_key="test-key",
            base_url="http://scripted.test",
            http_client=httpx2.Client(transport=transport),
            **kwargs,
        )

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self._async_handler)
        kwargs.setdefault("max_retries", 2)
        return anthropic.AsyncAnthropic(
            api_key="test-key",
            base_url="http://scripted.test",
            http_client=httpx2.AsyncClient(transport=transport),
            **kwargs,
        )

    @property
    def replies(self) -> int:
        return self._replies

    # -- the "API" ----------------------------------------------------------------------------------
    def _sync_handler(self, request: httpx2.Request) -> httpx2.Response:
        return self._answer(request, async_=False)

    async def _async_handler(self, request: httpx2.Request) -> httpx2.Response:
        return self._answer(request, async_=True)

    def _answer(self, request: httpx2.Request, *, async_: bool) -> httpx2.Response:
        if request.url.path.endswith("/v1/messages/count_tokens"):
            self.counted += 1
            return httpx2.Response(200, json={"input_tokens": 42})
        if not request.url.path.endswith("/v1/messages"):
            return httpx2.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": "?"}})
        with self._lock:
            self.http_attempts += 1
            if self.errors:
                status = self.errors.pop(0)
                body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                return httpx2.Response(status, json=body, headers={"retry-after-ms": "1"})
            body = json.loads(request.content)
            self.bodies.append(body)
            index = self._replies
            self._replies += 1
        step = self._step(index)
        message = self._message(index, step)
        if not body.get("stream"):
            return httpx2.Response(200, json=message)
        events = list(_sse_events(message))
        if self.chunk_size:
            raw = b"".join(events)
            events = [raw[i : i + self.chunk_size] for i in range(0, len(raw), self.chunk_size)]
        headers = {"content-type": "text/event-stream"}
        cut = self.break_after

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

    def _step(self, index: int) -> Any:
        if index < len(self.script):
            return self.script[index]
        if self.loop is not None and index < self.cap:
            return self.loop
        return "done"

    def _message(self, index: int, step: Any) -> dict[str, Any]:
        if isinstance(step, str):
            content: list[dict[str, Any]] = [{"type": "text", "text": step}]
            stop = "end_turn"
        else:
            calls = step if isinstance(step, list) else [step]
            content = [
                {"type": "tool_use", "id": f"toolu_{index:03d}_{n}", "name": name, "input": dict(args)}
                for n, (name, args) in enumerate(calls)
            ]
            stop = "tool_use"
        return {
            "id": f"msg_{index:03d}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
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


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _sse_events(message: dict[str, Any]) -> Iterator[bytes]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    yield _sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
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


class BodyCounter:
    """Counts how many times each tool body really ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def hit(self, tool: str, args: Any = None) -> None:
        with self._lock:
            self.calls.append((tool, args))

    def count(self, tool: str | None = None) -> int:
        with self._lock:
            return sum(1 for name, _ in self.calls if tool is None or name == tool)
