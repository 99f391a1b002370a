"""The installed distribution registers the plugin (``[project.entry-points.pytest11] loopguard``), so users need
no ``-p`` and no conftest line. Skipped until the entry point is in pyproject.toml and the package reinstalled."""

from __future__ import annotations

import importlib.metadata

import pytest

import loopguard_pytest.plugin

from .helpers import RunPytest


def _entry_point() -> importlib.metadata.EntryPoint | None:
    return next((ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "loopguard"), None)


ENTRY_POINT = _entry_point()
needs_entry_point = pytest.mark.skipif(
    ENTRY_POINT is None,
    reason="the pytest11 entry point 'loopguard' is not installed: add `loopguard = \"loopguard_pytest.plugin\"` "
    "under [project.entry-points.pytest11] in pyproject.toml, then reinstall (pip install -e '.[all,dev]')",
)

QUIET = ("-p", "no:cacheprovider", "--strict-markers", "-W", "ignore::pytest.PytestAssertRewriteWarning")
USES_THE_PLUGIN = """
import pytest
from loopguard_core import Breaker


@pytest.mark.loopguard(max_turns=2)
def test_the_fixture_is_there(breaker):
    assert isinstance(breaker, Breaker) and breaker.limits.max_turns == 2
"""


@needs_entry_point
def test_the_distribution_declares_the_plugin_module() -> None:
    assert ENTRY_POINT is not None
    assert ENTRY_POINT.value == "loopguard_pytest.plugin"
    assert ENTRY_POINT.dist is not None and ENTRY_POINT.dist.name == "loopguard-core"
    assert ENTRY_POINT.load() is loopguard_pytest.plugin


@needs_entry_point
def test_the_installed_plugin_loads_by_itself(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run_pytest is not called: its set-up (the ini, the imported modules kept) is what is wanted here.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(USES_THE_PLUGIN)
    result = pytester.runpytest_inprocess(*QUIET)
    result.assert_outcomes(passed=1)


@needs_entry_point
def test_with_autoload_disabled_dash_p_loopguard_loads_it(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(USES_THE_PLUGIN)
    result = pytester.runpytest_inprocess("-p", "loopguard", *QUIET)
    result.assert_outcomes(passed=1)
