"""loopguard for LiteLLM: ``LoopGuardLogger`` (proxy callback; ``.completion`` / ``.acompletion`` for the SDK).

Install with ``pip install "loopguard-core[litellm]"``. See docs/frameworks/litellm.md.
"""

from __future__ import annotations

from loopguard_core._extras import require

require("litellm", extra="litellm", purpose="Guarding LiteLLM calls")

from ._logger import LoopGuardLogger  # noqa: E402  (after the extra check, on purpose)

__all__ = ["LoopGuardLogger"]
