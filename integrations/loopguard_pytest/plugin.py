"""The loopguard pytest plugin: fixtures, the ``loopguard`` marker and ``--loopguard-report``.

Installed with ``pip install "loopguard-core[pytest]"``, it registers itself (entry point ``pytest11``,
``loopguard = "loopguard_pytest.plugin"``); with plugin autoloading disabled, pass ``-p loopguard``.

Fixtures (each new for every test; none is autouse, so a test that asks for none of them runs as before):

- ``breaker``: a :class:`~loopguard_core.Breaker` on ``loopguard_clock``, writing to ``loopguard_ledger`` and
  watched (its trips are collected for ``assert_not_tripped(breaker)`` and the report). Its keyword arguments
  come from ``@pytest.mark.loopguard(max_turns=5, ...)`` on the test, its class or its module (the closest wins,
  key by key).
- ``loopguard_clock``: a :class:`~loopguard_core.testing.FakeClock` (``loopguard_clock.advance(61)``).
- ``loopguard_ledger``: a :class:`~loopguard_core.testing.Recorder` (``loopguard_ledger.where(origin="tool")``).
- ``loopguard_bodies``: a :class:`~loopguard_core.testing.BodyCounter` (``loopguard_bodies.hit("search")``).
- ``scripted_model``: ``scripted_model("langchain", script, loop=..., cap=...)`` builds a framework's scripted
  fake model (see :func:`loopguard_pytest.scripted_model`).

Nothing from loopguard is imported until a fixture is used, so the plugin costs nothing to runs that do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from ._report import WATCHED, Reporter, Watched

if TYPE_CHECKING:
    from loopguard_core import Breaker
    from loopguard_core.testing import BodyCounter, FakeClock, Recorder

__all__ = [
    "breaker",
    "loopguard_bodies",
    "loopguard_clock",
    "loopguard_ledger",
    "pytest_addoption",
    "pytest_configure",
    "scripted_model",
]

MARKER = "loopguard"
_REPORTER = "loopguard-report"
_OWNED = {"clock": "loopguard_clock", "ledger": "loopguard_ledger"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopguard", "loopguard (AI-agent circuit breaker)")
    group.addoption(
        "--loopguard-report",
        action="store_true",
        default=False,
        help="print each test's guarded calls and trips (those of the `breaker` fixture) in the terminal summary.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): keyword arguments of the Breaker the `breaker` fixture builds, "
        "e.g. @pytest.mark.loopguard(max_turns=5, mode='observe').",
    )
    if config.getoption("loopguard_report", default=False) and not config.pluginmanager.has_plugin(_REPORTER):
        config.pluginmanager.register(Reporter(), _REPORTER)


def _marker_kwargs(node: pytest.Item) -> dict[str, Any]:
    """The Breaker keyword arguments of every ``loopguard`` marker on the test, the closest winning key by key."""
    kwargs: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers(MARKER))):
        if marker.args:
            pytest.fail(
                f"@pytest.mark.{MARKER} takes the Breaker's keyword arguments only, got positional {marker.args!r}",
                pytrace=False,
            )
        kwargs.update(marker.kwargs)
    owned = [name for name in _OWNED if name in kwargs]
    if owned:
        fixtures = " and ".join(f"`{_OWNED[name]}`" for name in owned)
        pytest.fail(
            f"@pytest.mark.{MARKER} cannot set {', '.join(owned)}: the `breaker` fixture uses the {fixtures} "
            "fixture(s); build a Breaker yourself to use another",
            pytrace=False,
        )
    return kwargs


@pytest.fixture
def loopguard_clock() -> FakeClock:
    """A clock that moves only when told to: ``loopguard_clock.advance(seconds)``. The ``breaker`` fixture's clock."""
    from loopguard_core.testing import FakeClock

    return FakeClock()


@pytest.fixture
def loopguard_ledger() -> Recorder:
    """The rows the ``breaker`` fixture writes, kept in memory: ``loopguard_ledger.where(origin="breaker")``."""
    from loopguard_core.testing import Recorder

    return Recorder()


@pytest.fixture
def loopguard_bodies() -> BodyCounter:
    """Counts tool-body runs: call ``loopguard_bodies.hit("search")`` first thing in the body, then assert on
    ``loopguard_bodies.count("search")`` or pass ``bodies=loopguard_bodies`` to ``assert_tripped``."""
    from loopguard_core.testing import BodyCounter

    return BodyCounter()


@pytest.fixture
def breaker(request: pytest.FixtureRequest, loopguard_clock: FakeClock, loopguard_ledger: Recorder) -> Breaker:
    """A watched Breaker on ``loopguard_clock`` writing to ``loopguard_ledger``; ``@pytest.mark.loopguard(...)``
    gives its keyword arguments (``max_turns``, ``loop_detection``, ``mode``...)."""
    from loopguard_core import Breaker

    from ._watch import watch

    node = request.node
    kwargs = _marker_kwargs(node)
    try:
        made = Breaker(clock=loopguard_clock, ledger=loopguard_ledger, **kwargs)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        pytest.fail(f"@pytest.mark.{MARKER}({given}) does not make a Breaker: {exc}", pytrace=False)
    node.stash[WATCHED] = Watched(loopguard_ledger.rows, watch(made), kwargs)
    return made


@pytest.fixture
def scripted_model() -> Callable[..., Any]:
    """``scripted_model(framework, script=(), *, loop=None, cap=30, **options)``: the framework's scripted fake model
    (``"langchain"``, ``"langgraph"``, ``"crewai"``, ``"pydantic-ai"``, ``"anthropic"``); skips the test, naming the
    extra, when the framework is not installed."""
    from ._models import scripted_model as build

    return build
