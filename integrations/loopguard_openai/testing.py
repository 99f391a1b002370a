"""A scripted OpenAI API for tests and examples: real ``openai`` clients over a transport that answers from a
function (no network, no API key), built on the HTTP library the installed SDK uses (``httpx`` under openai
2.x, ``httpx2`` under 3.x).

::

    from loopguard_openai.testing import scripted_client

    def answer(body: dict) -> dict:          # the request's JSON body -> the response's JSON body
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [...]}

    client = scripted_client(answer)        # an openai.OpenAI; scripted_client(answer, asynchronous=True)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import openai

__all__ = ["Answer", "scripted_client", "scripted_http_client", "sdk_http"]

#: request body (parsed JSON) -> response body (JSON-ready)
Answer = Callable[[dict[str, Any]], dict[str, Any]]


def sdk_http() -> ModuleType:
    """``httpx`` or ``httpx2``: the library of the client class the installed openai builds by default."""
    for base in openai.DefaultHttpxClient.__mro__:
        library = base.__module__.partition(".")[0]
        if base.__name__ == "Client" and library in ("httpx", "httpx2"):
            return importlib.import_module(library)
    raise RuntimeError(f"openai {openai.__version__}: DefaultHttpxClient is built on neither httpx nor httpx2")


def scripted_http_client(answer: Answer, *, asynchronous: bool = False) -> Any:
    """An HTTP client (sync or async) whose every request is answered by ``answer(json_body)`` with status 200."""
    http = sdk_http()

    def handle(request: Any) -> Any:
        body = json.loads(request.content or b"{}")
        return http.Response(200, json=answer(body))

    transport = http.MockTransport(handle)
    return http.AsyncClient(transport=transport) if asynchronous else http.Client(transport=transport)


def scripted_client(answer: Answer, *, asynchronous: bool = False) -> Any:
    """A real ``openai.OpenAI`` (or ``AsyncOpenAI``) talking to ``answer`` instead of the API."""
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return cls(
        api_key="scripted",
        base_url="http://scripted.invalid/v1",
        http_client=scripted_http_client(answer, asynchronous=asynchronous),
        max_retries=0,
    )
