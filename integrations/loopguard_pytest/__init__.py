"""loopguard for pytest: fixtures and assertions for "my agent is stopped when it loops" and "my agent's normal
run is never stopped" tests, and ``--loopguard-report``.

Install with ``pip install "loopguard-core[pytest]"``: the plugin (:mod:`loopguard_pytest.plugin`) registers
itself and brings the fixtures ``breaker``, ``loopguard_clock``, ``loopguard_ledger``, ``loopguard_bodies`` and
``scripted_model``, and the marker ``@pytest.mark.loopguard(**breaker_kwargs)``. See docs/testing.md.

::

    from loopguard_pytest import assert_not_tripped, assert_tripped

    with assert_tripped(reason="loop", tool="search", max_body_runs=3, bodies=loopguard_bodies):
        agent.invoke(...)
    with assert_not_tripped(breaker):
        agent.invoke(...)

The names below are imported on first use, so loading the plugin imports nothing of loopguard.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._assertions import NotTripped, TripExpected, assert_not_tripped, assert_tripped
    from ._models import FRAMEWORKS, scripted_model
    from ._watch import TripLog, watch

__all__ = [
    "FRAMEWORKS",
    "NotTripped",
    "TripExpected",
    "TripLog",
    "assert_not_tripped",
    "assert_tripped",
    "scripted_model",
    "watch",
]

_WHERE = {
    "FRAMEWORKS": "._models",
    "NotTripped": "._assertions",
    "TripExpected": "._assertions",
    "TripLog": "._watch",
    "assert_not_tripped": "._assertions",
    "assert_tripped": "._assertions",
    "scripted_model": "._models",
    "watch": "._watch",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Not cached here: the module holding it stays the one source of truth (pytester may re-import it).
    return getattr(importlib.import_module(where, __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
