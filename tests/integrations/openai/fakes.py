"""A scripted OpenAI API: a mock transport under the real ``openai`` client (no network).

It answers Chat Completions and Responses requests, streamed or not, with the tool call or text a plan
returns for the n-th request, and records every request that reached it (to prove what was never sent).

The transport is built from the HTTP library the installed ``openai`` itself is built on: ``httpx`` for openai
2.x, ``httpx2`` for openai 3.x. Both may be installed at once (anthropic and genai-prices bring httpx2 next to
openai 2.x; litellm brings httpx next to openai 3.x), so which one is importable says nothing.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# A plan answers the n-th request with (tool, args, text): a tool call, or a text answer when tool is None; tool may
# also be a list of (tool, args) pairs, for parallel calls.
Plan = Callable[[int, dict[str, Any]], tuple[Any, dict[str, Any] | None, str | None]]
USAGE = (100, 20)
BASE_URL = "http://scripted.invalid/v1"


def runaway(tool: str = "lookup", args: dict[str, Any] | None = None, *, stop_after: int = 12) -> Plan:
    """The same tool call every time (a text answer after ``stop_after`` requests: a bounded blast radius)."""

    def plan(n: int, body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str | None]:
        if n > stop_after:
            return None, None, "giving up"
        return tool, args if args is not None else {"q": "same"}, None

    return plan


def script(*steps: Any, then: Any = "out of script") -> Plan:
    """Each request answers the next step: ``(tool, args)``, a list of those (parallel calls) or a ``str`` (a final
    answer); after the last step, ``then``."""

    def plan(n: int, body: dict[str, Any]) -> tuple[Any, dict[str, Any] | None, str | None]:
        step = steps[n - 1] if n <= len(steps) else then
        if isinstance(step, str):
            return None, None, step
        if isinstance(step, list):
            return step, None, None
        return step[0], step[1], None

    return plan


def legit(steps: int = 2, tool: str = "lookup") -> Plan:
    """A few different tool calls, then a final answer."""

    def plan(n: int, body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str | None]:
        if n <= steps:
            return tool, {"q": f"page {n}"}, None
        return None, None, "the answer"

    return plan


def sdk_http() -> ModuleType:
    """``httpx`` or ``httpx2``: the library of the client class the installed openai uses by default."""
    import openai

    for base in openai.DefaultHttpxClient.__mro__:
        if base.__name__ == "Client" and base.__module__.partition(".")[0] in ("httpx", "httpx2"):
            return importlib.import_module(base.__module__.partition(".")[0])
    raise RuntimeError(f"openai {openai.__version__}: DefaultHttpxClient is built on neither httpx nor httpx2")


def library_of(obj: Any) -> ModuleType:
    """The HTTP library (``httpx`` or ``httpx2``) an object of it (a request, a client) comes from."""
    return sys.modules[type(obj).__module__.partition(".")[0]]


class ScriptedOpenAI:
    """The transport's handler: ``mock_transport(api)``; ``api.requests`` holds every body received."""

    def __init__(self, plan: Plan, *, prefix: str = "call", model: str = "gpt-4o", usage: bool = True) -> None:
        self.plan = plan
        self.prefix = prefix
        self.model = model
        self.usage = usage  # False: chat completions answer without a usage block, as some servers do
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        http = library_of(request)  # answer in the request's own library (a client may be on either)
        body = json.loads(request.content or b"{}")
        self.requests.append(body)
        n = len(self.requests)
        tool, args, text = self.plan(n, body)
        responses = request.url.path.rstrip("/").endswith("/responses")
        if body.get("stream"):
            events = (
                self._responses_events(n, tool, args, text) if responses else self._chat_chunks(n, tool, args, text)
            )
            return http.Response(200, content=events, headers={"content-type": "text/event-stream"})
        payload = self._responses(n, tool, args, text) if responses else self._chat(n, tool, args, text)
        return http.Response(200, json=payload)

    def call_id(self, n: int) -> str:
        return f"{self.prefix}_{n}"

    def _calls(self, n: int, tool: Any, args: Any) -> list[tuple[str, str, Any]]:
        """``(call id, tool, args)`` of each tool call of the n-th reply (``{prefix}_{n}_{i}`` when parallel)."""
        if not tool:
            return []
        if isinstance(tool, str):
            return [(self.call_id(n), tool, args)]
        return [(f"{self.call_id(n)}_{i}", name, arguments) for i, (name, arguments) in enumerate(tool)]

    # -- chat completions ---------------------------------------------------------------------------
    def _chat(self, n: int, tool: Any, args: Any, text: str | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
                for cid, name, arguments in self._calls(n, tool, args)
            ]
        payload = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}],
        }
        if self.usage:
            payload["usage"] = {"prompt_tokens": USAGE[0], "completion_tokens": USAGE[1], "total_tokens": sum(USAGE)}
        return payload

    def _chat_chunks(self, n: int, tool: Any, args: Any, text: str | None) -> bytes:
        base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0, "model": self.model}
        chunks: list[dict[str, Any]] = []
        if tool:
            for i, (cid, name, arguments) in enumerate(self._calls(n, tool, args)):
                start = {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
                delta = {"role": "assistant", "tool_calls": [start]}
                chunks.append({**base, "choices": [{"index": 0, "delta": delta}]})
                more = {"index": i, "function": {"arguments": json.dumps(arguments)}}
                chunks.append(
                    {**base, "choices": [{"index": 0, "delta": {"tool_calls": [more]}, "finish_reason": None}]}
                )
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        else:
            chunks.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]})
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if self.usage:
            usage = {"prompt_tokens": USAGE[0], "completion_tokens": USAGE[1], "total_tokens": sum(USAGE)}
            chunks.append({**base, "choices": [], "usage": usage})
        return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()

    # -- responses ------------------------------------------------------------------------------------
    def _output(self, n: int, tool: Any, args: Any, text: str | None) -> list[dict[str, Any]]:
        if tool:
            return [
                {
                    "type": "function_call",
                    "id": "fc" + cid.removeprefix(self.prefix),
                    "call_id": cid,
                    "name": name,
                    "arguments": json.dumps(arguments),
                    "status": "completed",
                }
                for cid, name, arguments in self._calls(n, tool, args)
            ]
        content = [{"type": "output_text", "text": text or "", "annotations": []}]
        return [{"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed", "content": content}]

    def _responses(self, n: int, tool: Any, args: Any, text: str | None) -> dict[str, Any]:
        return {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": 0,
            "model": self.model,
            "status": "completed",
            "output": self._output(n, tool, args, text),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": USAGE[0],
                "output_tokens": USAGE[1],
                "total_tokens": sum(USAGE),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def _responses_events(self, n: int, tool: Any, args: Any, text: str | None) -> bytes:
        final = self._responses(n, tool, args, text)
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [{"type": "response.created", "response": started, "sequence_number": 0}]
        for index, item in enumerate(final["output"]):
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item, "sequence_number": index + 1}
            )
        events.append({"type": "response.completed", "response": final, "sequence_number": len(events)})
        return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def http_client(api: ScriptedOpenAI) -> Any:
    """A sync client of the SDK's HTTP library whose every request ``api`` answers."""
    http = sdk_http()
    return http.Client(transport=http.MockTransport(api))


def async_http_client(api: ScriptedOpenAI) -> Any:
    http = sdk_http()
    return http.AsyncClient(transport=http.MockTransport(api))


def sync_client(api: ScriptedOpenAI, **kwargs: Any) -> Any:
    import openai

    return openai.OpenAI(api_key="scripted", base_url=BASE_URL, http_client=http_client(api), **kwargs)


def async_client(api: ScriptedOpenAI, **kwargs: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(api_key="scripted", base_url=BASE_URL, http_client=async_http_client(api), **kwargs)
