"""The Redis backend: standalone or Cluster, on redis-py's asyncio client (with hiredis).

URLs name the server and nothing else::

    redis://[user:password@]host[:port][/db]        plain TCP (meant for loopback)
    rediss://[user:password@]host[:port][/db]       TLS, certificate and host name verified
    redis+cluster://host:port[,host:port...]        a Redis Cluster (seed nodes; db is always 0)
    rediss+cluster://host:port[,host:port...]       the same over TLS
    redis+sentinel://host:port[,host:port...]/service[/db]   the primary of ``service``, found
                                                    through these sentinels (port 26379 default)
    rediss+sentinel://...                           the same, sentinels and data nodes over TLS

User name and password are percent-decoded; a query string is refused. Everything else is a typed
keyword argument of :class:`RedisBackend` (build the instance yourself and pass it as
``backend=``): ``password=`` (kept out of URLs and logs), ``ca_file=``, ``cert_file=``,
``key_file=``, ``verify_tls=``, ``timeout=``, ``connect_timeout=``, ``max_connections=``,
``auto_batch=``, ``max_batch=``, ``sentinel_username=``, ``sentinel_password=`` (the
sentinels' own credentials; user info in a sentinel URL is the data nodes'), or ``client=`` with
a ready ``redis.asyncio.Redis`` / ``RedisCluster`` built with ``decode_responses=False`` (its
owner closes it).

Nothing connects at construction; the first command does, on the running asyncio loop. Under trio
every operation raises :class:`~aiocache_secure.errors.ConfigurationError`: redis-py needs asyncio.

Security. Plain ``redis://`` to a host that is not loopback, or TLS with ``verify_tls=False``, emits
one ``insecure_config`` audit event (``ConfigurationError`` under ``strict=True``). Neither the
password nor the URL reaches a ``repr``, an exception message or a log line: driver exceptions
become ``BackendUnavailable("redis backend unreachable")`` (or ``BackendTimeout``, or
``BackendUnavailable("redis backend refused the command")`` for server-side errors such as an ACL
``NOPERM``) raised ``from`` the driver's exception. One map (:mod:`.errors`) does that conversion
around every driver call, Cluster and Sentinel discovery included.

Commands. ``set`` is ``SET key value PX ms`` (``ttl`` in float seconds, at least 1 ms);
``get_many`` is one ``MGET`` (on a cluster one ``MGET`` per hash slot, pipelined per node);
``set_many`` is one non-transactional pipeline; ``delete_prefix`` runs ``SCAN MATCH`` with the
prefix's glob metacharacters escaped and ``UNLINK``\\s each page, on every primary of a cluster
(never ``KEYS``, never ``FLUSHDB``); ``scan`` streams ``SCAN`` pages and ``MGET``\\s each one.

Automatic batching (``auto_batch=True``, the default). When nothing is in flight a ``get``/``set``
goes straight to the server, so a lone caller pays nothing. While a command is in flight, further
single ``get``/``set`` calls queue up and are sent together at the end of the current event-loop
tick (``loop.call_soon``) as one ``MGET`` or one pipeline, at most ``max_batch`` per round trip,
in arrival order. Each caller gets its own reply; a server error on one command fails only that
command's callers, a connection failure only that batch's; a cancelled caller is simply dropped.

Faults. Every operation finishes within ``timeout`` seconds (default 3) with a result,
``BackendTimeout`` or ``BackendUnavailable``; nothing is retried behind the caller's back, and a
later call reconnects, so service resumes as soon as the server is back. A caller cancelled
mid-command never leaves a connection one reply behind: a connection whose exchange did not
complete is disconnected before it returns to the pool (see :mod:`.wire`; redis-py, pinned
to ``>=5.0.3,<9`` in ``pyproject.toml``, also disconnects on cancellation in ``read_response``).

On a standalone server, commands bypass redis-py's client object and go straight to redis-py
connections in a pool of our own (:class:`.wire.Wire`); a cluster uses ``RedisCluster``.

The package, one concept per module: :mod:`.url` (URLs), :mod:`.errors` (the driver-error map),
:mod:`.connect` (options and clients to an engine factory), :mod:`.engines` (standalone and
Cluster behind one protocol), :mod:`.wire` (the standalone hot path), :mod:`.sentinel`,
:mod:`.batcher` (automatic batching), :mod:`.commands` and :mod:`.lease` (leases and
compare-and-set). This module is the :class:`RedisBackend` that holds them together.

Sentinel. The same wire, on redis-py's sentinel-managed connections: every new connection asks the
sentinels (``SENTINEL MASTERS``, first answering sentinel wins, ones that report the primary down
are skipped) for the primary's address, within the operation's deadline. When a connection finds
a new address, every older connection is dropped before its next command, and a primary demoted
to replica answers writes with ``READONLY``, which drops that connection too; so after a failover
service resumes on the promoted replica as soon as the sentinels name it.

Lease (distributed lock for stampede protection)::

    async with backend.lease(key, ttl=10.0, wait=2.0) as held:   # held: bool
        if held: ...compute and store...
    token = await backend.acquire_lease(key, ttl, wait=0.0)     # owner token, or None
    await backend.release_lease(key, token)                     # True if it was still ours

``acquire_lease`` is ``SET key token NX PX ttl`` with a random 128-bit token, retried until
``wait`` seconds have passed; ``release_lease`` deletes the key only if it still holds our token
(a compare-and-delete Lua script, run by ``EVALSHA``), so a holder whose lease expired cannot
release somebody else's. ``key`` is stored verbatim: pick one no cache entry uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster

from ...clock import Clock
from ...errors import ClosedError, ConfigurationError
from ...leases import hold_lease
from . import lease as _lease
from .batcher import GET, SET, Batcher, gather_ops
from .cluster_tracking import ClusterChannel
from .commands import escape_glob, px, set_command
from .connect import (
    EngineFactory,
    TrackingAddress,
    adopt,
    configure,
    open_channel,
    tracking_address,
)
from .engines import Engine
from .errors import driver_errors
from .tracking import InvalidationChannel
from .url import RedisAddress, parse_url

__all__ = ["RedisAddress", "RedisBackend", "escape_glob", "from_url", "parse_url"]


class RedisBackend:
    """``redis[s][+cluster|+sentinel]://``: a store shared by every namespace that names the
    same URL.

    Pass ``url`` or a ready ``client`` (not both). Options are keyword-only and validated here;
    nothing connects until the first command.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | RedisCluster | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        verify_tls: bool = True,
        timeout: float = 3.0,
        connect_timeout: float | None = None,
        max_connections: int = 64,
        auto_batch: bool = True,
        max_batch: int = 256,
        scan_count: int = 1000,
        strict: bool = False,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisBackend takes a url or a client, not both or neither")
        for name, number in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if number is not None and (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not 0 < number < math.inf
            ):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        for name, count in (
            ("max_connections", max_connections),
            ("max_batch", max_batch),
            ("scan_count", scan_count),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        for name, flag in (("verify_tls", verify_tls), ("auto_batch", auto_batch)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False")
        self._timeout = float(timeout)
        self._batching = auto_batch
        self._max_batch = max_batch
        self._scan_count = scan_count
        self._connect: EngineFactory
        self._tracking: TrackingAddress | None = None
        if client is not None:
            unused: tuple[object, ...] = (username, password, ca_file, cert_file, key_file)
            unused += (connect_timeout, sentinel_username, sentinel_password)
            if unused != (None,) * len(unused) or not verify_tls:
                raise ConfigurationError(
                    "connection options belong to the client you pass, not to RedisBackend"
                )
            self.kind, self.cluster, self._connect = adopt(
                client, max_connections=max_connections, timeout=self._timeout, strict=strict
            )
        else:
            assert url is not None  # noqa: S101 - checked above
            address = parse_url(url)
            self.kind, self.cluster = address.scheme, address.cluster
            reach: dict[str, Any] = {
                "username": username,
                "password": password,
                "files": (ca_file, cert_file, key_file),
                "verify_tls": verify_tls,
                "connect_timeout": self._timeout if connect_timeout is None else connect_timeout,
            }
            self._connect = configure(
                address,
                **reach,
                timeout=self._timeout,
                max_connections=max_connections,
                strict=strict,
                sentinel_auth=(sentinel_username, sentinel_password),
            )
            self._tracking = tracking_address(address, **reach)
        self._batcher: Batcher | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"RedisBackend(kind={self.kind!r}, auto_batch={self._batching}, closed={self._closed})"
        )

    def open_invalidation_channel(
        self, on_invalidate: Callable[[list[bytes] | None], None]
    ) -> InvalidationChannel | ClusterChannel:
        """A new channel reporting changes of this store's keys (:mod:`.tracking`), for a near
        cache; the caller closes it. ``ConfigurationError`` where there is none to open:
        through sentinels, or on a client passed in."""
        if self._tracking is None:
            raise ConfigurationError(
                "near_cache needs a redis://, rediss:// or redis+cluster:// URL "
                "(not sentinels, nor a client passed in)"
            )
        return open_channel(self._tracking, on_invalidate)

    def _bind(self) -> Batcher:
        """This event loop's engine and queue (connections belong to one loop: a backend used
        from a new loop starts afresh)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "the redis backend needs asyncio (redis-py is asyncio-only); it cannot run "
                "under trio"
            ) from None
        batcher = self._batcher
        if batcher is not None and batcher.loop is loop:
            return batcher
        if self._closed:
            raise ClosedError("the redis backend is closed")
        batcher = Batcher(self._connect(), loop, enabled=self._batching, max_batch=self._max_batch)
        self._batcher = batcher
        return batcher

    # -- single-key operations, batched when concurrent ------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        batcher = self._bind()
        if batcher.enabled and (batcher.busy or batcher.queue):
            result: bytes | None = await batcher.enqueue(GET, key, None, None)
            return result
        batcher.busy += 1
        try:
            value: bytes | None = await batcher.engine.command("GET", key)
            return value
        finally:
            batcher.busy -= 1

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        ttl_px = px(ttl)
        batcher = self._bind()
        if batcher.enabled and (batcher.busy or batcher.queue):
            await batcher.enqueue(SET, key, value, ttl_px)
            return
        batcher.busy += 1
        try:
            await batcher.engine.command(*set_command(key, value, ttl_px))
        finally:
            batcher.busy -= 1

    # -- batches --------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        batcher = self._bind()
        if not keys:
            return []
        engine = batcher.engine
        if (
            engine.merge_gets
            and batcher.enabled
            and (batcher.busy or batcher.queue)
            and len(keys) <= batcher.max_batch
        ):
            # Concurrent with other reads: ride in their round trip (its MGET runs).
            return await gather_ops([batcher.enqueue(GET, key, None, None) for key in keys])
        batcher.busy += 1
        try:
            return await engine.mget(keys)
        finally:
            batcher.busy -= 1

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        ttl_px = px(ttl)
        batcher = self._bind()
        if items:
            await batcher.engine.pipeline([set_command(key, value, ttl_px) for key, value in items])

    async def delete(self, key: bytes) -> bool:
        return bool(await self._bind().engine.command("UNLINK", key))

    # -- namespaces: clear and export -------------------------------------------------------------

    async def _pages(self, engine: Engine, prefix: bytes) -> AsyncIterator[list[bytes]]:
        """SCAN pages of keys starting with ``prefix``, on every primary of a cluster."""
        async for page in engine.pages(escape_glob(prefix) + b"*", self._scan_count):
            keys = [k for k in page if k.startswith(prefix)]
            if keys:
                yield keys

    async def delete_prefix(self, prefix: bytes) -> int:
        engine = self._bind().engine
        removed = 0
        async for keys in self._pages(engine, prefix):
            removed += await engine.unlink(keys)
        return removed

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        engine = self._bind().engine
        seen: set[bytes] = set()  # SCAN may return a key twice while the table rehashes
        async for page in self._pages(engine, prefix):
            keys = [k for k in page if k not in seen]
            if not keys:
                continue
            seen.update(keys)
            values = await self.get_many(keys)
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    yield key, value

    # -- lease ------------------------------------------------------------------------------------

    async def acquire_lease(self, key: bytes, ttl: float, *, wait: float = 0.0) -> bytes | None:
        """Take the lease ``key`` for ``ttl`` seconds: the owner token, or None after ``wait``."""
        lease_px = _lease.check_lease(ttl, wait)
        return await _lease.acquire(self._bind().engine, key, lease_px, wait)

    async def release_lease(self, key: bytes, token: bytes) -> bool:
        """Release the lease ``key`` if ``token`` still owns it (compare-and-delete)."""
        return await _lease.release(self._bind().engine, key, token)

    def lease(
        self, key: bytes, ttl: float, wait: float = 0.0
    ) -> contextlib.AbstractAsyncContextManager[bool]:
        """``async with backend.lease(key, ttl, wait) as held``: released on exit if held."""
        return hold_lease(self, key, ttl, wait)

    # -- atomic updates (AtomicBackend) -----------------------------------------------------------

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        """``SET key value NX [PX ms]``."""
        ttl_px = px(ttl)
        engine = self._bind().engine
        tail = () if ttl_px is None else ("PX", ttl_px)
        return bool(await engine.command("SET", key, value, "NX", *tail))

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The value and its SHA-1 (what :meth:`compare_and_set` compares on the server)."""
        value = await self.get(key)
        if value is None:
            return None
        return value, _lease.version(value)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        """Replace ``key`` only while it still holds the value ``token`` was read from (Lua)."""
        ttl_px = px(ttl)
        return await _lease.compare_and_set(self._bind().engine, key, token, value, ttl_px)

    # -- lifecycle --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        batcher, self._batcher = self._batcher, None
        if batcher is None:
            return  # nothing was ever opened
        batcher.shut()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # trio: nothing can have been opened
            return
        if batcher.loop is not running:
            return  # nothing was opened on this loop (or it is gone with its connections)
        await batcher.drain(self._timeout)
        with driver_errors:
            async with asyncio.timeout(self._timeout):
                await batcher.engine.aclose()


def from_url(
    url: str,
    *,
    clock: Clock,
    strict: bool,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    on_evict: Callable[[int], None] | None = None,
) -> RedisBackend:
    """The factory :func:`aiocache_secure.backends.open_backend` calls (Redis keeps time itself)."""
    if max_entries is not None or max_bytes is not None:
        raise ConfigurationError("bound a redis store with its own maxmemory policy")
    return RedisBackend(url, strict=strict)
