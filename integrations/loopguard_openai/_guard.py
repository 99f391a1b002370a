"""``guard(client, breaker)``: a copy of an OpenAI client whose every Chat Completions / Responses call is checked."""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

from loopguard_core import Breaker

from ._transport import check_on_trip, http_module, transport_classes

__all__ = ["guard", "guarded_http_client"]

ClientT = TypeVar("ClientT")

# http clients built here -> (breaker, agent, on_trip) they guard with, to make guarding twice a no-op
_GUARDED: weakref.WeakKeyDictionary[Any, tuple[Breaker, str | None, str]] = weakref.WeakKeyDictionary()


def guarded_http_client(http_client: Any, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> Any:
    """An ``httpx``/``httpx2`` client that checks every model call and forwards to ``http_client``.

    For code that builds its own client: ``OpenAI(http_client=guarded_http_client(httpx2.Client(), breaker))``
    (``httpx.Client()`` under openai 2.x). ``http_client`` keeps doing the networking (its transport, proxies,
    event hooks, limits); the returned client only adds the checks. Sync clients get a sync transport, async
    clients an async one. ``on_trip`` as in :func:`guard`.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guarded_http_client needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    check_on_trip(on_trip)
    known = _GUARDED.get(http_client)
    if known is not None and known[0] is breaker and known[1] == agent:
        if known[2] != on_trip:
            raise ValueError(
                f"this client is already guarded by the same breaker with on_trip={known[2]!r}; "
                f"guard the original client (not the guarded copy) to use on_trip={on_trip!r}"
            )
        return http_client
    module = http_module(http_client)
    sync_transport, async_transport = transport_classes(module)
    is_async = isinstance(http_client, module.AsyncClient)
    transport = (async_transport if is_async else sync_transport)(http_client, breaker, agent=agent, on_trip=on_trip)
    client_class = module.AsyncClient if is_async else module.Client
    outer = client_class(
        transport=transport,
        timeout=http_client.timeout,
        headers=http_client.headers,
        follow_redirects=http_client.follow_redirects,
    )
    _GUARDED[outer] = (breaker, agent, on_trip)
    return outer


def guard(client: ClientT, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise") -> ClientT:
    """Return a copy of ``client`` (``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``, ``AsyncAzureOpenAI``) guarded
    by ``breaker``.

    Use the returned client: the one you passed in stays unguarded. Every ``chat.completions.create`` /
    ``.parse`` / ``.stream`` and ``responses.create`` / ``.parse`` / ``.stream`` call it makes is checked
    pre-flight (nothing is sent when the projection crosses a ceiling), its usage is recorded, and every tool
    call in a response is checked before the response (or, for a stream, the bytes completing that call)
    reaches your code. ``agent`` names the agent using this client; give each agent its own guarded client
    over one shared breaker.

    ``on_trip="raise"`` (default) raises a refusal to your code. ``on_trip="steer"`` answers a refused tool call
    for you with a tool result telling the model why (a ``role: "tool"`` message, a ``function_call_output``),
    asking the model again when nothing else was in the reply, so your loop goes on; budget ceilings and the
    ``max_refusals`` stop are raised. Streamed replies are not steered (a refusal there is raised).
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guard(client, breaker) needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    copy = getattr(client, "copy", None)
    http_client = getattr(client, "_client", None)  # the SDK keeps the http client it sends with here
    if not callable(copy) or http_client is None:
        raise TypeError(
            "guard() needs an openai.OpenAI / AsyncOpenAI / AzureOpenAI / AsyncAzureOpenAI client, "
            f"got {type(client).__name__}"
        )
    guarded_http = guarded_http_client(http_client, breaker, agent=agent, on_trip=on_trip)
    if guarded_http is http_client:
        return client
    guarded: ClientT = copy(http_client=guarded_http)
    return guarded
