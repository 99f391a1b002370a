"""The Redis store's idle connections: taken from redis-py's pool once, kept between calls.

A check-out from redis-py's pool costs a guarded call more than the rest of its client work: the pool's queue and
locks, and its test that the connection has nothing to read (three system calls). The store's direct path keeps
the connections it used instead, and runs the test that matters here with one ``poll()``: a connection the server
closed (restart, ``timeout``, a proxy) or that holds anything unread is disconnected and handed back to the pool,
which connects it again. A connection comes back here only with its reply read whole (the caller's duty); a reply
left unread (an interrupt between send and read) would otherwise be taken for the next command's.

At most ``limit`` connections wait here: the client's own commands (script and library loads, ping) go through the
pool and must find one there once the checks have finished. Where ``select.poll`` does not exist (Windows) nothing
is kept and every call checks out from the pool, as redis-py does.
"""

from __future__ import annotations

import select
from typing import Any

__all__ = ["IdleConnections"]

_POLL = getattr(select, "poll", None)
_ANY_EVENT = select.POLLIN | select.POLLPRI if _POLL is not None else 0


class IdleConnections:
    """Connections of one pool between calls, newest last, each with its socket and a poller on it."""

    __slots__ = ("_held", "_limit", "_pool")

    def __init__(self, pool: Any, limit: int) -> None:
        self._pool = pool
        self._limit = limit if _POLL is not None else 0
        self._held: list[tuple[Any, Any, Any]] = []

    def take(self, *conn_args: str) -> tuple[Any, Any, Any]:
        """A connection with nothing to read (its socket and poller, None for one fresh from the pool)."""
        held = self._held
        while held:
            try:
                entry = held.pop()
            except IndexError:  # another thread took the last one
                break
            connection, sock, poller = entry
            if connection._sock is sock and not poller.poll(0):  # POLLHUP and POLLERR are always reported
                return entry
            self.drop(connection)
        return self._pool.get_connection(*conn_args), None, None

    def keep(self, connection: Any, sock: Any, poller: Any) -> None:
        """Back from a call whose reply was read whole: kept, or returned to the pool when enough are kept."""
        if len(self._held) >= self._limit:
            self._pool.release(connection)
            return
        current = connection._sock
        if current is None:  # disconnected on the way
            self._pool.release(connection)
            return
        if current is not sock or poller is None:
            assert _POLL is not None
            poller = _POLL()
            poller.register(current, _ANY_EVENT)
        self._held.append((connection, current, poller))

    def drop(self, connection: Any) -> None:
        """Back from a call that failed or was interrupted (its reply may be unread), or found not quiet: disconnected,
        to the pool."""
        try:
            connection.disconnect()
        finally:
            self._pool.release(connection)

    def release_all(self) -> None:
        """Every kept connection back to the pool (the store is closing)."""
        held, self._held = self._held, []
        for connection, _sock, _poller in held:
            self._pool.release(connection)

    def forget(self) -> None:
        """In a forked child: the parent's connections (their sockets are shared with it) are never used here."""
        self._held = []
