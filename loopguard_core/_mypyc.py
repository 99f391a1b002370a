"""The optional compiled build: which modules mypyc compiles, and what their source needs for it.

A wheel built with ``LOOPGUARD_COMPILE=1`` carries :data:`COMPILED` compiled by mypyc (``hatch_build.py``); every
other install runs the same source as Python and gives the same verdicts. Nothing here needs mypy at run time.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

__all__ = ["COMPILED", "compiled_modules", "mypyc_attr"]

#: the hot path: the breaker's tool and model pairs, run scoping, signatures, the in-memory store and detection.
#: hatch_build.py reads this tuple; it is the one list.
COMPILED = (
    "loopguard_core.breaker",
    "loopguard_core.runs",
    "loopguard_core.signatures",
    "loopguard_core.stores._run_state",
    "loopguard_core.stores.memory",
    "loopguard_core.detection._observe",
    "loopguard_core.detection._policy",
    "loopguard_core.detection._text",
    "loopguard_core.detection._step",
    "loopguard_core.detection._cycle",
    "loopguard_core.detection._empty_pages",
    "loopguard_core.detection._interleaved",
    "loopguard_core.detection._paraphrase",
    "loopguard_core.detection._repeat",
)


def compiled_modules() -> tuple[str, ...]:
    """The modules of :data:`COMPILED` that this install runs compiled (empty for a pure-Python install)."""
    found = []
    for name in COMPILED:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and not spec.origin.endswith(".py"):
            found.append(name)
    return tuple(found)


if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:

    def mypyc_attr(*_args: object, **_kwargs: object) -> object:
        """mypyc reads ``@mypyc_attr(...)`` when it compiles; run as Python, it changes nothing."""
        return lambda cls: cls
