"""The plugin's own tests: ``pytester`` runs small user test files with the plugin loaded.

``pytest_plugins = ["pytester"]`` cannot be used here: pytest refuses ``pytest_plugins`` in a conftest below the
rootdir when the whole suite runs (it would load the plugin for every test). ``pytest_configure`` registers
``pytester`` and the loopguard plugin instead, each only when not registered already (the installed entry point
``loopguard`` registers the plugin by itself; registering its module a second time would be an error).

Inner runs are in-process (fast). pytester forgets every module an inner run imported when the test ends, which
breaks libraries that import lazily and look themselves up in ``sys.modules`` later (pydantic does): the library
modules an inner run imported are put back afterwards (``run_pytest`` with ``_keep_imported_libraries``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import loopguard_pytest.plugin

from .helpers import PLUGIN_ARGS, RunPytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if not manager.has_plugin("pytester"):
        manager.import_plugin("pytester")
    if not manager.is_registered(loopguard_pytest.plugin) and not manager.is_blocked("loopguard"):
        manager.register(loopguard_pytest.plugin, "loopguard")


class _Kept:
    """The modules a test imported (itself or through inner runs), to put back after pytester forgets them."""

    def __init__(self) -> None:
        self.before = set(sys.modules)
        self.modules: dict[str, ModuleType] = {}

    def collect(self, inner: Path) -> None:
        """Note every module imported since the test began, except the inner runs' own test files."""
        inner = inner.resolve()
        for name in set(sys.modules) - self.before:
            module = sys.modules[name]
            where = getattr(module, "__file__", None)
            if module is not None and not (where and Path(where).resolve().is_relative_to(inner)):
                self.modules[name] = module


@pytest.fixture(autouse=True)
def _keep_imported_libraries() -> Iterator[_Kept]:
    """Set up before ``pytester`` and torn down after it: puts back the library modules the test imported."""
    kept = _Kept()
    yield kept
    for name, module in kept.modules.items():
        sys.modules.setdefault(name, module)


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, _keep_imported_libraries: _Kept) -> Iterator[RunPytest]:
    """Run pytest in-process on the files written to ``pytester``, with the plugin loaded by ``-p``."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_inprocess(*PLUGIN_ARGS, *args)

    yield run
    _keep_imported_libraries.collect(pytester.path)  # torn down before pytester forgets them
