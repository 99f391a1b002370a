"""The digest that ties the compiled fast path to its source: ``hatch_build.py`` builds it into the module and
:mod:`loopguard_core.signatures` checks it, so a module built from other source (a stale build in a source tree)
is never used. Standard library only: the build hook loads this file on its own, without the package."""

from __future__ import annotations

import hashlib

__all__ = ["source_digest"]


def source_digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]
