"""Budget stores under test; Redis is reached, skipped with a reason, or failed when services are required."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.stores.conftest import REDIS_URL, _ping_redis, require_service


class WallClock:
    """Wall-clock seconds, moved by hand (period rollovers without waiting for midnight)."""

    def __init__(self, now: float = 1_764_806_400.0) -> None:  # 2025-12-04 00:00 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def redis_budget_prefix() -> Iterator[str]:
    require_service("Redis", REDIS_URL, _ping_redis)
    import redis

    prefix = f"lg-test:{{b{uuid.uuid4().hex[:8]}}}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()
