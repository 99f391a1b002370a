"""Model prices from a maintained database (``genai-prices``, extra ``pricing``), in integer micro-USD.

``genai-prices`` works offline from its bundled data; it is imported only when a price is needed.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ._extras import require

__all__ = ["GenaiPrices", "StaticPrices"]


class GenaiPrices:
    """Prices from the ``genai-prices`` package. Unknown models price as ``None``."""

    def __init__(self, provider_id: str | None = None) -> None:
        self._provider_id = provider_id
        self._module: Any = None

    def _prices(self) -> Any:
        if self._module is None:
            self._module = require("genai_prices", extra="pricing", purpose="Pricing model calls in USD")
        return self._module

    def max_output_tokens(self, model: str) -> int | None:
        """The model's largest output, where the data knows it: genai-prices records the context window only,
        which bounds the output (never an output reserve larger than the window)."""
        module = self._prices()
        if not _known(module, model, self._provider_id):
            return None
        try:
            info = module.calc_price(module.Usage(input_tokens=1, output_tokens=1), model_ref=model).model
        except LookupError:
            return None
        window = getattr(info, "context_window", None)
        return window if isinstance(window, int) and window > 0 else None

    def cost_micros(self, model: str, input_tokens: int, output_tokens: int) -> int | None:
        module = self._prices()
        if not _known(module, model, self._provider_id):
            return None
        usage = module.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        price = module.calc_price(usage, model_ref=model, provider_id=self._provider_id)
        # Round up: a ceiling must never be loosened by rounding.
        micros: int = math.ceil(price.total_price * 1_000_000)
        return micros


@functools.lru_cache(maxsize=512)
def _known_cached(module: Any, model: str, provider_id: str | None) -> bool:
    try:
        module.calc_price(module.Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider_id)
    except LookupError:
        return False
    return True


def _known(module: Any, model: str, provider_id: str | None) -> bool:
    return _known_cached(module, model, provider_id)


class StaticPrices:
    """Prices you give yourself, in USD per million tokens: ``{"my-model": (3.0, 15.0)}``, optionally with the
    model's largest output in tokens as a third value (``(3.0, 15.0, 8192)``: what an uncapped request reserves).

    For private or fine-tuned models that no public price list knows.
    """

    def __init__(self, per_million: dict[str, tuple[float, ...]]) -> None:
        for model, values in per_million.items():
            if (
                not isinstance(model, str)
                or len(values) not in (2, 3)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in values)
                or (len(values) == 3 and (not isinstance(values[2], int) or values[2] <= 0))
            ):
                raise ValueError(
                    f"StaticPrices expects {{model: (input_usd, output_usd[, max_output_tokens])}} >= 0, got {model!r}"
                )
        self._prices = dict(per_million)

    def cost_micros(self, model: str, input_tokens: int, output_tokens: int) -> int | None:
        values = self._prices.get(model)
        if values is None:
            return None
        return math.ceil(input_tokens * values[0] + output_tokens * values[1])

    def max_output_tokens(self, model: str) -> int | None:
        values = self._prices.get(model)
        return int(values[2]) if values is not None and len(values) == 3 else None
