"""Fixtures shared by the adapter tests."""

from __future__ import annotations

from typing import Any

import pytest

from loopguard_core import Breaker


@pytest.fixture
def preflight_estimates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``estimated_input_tokens`` each ``before_model`` / ``abefore_model`` call received, in order."""
    sent: list[int] = []
    sync, asynchronous = Breaker.before_model, Breaker.abefore_model

    def before_model(self: Breaker, **kwargs: Any) -> None:
        sent.append(kwargs["estimated_input_tokens"])
        sync(self, **kwargs)

    async def abefore_model(self: Breaker, **kwargs: Any) -> None:
        sent.append(kwargs["estimated_input_tokens"])
        await asynchronous(self, **kwargs)

    monkeypatch.setattr(Breaker, "before_model", before_model)
    monkeypatch.setattr(Breaker, "abefore_model", abefore_model)
    return sent
