"""loopguard for the OpenAI Python SDK: ``guard(client, breaker)`` and ``guarded_http_client(...)``.

Install with ``pip install "loopguard-core[openai]"``. See docs/frameworks/openai.md.
"""

from __future__ import annotations

from loopguard_core._extras import require

require("openai", extra="openai", purpose="Guarding OpenAI SDK clients")

from ._guard import guard, guarded_http_client  # noqa: E402  (after the extra check, on purpose)

__all__ = ["guard", "guarded_http_client"]
