"""``guard(client, breaker)``: a copy of an Anthropic client whose every Messages call is checked."""

from __future__ import annotations

from typing import Any, TypeVar

from loopguard_core import Breaker

from ._middleware import LoopGuardMiddleware

__all__ = ["guard"]

ClientT = TypeVar("ClientT")


def guard(
    client: ClientT, breaker: Breaker, *, agent: str | None = None, on_trip: str = "raise", tools: Any = None
) -> ClientT:
    """Return a copy of ``client`` (``Anthropic`` or ``AsyncAnthropic``) guarded by ``breaker``.

    Use the returned client: the one you passed in stays unguarded. Every ``messages.create`` /
    ``messages.stream`` / ``beta.messages.*`` call it makes, including those of
    ``client.beta.messages.tool_runner(...)``, is checked pre-flight, and every ``tool_use`` in a response
    is checked before the response reaches your code or the tool runner. ``agent`` names the agent using
    this client; give each agent of a team its own guarded client over one shared breaker.

    ``on_trip="raise"`` (default) raises a refusal to your code. ``on_trip="steer"`` answers a refused
    ``tool_use`` for you with an ``is_error`` tool_result telling the model why (asking the model again when
    nothing else was in the reply), so your loop or the tool runner goes on; budget ceilings and the
    ``max_refusals`` stop are raised. Streamed replies are not steered (a refusal there is raised).

    ``tools`` declares what you know about your tools, since the Messages API's tool definitions carry no
    annotations: ``{"refund": ToolPolicy(irreversible=True)}``, ``{"delete_user": {"destructiveHint": True}}``, or
    the MCP tools you expose (``(await session.list_tools()).tools``: their ``annotations`` are read).
    ``Breaker(tools=...)`` still wins. A gated call raises ``ApprovalRequired`` before the reply reaches your code
    or the tool runner; run again under the same run id once a person decided (see docs/approvals.md).

    The guard is placed *first* in the client's middleware, so no other middleware sits between a refusal
    and your code. Guarding an already guarded client with the same breaker returns it unchanged.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guard(client, breaker) needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    copy = getattr(client, "copy", None)
    existing = getattr(client, "_middleware", None)
    if not callable(copy) or existing is None:
        raise TypeError(
            f"guard() needs an anthropic.Anthropic or AsyncAnthropic client (anthropic>=2.11, which has client "
            f'middleware), got {type(client).__name__}; upgrade with: pip install -U "loopguard-core[anthropic]"'
        )
    guard_middleware = LoopGuardMiddleware(breaker, agent=agent, on_trip=on_trip, tools=tools)  # checks arguments
    for middleware in existing:
        if isinstance(middleware, LoopGuardMiddleware) and middleware.breaker is breaker and middleware.agent == agent:
            if middleware.on_trip != on_trip:
                raise ValueError(
                    f"this client is already guarded by the same breaker with on_trip={middleware.on_trip!r}; "
                    f"guard the original client (not the guarded copy) to use on_trip={on_trip!r}"
                )
            return client
    guarded: ClientT = copy(middleware=[guard_middleware, *existing])
    return guarded
