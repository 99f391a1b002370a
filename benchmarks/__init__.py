"""The measurements behind ``docs/benchmarks.md``.

Run everything (writes ``docs/benchmarks.md`` and ``docs/img/*.png``)::

    python -m benchmarks            # full run
    python -m benchmarks --smoke    # quick mode for CI (< 60 s)

or one measurement at a time (``python -m benchmarks.detection``, ...). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

__all__: list[str] = []
