"""loopguard for the Anthropic SDK: ``guard(client, breaker)`` and ``LoopGuardMiddleware``.

Install with ``pip install "loopguard-core[anthropic]"``. See docs/frameworks/anthropic.md.
For tests, ``loopguard_anthropic.testing.ScriptedAPI`` is a scripted Messages API (not imported here).
"""

from __future__ import annotations

from loopguard_core._extras import require

_anthropic = require("anthropic", extra="anthropic", purpose="Guarding Anthropic SDK clients")
if not hasattr(_anthropic, "Middleware"):  # pragma: no cover - depends on the installed release
    raise ImportError(
        "loopguard_anthropic needs anthropic>=2.11 (client middleware); "
        'upgrade with: pip install -U "loopguard-core[anthropic]"'
    )

from ._guard import guard  # noqa: E402  (after the extra check, on purpose)
from ._middleware import LoopGuardMiddleware  # noqa: E402

__all__ = ["LoopGuardMiddleware", "guard"]
