"""Sentinel: the standalone wire on redis-py's sentinel-managed connections.

Every new connection asks the sentinels (``SENTINEL MASTERS``, first answering sentinel wins, ones
that report the primary down are skipped) for the primary's address, within the operation's
deadline. When a connection finds a new address, every older connection is dropped before its
next command, and a primary demoted to replica answers writes with ``READONLY``, which drops that
connection too; so after a failover service resumes on the promoted replica as soon as the
sentinels name it. Discovery runs inside the wire's exchange, so the one error map of
:mod:`.errors` covers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from .url import RedisAddress
from .wire import Wire

__all__ = ["sentinel_wire"]


class _SentinelPool(SentinelConnectionPool):
    """Counts changes of the primary's address, so connections to an older one are dropped."""

    generation = 0

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and address != before:
            self.generation += 1
        return address


class _SentinelConnection(SentinelManagedConnection):
    generation = -1

    async def connect_to(self, address: Any) -> None:
        # Found by this connection's own discovery, so current (the handshake sends commands).
        self.generation = self.connection_pool.generation
        await super().connect_to(address)  # type: ignore[no-untyped-call]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.generation != self.connection_pool.generation:
            await self.disconnect()
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SentinelManagedSSLConnection):
    pass


class _SentinelWire(Wire):
    """The standalone wire on sentinel-managed connections; closing it closes the sentinels."""

    __slots__ = ("_sentinel",)

    def __init__(self, sentinel: Sentinel, pool: _SentinelPool, *, limit: int, timeout: float):
        # The connections hold the pool by weak reference: the closure keeps it alive.
        super().__init__(
            lambda: pool.connection_class(**pool.connection_kwargs), limit=limit, timeout=timeout
        )
        self._sentinel = sentinel

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._sentinel.aclose()


def sentinel_wire(
    address: RedisAddress,
    options: dict[str, Any],
    auth: tuple[str | None, str | None],
    *,
    timeout: float,
) -> Callable[[], Wire]:
    limit = options.pop("max_connections")
    tls = {k: v for k, v in options.items() if k.startswith("ssl_")}
    sentinel_options: dict[str, Any] = {
        "username": auth[0],
        "password": auth[1],
        "socket_timeout": timeout,
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
        **({"ssl": True, **tls} if address.tls else {}),
    }
    options.update(db=address.db, retry=Retry(NoBackoff(), 0), socket_timeout=None)
    connection_class = _SentinelSSLConnection if address.tls else _SentinelConnection
    service = address.service

    def connect() -> Wire:
        sentinel = Sentinel(list(address.nodes), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        pool = _SentinelPool(service, sentinel, connection_class=connection_class, **options)  # type: ignore[no-untyped-call]
        return _SentinelWire(sentinel, pool, limit=limit, timeout=timeout)

    return connect
