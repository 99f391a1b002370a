"""``guard(client, breaker)``: a copy of an Anthropic client whose every Messages call is checked."""

from __future__ import annotations

from typing import TypeVar

from loopguard_core import Breaker

from ._middleware import LoopGuardMiddleware

__all__ = ["guard"]

ClientT = TypeVar("ClientT")


def guard(client: ClientT, breaker: Breaker, *, agent: str | None = None) -> ClientT:
    """Return a copy of ``client`` (``Anthropic`` or ``AsyncAnthropic``) guarded by ``breaker``.

    Use the returned client: the one you passed in stays unguarded. Every ``messages.create`` /
    ``messages.stream`` / ``beta.messages.*`` call it makes, including those of
    ``client.beta.messages.tool_runner(...)``, is checked pre-flight, and every ``tool_use`` in a response
    is checked before the response reaches your code or the tool runner. ``agent`` names the agent using
    this client; give each agent of a team its own guarded client over one shared breaker.

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
    for middleware in existing:
        if isinstance(middleware, LoopGuardMiddleware) and middleware.breaker is breaker and middleware.agent == agent:
            return client
    guarded: ClientT = copy(middleware=[LoopGuardMiddleware(breaker, agent=agent), *existing])
    return guarded
