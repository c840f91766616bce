"""The standalone Redis hot path: commands written straight to redis-py connections.

redis-py's client wraps every command in pool locks, retry callbacks and observability hooks that
cost as much as the round trip itself on a local server. :class:`Wire` keeps its own small pool of
redis-py ``Connection`` objects (same handshake, TLS, AUTH and hiredis parser) and sends a list of
commands as one write, then reads one reply per command. Error replies (``ResponseError``, e.g. an
ACL ``NOPERM``) come back in place of the reply, so one refused command fails only its caller.

Safety: a connection whose exchange did not finish (timeout, reset, a caller's cancellation
between write and last read) is disconnected before it returns to the pool — redis-py does this
inside ``read_response`` and we do it again on any exception — so no connection is ever reused
one reply behind. One deadline (``timeout``) covers a whole exchange: waiting for a connection,
connecting, writing and reading every reply. The connections themselves carry no socket timeout,
which would cost a task per write and a timer per read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

try:  # hiredis packs commands in C, four times faster than redis-py's Python packer
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    _pack = None  # type: ignore[assignment]

__all__ = ["MAX_CONNECTING", "Wire"]

Command = tuple[Any, ...]

MAX_CONNECTING = 4
"""Connections opened at once. A burst of callers finding no idle connection waits for one of
these (or one freed) instead of starting a handshake each: fifty TLS handshakes at once cost
more than the deadline on a slow CPU, and far more than the few connections the burst needs."""


class Wire:
    __slots__ = (
        "_all",
        "_closed",
        "_connecting",
        "_idle",
        "_limit",
        "_make",
        "_timeout",
        "_waiters",
    )

    def __init__(
        self, make: Callable[[], AbstractConnection], *, limit: int, timeout: float
    ) -> None:
        self._make = make
        self._limit = limit
        self._timeout = timeout
        self._idle: list[AbstractConnection] = []
        self._all: set[AbstractConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._connecting = 0
        self._closed = False

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        """One reply per command, in order; an error reply is returned as its exception."""
        async with asyncio.timeout(self._timeout):
            conn = self._idle.pop() if self._idle else await self._acquire()
            try:
                if not conn.is_connected:
                    self._connecting += 1
                    try:
                        await conn.connect()  # type: ignore[no-untyped-call]
                    finally:
                        self._connecting -= 1
                        self._wake_one()
                packed: bytes | list[bytes]
                if _pack is not None:
                    packed = b"".join(map(_pack, commands))
                elif len(commands) == 1:
                    packed = conn.pack_command(*commands[0])
                else:
                    packed = conn.pack_commands(commands)
                await conn.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                if conn.is_connected:
                    await conn.disconnect(nowait=True)
                raise
            finally:
                self._release(conn)

    async def _acquire(self) -> AbstractConnection:
        while len(self._all) >= self._limit or (self._connecting >= MAX_CONNECTING and self._all):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise
            finally:
                waiter.cancel()
            if self._idle:
                return self._idle.pop()
        conn = self._make()
        self._all.add(conn)
        return conn

    def _release(self, conn: AbstractConnection) -> None:
        if conn.is_connected and not self._closed:
            self._idle.append(conn)
        else:
            self._all.discard(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def aclose(self) -> None:
        self._closed = True
        conns, self._idle = list(self._all), []
        self._all.clear()
        for conn in conns:
            await conn.disconnect()
