"""What the plugin's tests share: the arguments of every inner pytest run, and the type of ``run_pytest``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

__all__ = ["PLUGIN_ARGS", "RunPytest"]

# In every inner run: the plugin from this source tree, whether or not its entry point is installed.
PLUGIN_ARGS = (
    *("-p", "no:loopguard", "-p", "loopguard_pytest.plugin", "-p", "no:cacheprovider", "--strict-markers"),
    *("-W", "ignore::pytest.PytestAssertRewriteWarning"),  # the plugin module is imported here already
    *("-p", "no:hypothesispytest"),  # it imports hypothesis afresh in every inner run (a second each)
)

RunPytest = Callable[..., pytest.RunResult]
"""``run_pytest(*args)``: pytest run in-process on the files written to ``pytester``, with ``PLUGIN_ARGS``."""
