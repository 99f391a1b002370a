"""The steps as Redis Functions: the store's own client on one server loads the library once and calls it; an
operator deleting it is survived; a server without Functions (or a user not allowed them) runs the same steps
as scripts. Each case runs on a redis-server of its own."""

from __future__ import annotations

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
