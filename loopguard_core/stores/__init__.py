"""Where breaker state lives: in memory (default), in a SQLite file (durable, one host) or in Redis (extra
``redis``)."""

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
from .sqlite import SQLiteStore

__all__ = [
    "MemoryStore",
    "ModelRequest",
    "ModelUsage",
    "RedisStore",
    "RunKey",
    "RunSnapshot",
    "SQLiteStore",
    "Store",
    "ToolOutcome",
    "ToolRequest",
    "Transition",
    "Verdict",
    "store_from_url",
]


def store_from_url(url: str, **options: object) -> Store:
    """Build a store from a URL: ``memory://``, ``sqlite:///runs.db`` (``sqlite:////abs/path.db``) or
    ``redis://host:port/db`` (``rediss://`` for TLS, ``redis+cluster://host:port,host:port/0`` for a cluster)."""
    if not isinstance(url, str):
        raise TypeError(f"store must be a Store object or a URL string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        return SQLiteStore.from_url(url, **options)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        # Imported by name so the core never needs redis-py; the module names the extra if it is missing.
        redis_store = importlib.import_module("loopguard_core.stores.redis")
        store: Store = redis_store.RedisStore.from_url(url, **options)
        return store
    raise ValueError(f"unknown store URL {url!r}: use 'memory://', 'sqlite:///PATH.db' or 'redis://HOST:PORT/DB'")


def __getattr__(name: str) -> object:
    # RedisStore needs redis-py (extra "redis"): import it only when asked for, naming the extra if missing.
    if name == "RedisStore":
        return importlib.import_module("loopguard_core.stores.redis").RedisStore
    raise AttributeError(f"module 'loopguard_core.stores' has no attribute {name!r}")
