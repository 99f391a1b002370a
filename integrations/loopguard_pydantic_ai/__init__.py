"""loopguard for Pydantic AI: ``LoopGuardCapability``, ``guarded_run``, ``guarded_run_sync`` and ``approvals_for``.

Install with ``pip install "loopguard-core[pydantic-ai]"``. See docs/frameworks/pydantic-ai.md.
For tests, ``loopguard_pydantic_ai.testing.ScriptedModel`` is a scripted fake model (not imported here).
"""

from __future__ import annotations

from loopguard_core._extras import require

require("pydantic_ai", extra="pydantic-ai", purpose="Guarding Pydantic AI agents")
try:
    import pydantic_ai.capabilities  # noqa: F401  (capabilities arrived in pydantic-ai 2.x)
except ImportError as exc:  # pragma: no cover - depends on the installed release
    raise ImportError(
        "loopguard_pydantic_ai needs pydantic-ai-slim>=2.60 (for pydantic_ai.capabilities); "
        'upgrade with: pip install -U "loopguard-core[pydantic-ai]"'
    ) from exc

from ._approvals import approvals_for  # noqa: E402  (after the extra check, on purpose)
from ._capability import LoopGuardCapability  # noqa: E402
from ._run import guarded_run, guarded_run_sync  # noqa: E402

__all__ = ["LoopGuardCapability", "approvals_for", "guarded_run", "guarded_run_sync"]
