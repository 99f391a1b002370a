"""The measurements behind ``docs/benchmarks.md``.

Run everything (writes ``docs/benchmarks.md`` and ``docs/img/*.png``)::

    python -m benchmarks            # full run
    python -m benchmarks --smoke    # quick mode for CI (< 60 s)

or one measurement at a time (``python -m benchmarks.detection``, ...). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import sys

__all__: list[str] = []

# A child of ``benchmarks.compiled`` measures the compiled build: its loopguard comes from that wheel's folder,
# ahead of the checkout that ``python -m`` put first on sys.path.
_BUILD = os.environ.get("LOOPGUARD_BENCH_BUILD")
if _BUILD:
    sys.path.insert(0, _BUILD)
