"""Fixtures for store tests: real servers, reached or skipped (or failed, when services are required).

Set ``LOOPGUARD_REQUIRE_SERVICES=1`` (CI does) to turn "server not reachable" into a failure instead of
a skip. ``LOOPGUARD_REDIS_URL`` picks the Redis server (default ``redis://127.0.0.1:6379/15``; DB 15 so
tests stay clear of other data). Tests only ever delete keys of the scopes they created.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("LOOPGUARD_REDIS_URL", "redis://127.0.0.1:6379/15")
# Tests that are not about timeouts give Redis 2 s (not the store's 0.25 s default), so a loaded CI machine
# cannot turn a slow answer into a spurious "store_unavailable".
PATIENT = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


def patient(url: str) -> str:
    """``url`` with PATIENT as store options in its query string."""
    return url + ("&" if "?" in url else "?") + "socket_timeout=2&socket_connect_timeout=2"


REQUIRE_ENV = "LOOPGUARD_REQUIRE_SERVICES"


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() == "1"


def require_service(what: str, url: str, probe: Callable[[], object]) -> None:
    """Run ``probe``; when it raises, skip the test with the reason, or fail it if services are required."""
    try:
        probe()
    except Exception as exc:
        message = f"{what} at {url} is not reachable ({type(exc).__name__}: {exc})"
        if services_required():
            pytest.fail(f"{message}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
        pytest.skip(
            f"{message}; start it (or point the LOOPGUARD_*_URL variable at one), or set {REQUIRE_ENV}=1 to fail"
        )


def _ping_redis() -> None:
    if not services_required():
        pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        client.ping()
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a reachable Redis server (skips or fails the test otherwise)."""
    require_service("Redis", REDIS_URL, _ping_redis)
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def scope(request: pytest.FixtureRequest) -> Iterator[str]:
    """A scope no other test (or process) uses; its Redis keys are deleted afterwards, if any."""
    name = f"t-{re.sub(r'[^A-Za-z0-9_-]', '_', request.node.name)[:40]}-{uuid.uuid4().hex[:10]}"
    yield name
    if "redis_url" in request.fixturenames or "redis_client" in request.fixturenames:
        delete_scope(REDIS_URL, name)


def delete_scope(url: str, scope: str, namespace: str = "lg") -> int:
    """Delete every key of ``scope`` (and only those)."""
    import redis

    from loopguard_core.stores.redis import key_pattern

    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        keys = list(client.scan_iter(match=key_pattern(scope, namespace), count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of our own (no persistence) that a test may stop and restart."""

    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.binary, self.port, self.workdir = binary, port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
        client.close()

    def freeze(self) -> None:
        """Suspend the server: connections are still accepted by the kernel, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server abruptly (state is lost: it has no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server cannot handle SIGTERM
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """Start a redis-server on a free port for this test only; never touches the shared server."""
    binary = shutil.which("redis-server")
    require_service("redis-server binary", "PATH", lambda: _must(binary))
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = PrivateRedis(str(binary), port, str(tmp_path))
    server.start()
    yield server
    server.stop()


def _must(binary: str | None) -> None:
    if binary is None:
        raise FileNotFoundError("redis-server not found")
