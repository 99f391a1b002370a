"""The optional compiled fast path of :mod:`loopguard_core.signatures` (``_speedups.c``)."""

from collections.abc import Callable
from typing import Any

source_digest: str  # of the _speedups.c it was built from (hatch_build.py)

def loose_json(value: Any, prefix: bytes = ..., /) -> bytes | None: ...
def configure(
    fold: Callable[[str], str], quote: Callable[[str], str], max_depth: int, max_nodes: int, hash_above: int, /
) -> None: ...
