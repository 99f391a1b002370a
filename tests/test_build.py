"""The suite runs against the build it was asked to: CI runs it once on the source as Python and once on a wheel
built with ``LOOPGUARD_COMPILE=1``, and says which with ``LOOPGUARD_EXPECT_COMPILED``."""

from __future__ import annotations

import os

import loopguard_core
from loopguard_core._mypyc import COMPILED, compiled_modules


def test_the_hot_path_is_compiled_whole_or_not_at_all() -> None:
    compiled = compiled_modules()
    if os.environ.get("LOOPGUARD_EXPECT_COMPILED") == "1":
        # a run meant for the compiled wheel that imported the source tree instead would test the wrong thing
        assert compiled == COMPILED, f"{loopguard_core.__file__}: compiled {compiled}"
    else:
        assert compiled in ((), COMPILED)  # a half-compiled install mixes two builds' modules: never shipped
