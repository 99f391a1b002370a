"""Idempotency keys: digests of the run, the tool and the canonical arguments (never of the time).

The arguments are put in canonical form by :func:`loopguard_core.signatures.canonical_text` with ``loose=False``:
key order does not matter, everything else does (``"ABC"`` is not ``"abc"``, ``10`` is not ``10.0``), because two
refunds that differ only in letter case are two requests, whatever loop detection thinks of them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..signatures import canonical_text

__all__ = ["args_digest", "call_key", "idempotency_key", "user_key"]

_VERSION = "loopguard-side-effect-v1"


def _digest(*parts: str) -> str:
    text = "\x00".join((_VERSION, *parts))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _name(param: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{param} must be a non-empty str, got {value!r}")
    return value


def args_digest(args: Any) -> str:
    """A 32-hex-digit digest of ``args`` in canonical form (what a record keeps instead of the arguments)."""
    return _digest("args", canonical_text(args, loose=False))


def idempotency_key(run_id: str, tool: str, args: Any) -> str:
    """The key of one side effect: a digest of the run (or task) id, the tool and its canonical arguments.

    The same call in the same run gets the same key in every process and after a restart; a call in another
    run, to another tool or with other arguments gets another. Time never takes part.
    """
    return call_key(run_id, tool, args_digest(args))


def call_key(run_id: str, tool: str, digest: str) -> str:
    """:func:`idempotency_key` from an :func:`args_digest` already computed."""
    return _digest("call", _name("run_id", run_id), _name("tool", tool), _name("digest", digest))


def user_key(tool: str, key: str) -> str:
    """The store key for a key you chose (``key="refund-order-42"``): a digest of it and the tool's name, so
    the text you chose is never stored and two tools given the same key keep separate records."""
    return _digest("user", _name("tool", tool), _name("key", key))
