"""loopguard for LangGraph: ``guarded_tool_node`` (a checked ToolNode) and ``guard_node`` (a node before it).

Install with ``pip install "loopguard-core[langgraph]"``. See docs/frameworks/langgraph.md. For
``create_agent`` agents use ``loopguard_langchain.LoopGuardMiddleware``; for any graph,
``loopguard_langchain.LoopGuardCallbackHandler`` in ``config={"callbacks": [...]}`` works too. For tests, graphs
use ``loopguard_langchain.testing.ScriptedChatModel``, a scripted fake chat model.
"""

from __future__ import annotations

from loopguard_core._extras import require

require("langgraph.prebuilt", extra="langgraph", purpose="loopguard_langgraph")
require("langchain.agents", extra="langgraph", purpose="loopguard_langgraph")

from .guard import guard_node  # noqa: E402
from .tool_node import GuardedToolNode, guarded_tool_node  # noqa: E402

__all__ = ["GuardedToolNode", "guard_node", "guarded_tool_node"]
