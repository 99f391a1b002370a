"""The Redis store keeps the connections its checks used between calls (``stores/_idle.py``) instead of checking one
out of redis-py's pool for every call: a connection the server closed is never used again, a reply left unread
is never taken for the next command's, the client's own commands still find a connection in the pool, and a
forked child never writes to its parent's sockets."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import pytest

from loopguard_core.limits import Limits
from loopguard_core.stores.base import ModelRequest, RunKey

from .conftest import PATIENT, services_required

if not services_required():
    pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore

LIMITS = Limits(max_turns=100_000)


def model(store: RedisStore, run: RunKey) -> Any:
    return store.admit_model(run, ModelRequest(1, 0, 0.0), LIMITS)


def kept(store: RedisStore) -> list[Any]:
    return [connection for connection, _sock, _poller in store._idle._held]


def test_one_thread_checks_on_one_connection_taken_from_the_pool_once(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, **PATIENT)
    checkouts = []
    take = store._pool.get_connection
    store._pool.get_connection = lambda *a: checkouts.append(1) or take(*a)  # type: ignore[method-assign]
    run = RunKey(scope, "r")
    for _ in range(50):
        assert model(store, run).admitted
    assert len(checkouts) == 1
    assert len(kept(store)) == 1
    assert store.snapshot(run).turns == 50
    store.close()
    assert kept(store) == []


def test_a_connection_the_server_closed_is_not_used_again(redis_url: str, scope: str, redis_client: Any) -> None:
    # Redis restarted, its idle timeout or a proxy closed the connection: the next check connects again and is
    # answered, it is not taken for an outage (which failure_policy="closed" would refuse).
    store = RedisStore(redis_url, failure_policy="closed", outage_backoff_seconds=60, **PATIENT)
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    (connection,) = kept(store)
    host, port = connection._sock.getsockname()[:2]
    assert redis_client.client_kill(f"{host}:{port}")
    for _ in range(3):
        verdict = model(store, run)
        assert verdict.admitted, verdict.facts
    assert store.snapshot(run).turns == 4
    store.close()


class _Interrupted(BaseException):
    pass


def test_a_reply_left_unread_is_never_read_as_the_next_commands(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, **PATIENT)
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    (connection,) = kept(store)
    send = connection.send_packed_command

    def send_then_interrupt(*args: Any, **kwargs: Any) -> None:
        send(*args, **kwargs)
        connection.send_packed_command = send  # once
        raise _Interrupted  # after the command went out, before its reply is read

    connection.send_packed_command = send_then_interrupt
    with pytest.raises(_Interrupted):
        model(store, run)
    # Not kept, disconnected: a reply still on its way when the next check polled would be read as that check's.
    assert kept(store) == []
    assert connection._sock is None
    # The interrupted admission ran on the server; the next reads get their own replies, not its.
    snapshot = store.snapshot(run)
    assert snapshot.turns == 2
    assert model(store, run).turn == 3
    store.close()


def test_the_clients_own_commands_find_a_connection_after_a_burst(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, max_connections=2, pool_timeout=0.5, **PATIENT)
    run = RunKey(scope, "r")
    ready = threading.Barrier(2)
    done = []

    def check() -> None:
        ready.wait(5)
        for _ in range(200):
            done.append(model(store, run).admitted)

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert done == [True] * 400
    assert len(kept(store)) <= 1  # one connection of two stays in the pool
    store.ping()  # the client's own command (as a script or library load is): not left waiting for pool_timeout
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_never_uses_its_parents_connections(redis_url: str, scope: str) -> None:
    # The parent keeps checking while the child does: on a shared socket their replies would cross.
    store = RedisStore(redis_url, **PATIENT)
    run = RunKey(scope, "r")
    assert model(store, run).admitted
    (connection,) = kept(store)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_check_turns, args=(store, run))
    child.start()
    for _ in range(300):
        assert model(store, run).admitted
    child.join(60)
    assert child.exitcode == 0
    assert kept(store) == [connection]
    assert store.snapshot(run).turns == 601
    store.close()


def _check_turns(store: RedisStore, run: RunKey) -> None:
    ok = True
    for _ in range(300):
        verdict = model(store, run)
        ok = ok and verdict.admitted and "error" not in verdict.facts
    os._exit(0 if ok else 1)
