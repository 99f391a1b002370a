"""Where breaker state lives: in memory (default) or in Redis (extra ``redis``)."""

from __future__ import annotations

import importlib

from .base import (
    ModelRequest,
    ModelUsage,
    RunKey,
    RunSnapshot,
    Store,
    ToolOutcome,
    ToolRequest,
    Transition,
    Verdict,
)
from .memory import MemoryStore

__all__ = [
    "MemoryStore",
    "ModelRequest",
    "ModelUsage",
    "RedisStore",
    "RunKey",
    "RunSnapshot",
    "Store",
    "ToolOutcome",
    "ToolRequest",
    "Transition",
    "Verdict",
    "store_from_url",
]


def store_from_url(url: str, **options: object) -> Store:
    """Build a store from a URL: ``memory://`` or ``redis://host:port/db`` (``rediss://`` for TLS)."""
    if not isinstance(url, str):
        raise TypeError(f"store must be a Store object or a URL string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("redis", "rediss", "unix"):
        # Imported by name so the core never needs redis-py; the module names the extra if it is missing.
        redis_store = importlib.import_module("loopguard_core.stores.redis")
        store: Store = redis_store.RedisStore.from_url(url, **options)
        return store
    raise ValueError(f"unknown store URL {url!r}: use 'memory://' or 'redis://HOST:PORT/DB'")


def __getattr__(name: str) -> object:
    # RedisStore needs redis-py (extra "redis"): import it only when asked for, naming the extra if missing.
    if name == "RedisStore":
        return importlib.import_module("loopguard_core.stores.redis").RedisStore
    raise AttributeError(f"module 'loopguard_core.stores' has no attribute {name!r}")
