"""What a wasted model turn costs: a documented token assumption priced by ``genai-prices``.

Every tool call in an agent loop is proposed by one model turn that reads the conversation so far and
writes the call. The benchmark assumes ``TOKENS_IN`` input and ``TOKENS_OUT`` output tokens per turn
(a mid-sized agent context; a real runaway's context grows, so this understates late turns) and prices
them for ``MODEL`` with the ``genai-prices`` database. A scenario call may carry its own ``tokens``.
"""

from __future__ import annotations

import functools

__all__ = ["MODEL", "TOKENS_IN", "TOKENS_OUT", "usd_per_turn"]

MODEL = "claude-sonnet-4-5"
PROVIDER = "anthropic"
TOKENS_IN = 3_000
TOKENS_OUT = 300


@functools.lru_cache(maxsize=1)
def usd_per_turn() -> float | None:
    """USD of one turn of ``TOKENS_IN`` + ``TOKENS_OUT`` tokens for ``MODEL``; ``None`` without genai-prices."""
    try:
        import genai_prices
    except ImportError:
        return None
    usage = genai_prices.Usage(input_tokens=TOKENS_IN, output_tokens=TOKENS_OUT)
    return float(genai_prices.calc_price(usage, model_ref=MODEL, provider_id=PROVIDER).total_price)
