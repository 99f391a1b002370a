"""``scripted_model(framework, script, loop=..., cap=...)``: the scripted fake model of each framework's testing kit.

The kits import their framework, so each is imported only when asked for; a framework that is not installed
skips the test, naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from loopguard_core.testing import Step

__all__ = ["FRAMEWORKS", "scripted_model"]


@dataclass(frozen=True)
class _Kit:
    extra: str
    needs: tuple[str, ...]  # the modules the kit imports (a missing one means the extra is not installed)
    module: str
    factory: str


_KITS: dict[str, _Kit] = {
    "langchain": _Kit("langchain", ("langchain", "langchain_core"), "loopguard_langchain.testing", "ScriptedChatModel"),
    "langgraph": _Kit("langgraph", ("langgraph", "langchain"), "loopguard_langchain.testing", "ScriptedChatModel"),
    "crewai": _Kit("crewai", ("crewai",), "loopguard_crewai.testing", "ScriptedLLM"),
    "pydantic-ai": _Kit("pydantic-ai", ("pydantic_ai",), "loopguard_pydantic_ai.testing", "ScriptedModel"),
    "anthropic": _Kit("anthropic", ("anthropic",), "loopguard_anthropic.testing", "ScriptedAPI"),
}
FRAMEWORKS: tuple[str, ...] = tuple(_KITS)
"""The framework names ``scripted_model`` knows (``pydantic_ai`` is accepted for ``pydantic-ai``)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is not a package, a module without a spec
        return False


def _kit(framework: str) -> _Kit:
    if not isinstance(framework, str):
        raise TypeError(f"framework must be a str (one of {', '.join(FRAMEWORKS)}), got {framework!r}")
    kit = _KITS.get(framework.strip().lower().replace("_", "-"))
    if kit is None:
        raise ValueError(
            f"scripted_model knows no framework {framework!r}: choose one of {', '.join(FRAMEWORKS)} "
            "(for another client, drive the breaker with loopguard_core.testing.drive)"
        )
    return kit


def scripted_model(
    framework: str, script: Iterable[Step] = (), /, *, loop: Step | None = None, cap: int = 30, **options: Any
) -> Any:
    """The scripted fake model of ``framework``'s testing kit, playing ``script`` then ``loop`` up to ``cap`` calls.

    ============  ======================================================================
    framework     returns
    ============  ======================================================================
    langchain     ``loopguard_langchain.testing.ScriptedChatModel`` (a ``BaseChatModel``)
    langgraph     the same ``ScriptedChatModel``
    crewai        ``loopguard_crewai.testing.ScriptedLLM`` (a CrewAI ``BaseLLM``)
    pydantic-ai   ``loopguard_pydantic_ai.testing.ScriptedModel`` (a ``FunctionModel``)
    anthropic     ``loopguard_anthropic.testing.ScriptedAPI`` (``api.client()`` is a real ``Anthropic``)
    ============  ======================================================================

    A step is ``"text"`` (a final answer), ``("tool", {args})`` (a tool call) or a list of those (parallel calls);
    ``options`` go to the model as they are (``native=False`` for CrewAI, ``usage=(100, 20)``...). When the
    framework is not installed, the test is skipped with the ``pip install "loopguard-core[extra]"`` to run it.
    """
    kit = _kit(framework)
    missing = [module for module in kit.needs if not _installed(module)]
    if missing:
        pytest.skip(
            f'scripted_model({framework!r}) needs the {kit.extra} extra: pip install "loopguard-core[{kit.extra}]" '
            f"({', '.join(missing)} is not installed)"
        )
    factory = getattr(importlib.import_module(kit.module), kit.factory)
    return factory(script, loop=loop, cap=cap, **options)
