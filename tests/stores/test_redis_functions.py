"""The steps as Redis Functions: the store's own client on one server loads the library once and calls it; an
operator deleting it is survived; a server without Functions (or a user not allowed them) runs the same steps
as scripts. Each case runs on a redis-server of its own."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.limits import Limits, LoopDetection
from loopguard_core.stores.base import RunKey, ToolOutcome, ToolRequest
from loopguard_core.stores.memory import MemoryStore

redis = pytest.importorskip("redis")

from loopguard_core.stores.redis import RedisStore, _library  # noqa: E402

from .conftest import PATIENT, PrivateRedis, free_port, redis_binary  # noqa: E402

LIMITS = Limits(max_tool_calls=5, loop=LoopDetection(max_repeats=2))


def _calls(server_url: str, store: RedisStore) -> dict[str, int]:
    client = redis.Redis.from_url(server_url)
    stats = client.info("commandstats")
    client.close()
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("fcall", "evalsha", "function|load")}


def _guarded_calls(store: Any, run: RunKey) -> list[str | None]:
    """Identical calls, then others: the repeat rule trips and the breaker stays open."""
    reasons = []
    for i, sig in enumerate(["same", "same", "same", "same", "other", "third", "fourth"]):
        verdict = store.admit_tool(run, ToolRequest("search", sig, float(i), None, None), LIMITS)
        reasons.append(verdict.reason)
        if verdict.admitted:
            store.record_tool(run, ToolOutcome("search", sig, "the same answer", False, float(i)), LIMITS)
    return reasons


EXPECTED = _guarded_calls(MemoryStore(), RunKey("s", "a"))  # the verdicts every store must give
assert "loop" in EXPECTED


def _server(tmp_path: Path, *extra: str) -> PrivateRedis:
    server = PrivateRedis(redis_binary(), free_port(), str(tmp_path), extra)
    server.start()
    return server


def test_the_steps_run_as_functions_loaded_once_and_again_after_a_delete(tmp_path: Path) -> None:
    server = _server(tmp_path)
    try:
        store = RedisStore(server.url, **PATIENT)
        assert _guarded_calls(store, RunKey("s", "a")) == EXPECTED
        calls = _calls(server.url, store)
        assert calls["function|load"] == 1 and calls["fcall"] >= 7 and calls["evalsha"] == 0
        code, names = _library()
        library = code.split("name=", 1)[1].split("\n", 1)[0]
        client = redis.Redis.from_url(server.url)
        client.function_delete(library)  # an operator clears it: the next step loads it again and goes on
        assert _guarded_calls(store, RunKey("s", "b")) == EXPECTED
        assert _calls(server.url, store)["function|load"] == 2
        listed = repr(client.function_list())  # its shape differs between RESP2 and RESP3
        assert all(name in listed for name in names.values())
        client.close()
        store.close()
    finally:
        server.stop()


async def test_the_async_steps_call_the_same_functions(tmp_path: Path) -> None:
    server = _server(tmp_path)
    try:
        store = RedisStore(server.url, **PATIENT)
        run = RunKey("s", "async")
        for i in range(2):
            assert (await store.aadmit_tool(run, ToolRequest("search", "q", float(i), None, None), LIMITS)).admitted
            await store.arecord_tool(run, ToolOutcome("search", "q", "same", False, float(i)), LIMITS)
        assert (await store.aadmit_tool(run, ToolRequest("search", "q", 9.0, None, None), LIMITS)).reason == "loop"
        calls = _calls(server.url, store)
        assert calls["fcall"] >= 5 and calls["evalsha"] == 0
        await store.aclose()
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(("--rename-command", "FCALL", '""'), id="server-without-functions"),
        pytest.param((), id="user-not-allowed-functions"),
    ],
)
def test_without_functions_the_same_steps_run_as_scripts(tmp_path: Path, how: Any) -> None:
    server = _server(tmp_path, *how)
    url = server.url
    try:
        if not how:  # a user who may run scripts but not functions (as some managed services set it up)
            admin = redis.Redis.from_url(server.url)
            admin.acl_setuser("scripts", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-fcall"])
            admin.close()
            url = f"redis://scripts:pw@127.0.0.1:{server.port}/0"
        store = RedisStore(url, **PATIENT)
        assert _guarded_calls(store, RunKey("s", "a")) == EXPECTED
        assert _calls(server.url, store)["evalsha"] >= 7
        assert store._use_functions is False  # decided once: no FCALL is tried again
        before = _calls(server.url, store)
        assert _guarded_calls(store, RunKey("s", "b")) == EXPECTED
        assert _calls(server.url, store)["fcall"] == before["fcall"]
        store.close()
    finally:
        server.stop()


class RefusingProxy:
    """A RESP proxy in front of a server that refuses FCALL and FUNCTION with ``error``, as some proxies do
    (Envoy: "unsupported command"), and passes everything else on."""

    def __init__(self, port: int, error: bytes) -> None:
        self.upstream, self.error = port, error
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        inbound, answers = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                head = inbound.readline()
                if not head:
                    return
                raw, args = head, []
                for _ in range(int(head[1:-2])):
                    size = inbound.readline()
                    data = inbound.read(int(size[1:-2]) + 2)
                    raw += size + data
                    args.append(data[:-2].upper())
                if args[0] in (b"FCALL", b"FCALL_RO", b"FUNCTION"):
                    client.sendall(b"-" + self.error + b"\r\n")
                    continue
                upstream.sendall(raw)
                client.sendall(_reply(answers))
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def _reply(stream: Any) -> bytes:
    """One whole reply, RESP2 or RESP3 (redis-py may speak either)."""
    line = stream.readline()
    kind = line[:1]
    if kind in b"$=!":  # bulk strings
        size = int(line[1:-2])
        return line + (stream.read(size + 2) if size >= 0 else b"")
    if kind in b"*~>%|":  # arrays, sets, pushes, maps and attributes (two replies per entry)
        count = max(int(line[1:-2]), 0) * (2 if kind in b"%|" else 1)
        return line + b"".join(_reply(stream) for _ in range(count))
    return line


@pytest.mark.parametrize(
    ("error", "for_good"),
    [(b"ERR unsupported command 'fcall'", True), (b"ERR this proxy does not pass it on", False)],
    ids=["says-unsupported", "says-something-else"],
)
def test_a_proxy_that_refuses_functions_gets_the_same_steps_as_scripts(
    tmp_path: Path, error: bytes, for_good: bool
) -> None:
    server = _server(tmp_path)
    proxy = RefusingProxy(server.port, error)
    try:
        store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", **PATIENT)
        assert _guarded_calls(store, RunKey("s", "a")) == EXPECTED
        assert store._use_functions is False
        # Told plainly, scripts from now on; told anything else before a function ever answered, Functions are
        # tried again later (a passing refusal must not cost them for good).
        assert (store._functions_again == 0.0) is for_good
        assert _calls(server.url, store)["evalsha"] >= 7
        store.close()
    finally:
        proxy.close()
        server.stop()


def test_a_snapshot_reads_a_full_server(tmp_path: Path) -> None:
    # snapshot writes nothing, and is registered so: a server over its maxmemory (noeviction) still answers it.
    server = _server(tmp_path, "--maxmemory-policy", "noeviction")
    try:
        store, run = RedisStore(server.url, **PATIENT), RunKey("s", "full")
        assert store.admit_tool(run, ToolRequest("search", "q", 0.0, None, None), LIMITS).admitted
        client = redis.Redis.from_url(server.url)
        client.set("ballast", "x" * 2_000_000)
        client.config_set("maxmemory", "1mb")  # used memory is now over it: every write is refused
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("one-more", "x")
        assert store.snapshot(run).tool_calls == 1
        assert not store.admit_tool(run, ToolRequest("search", "q2", 1.0, None, None), LIMITS).admitted
        assert _calls(server.url, store)["evalsha"] == 0
        client.close()
        store.close()
    finally:
        server.stop()


def test_a_run_begun_by_a_release_before_window_versions_gets_a_start_of_its_own(tmp_path: Path) -> None:
    # Such a run's version is 0; counting from 0 would let a version held from an earlier run under the same keys
    # pass for this run's. The first step pushed gives it a start at Redis TIME, as a new run gets.
    server = _server(tmp_path)
    try:
        store, run = RedisStore(server.url, **PATIENT), RunKey("s", "legacy")
        assert store.admit_tool(run, ToolRequest("search", "q", 0.0, None, None), LIMITS).admitted
        client = redis.Redis.from_url(server.url)
        state_key = store.keys(run)[0]
        version = "return string.format('%d', ({cmsgpack.unpack(redis.call('HGET', KEYS[1], 'S'))})[21])"
        legacy = """local s = {cmsgpack.unpack(redis.call('HGET', KEYS[1], 'S'))}
            s[21] = 0
            redis.call('HSET', KEYS[1], 'S', cmsgpack.pack(unpack(s)))"""
        client.eval(legacy, 1, state_key)
        assert client.eval(version, 1, state_key) == b"0"
        store.record_tool(run, ToolOutcome("search", "q", "answer", False, 1.0), LIMITS)
        assert int(client.eval(version, 1, state_key)) > 10**15  # Redis TIME in µs, and one step
        client.close()
        store.close()
    finally:
        server.stop()
