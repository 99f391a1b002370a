"""loopguard for LangChain: ``LoopGuardMiddleware`` (v1 ``create_agent``) and ``LoopGuardCallbackHandler``.

Install with ``pip install "loopguard-core[langchain]"``. See docs/frameworks/langchain.md.
For tests, ``loopguard_langchain.testing.ScriptedChatModel`` is a scripted fake chat model (not imported here).
"""

from __future__ import annotations

from loopguard_core._extras import require

require("langchain.agents", extra="langchain", purpose="loopguard_langchain")

from ._order import check_middleware_order  # noqa: E402
from .agent import guarded_agent  # noqa: E402
from .handler import LoopGuardCallbackHandler, LoopGuardSteered  # noqa: E402
from .middleware import LoopGuardMiddleware  # noqa: E402

__all__ = [
    "LoopGuardCallbackHandler",
    "LoopGuardMiddleware",
    "LoopGuardSteered",
    "check_middleware_order",
    "guarded_agent",
]
