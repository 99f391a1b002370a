"""Test-only glue for the LangChain / LangGraph tests: counted tools and small message helpers.

The scripted model is the public ``loopguard_langchain.testing.ScriptedChatModel``; ``BodyCounter`` and
``Recorder`` come from ``loopguard_core.testing``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool

from loopguard_core import MemoryStore
from loopguard_core.testing import BodyCounter
from loopguard_langchain.testing import ScriptedChatModel

__all__ = [
    "CountingStore",
    "answered_every_tool_call",
    "counted_tools",
    "page_script",
    "start_rows",
    "user",
    "watched_breaker",
]


class CountingStore(MemoryStore):
    """A memory store that counts its snapshot reads (each one a round trip on Redis or PostgreSQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = 0

    def snapshot(self, run: Any) -> Any:
        self.snapshots += 1
        return super().snapshot(run)


def counted_tools(counter: BodyCounter) -> list[Any]:
    """``lookup`` (same answer for the same query), ``fetch_page`` (a different page each time) and
    ``alookup`` (an ``async def`` twin of lookup), each counting its body runs in ``counter``."""

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", {"q": q})
        return f"result for {q}"

    @tool
    def fetch_page(page: int) -> str:
        """Fetch one page of results."""
        counter.hit("fetch_page", {"page": page})
        return f"page {page}: items {page * 10}..{page * 10 + 9}"

    @tool
    async def alookup(q: str) -> str:
        """Look something up (async)."""
        counter.hit("alookup", {"q": q})
        return f"result for {q}"

    return [lookup, fetch_page, alookup]


def user(text: str = "go") -> dict[str, Any]:
    """The input of one agent invocation."""
    return {"messages": [{"role": "user", "content": text}]}


def answered_every_tool_call(messages: list[Any]) -> bool:
    """True when every tool call of every AIMessage has a ToolMessage answer (providers require it)."""
    asked = {c["id"] for m in messages for c in (getattr(m, "tool_calls", None) or [])}
    answered = {m.tool_call_id for m in messages if getattr(m, "type", "") == "tool"}
    return asked <= answered


def watched_breaker(path: Any) -> tuple[Any, CountingStore, Any]:
    """A breaker whose store counts its reads and whose ledger (at ``path``) writes ``start`` checkpoints."""
    from loopguard_core import Breaker, Ledger, StaticPrices

    store, ledger = CountingStore(), Ledger(path)
    prices = StaticPrices({"fake-scripted": (1.0, 1.0)})
    return Breaker(store=store, ledger=ledger, prices=prices, checkpoint_after_usd=1000), store, ledger


def page_script(pages: int) -> list[Any]:
    """``pages`` turns fetching one page each, then the answer "done"."""
    return [[("fetch_page", {"page": n})] for n in range(1, pages + 1)] + ["done"]


def start_rows(ledger: Any) -> list[Any]:
    return [r for r in ledger.rows() if r.origin == "checkpoint" and r.breach_reason.startswith("start")]


class NoUsageModel(ScriptedChatModel):
    """A provider that reports no token usage."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._generate(*args, **kwargs)
        for generation in result.generations:
            generation.message.usage_metadata = None
        result.llm_output = {"model_name": self.model_name}
        return result
