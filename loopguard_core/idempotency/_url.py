"""Choose a side-effect store by URL, as ``loopguard_core.stores.store_from_url`` does for breaker stores."""

from __future__ import annotations

from typing import Any

from ._base import SideEffectStore
from ._memory import MemorySideEffects
from ._postgres import PostgresSideEffects
from ._redis import RedisSideEffects
from ._sqlite import SQLiteSideEffects

__all__ = ["side_effect_store"]


def side_effect_store(url: str, **options: Any) -> SideEffectStore:
    """A store from a URL: ``memory://``, ``sqlite:///relative.db`` / ``sqlite:////absolute.db``,
    ``redis://host:port/db`` (``rediss://``, ``unix://``), ``postgresql://user@host/db`` (``postgres://``).

    ``options`` go to the store's constructor (e.g. ``clock=``, ``busy_timeout=``, ``namespace=``). Redis and
    PostgreSQL need their extras (``pip install "loopguard-core[redis]"`` / ``[postgres]``).
    """
    if not isinstance(url, str):
        raise TypeError(f"store must be a SideEffectStore or a URL string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemorySideEffects(**options)
    if scheme == "sqlite":
        return SQLiteSideEffects(url, **options)
    if scheme in ("redis", "rediss", "unix"):
        return RedisSideEffects(url, **options)
    if scheme in ("postgresql", "postgres"):
        return PostgresSideEffects(url, **options)
    hint = f" (for a SQLite file, write 'sqlite:///{url}')" if not scheme and url else ""
    raise ValueError(
        f"unknown side-effect store URL {url!r}{hint}: use 'memory://', 'sqlite:///path.db', "
        "'redis://HOST:PORT/DB' or 'postgresql://USER@HOST/DB'"
    )
