"""loopguard: stop runaway AI-agent loops before they spend money."""

from __future__ import annotations

__all__: list[str] = []
