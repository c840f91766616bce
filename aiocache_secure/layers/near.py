"""The near cache: hot entries of a Redis store served from process memory, with no round trip,
kept coherent by the store's invalidation channel (:mod:`aiocache_secure.backends.redis.tracking`).

The layer sits directly above the store, below encryption: what it keeps are the sealed
envelopes exactly as the store holds them, under their storage keys, which are the names Redis
reports when they change. Above it, the encryption layer still authenticates what it returns
(through the verified-read memo, so a near hit costs a memo hit, not a decryption), and the
facade still checks expiry on every read.

Coherence, and what it rests on:

* An envelope is served from memory only while the channel is up and the server has confirmed
  tracking the namespace's prefix (``channel.tracks(prefix)``). Until then, and whenever the
  channel is down, every read goes to the store. When the channel goes down (a reset, a
  restart, a silent connection found by its health check, a failover), everything kept is
  dropped at once.
* Any change by any client to a key under the prefix (set, delete, expiry, eviction, ``clear``,
  ``erase``, a rotation's rewrite, a flush) is reported, and the report drops the entry.
* A read fills memory only if nothing could have changed the key while it was in flight: no
  report for that key (or a flush) arrived since it started, and the channel stayed up under
  the same epoch. A report racing the read's reply can therefore not leave the old envelope in.
* This process's own writes drop the entry before and after the write, so a read after a write
  returns never sees the old envelope (the store's report of that write only confirms it).

So once a report has arrived, no process serves the old value; the delay between a write
returning elsewhere and its report arriving is the bound (on loopback a fraction of a
millisecond; ``tests/test_near_cache.py`` measures it), plus, if the connection silently dies,
the channel's health bound (by default 2 s) before everything is dropped.

Memory is bounded by ``limit`` bytes per store (LRU). Decrypted values never live here; they
live in the verified-read memo, as without a near cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from ..backend import Backend
from .base import Layer

__all__ = ["DEFAULT_NEAR_CACHE_BYTES", "NearCache", "NearStore"]

DEFAULT_NEAR_CACHE_BYTES = 32 * 2**20
ENTRY_OVERHEAD = 120
"""Dict slot and bytes object headers of one entry, roughly, on 64-bit CPython."""


class Channel(Protocol):
    epoch: int

    def tracks(self, prefix: bytes) -> bool: ...

    async def add_prefix(self, prefix: bytes) -> None: ...

    async def aclose(self) -> None: ...


class NearStore:
    """The envelopes kept for one store, shared by its near-cache namespaces."""

    __slots__ = (
        "_channel",
        "_entries",
        "_flushed",
        "_inflight",
        "_last_change",
        "_size",
        "_starting",
        "_tick",
        "limit",
    )

    def __init__(self, limit: int = DEFAULT_NEAR_CACHE_BYTES) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("near_cache_bytes must be a positive int")
        self.limit = limit
        self._channel: Channel | None = None
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()  # least recently used first
        self._size = 0
        # Reports counted as they arrive; a fill started at tick t is refused if its key was
        # reported (or everything flushed) at a later tick. Only keys with reads in flight are
        # remembered, so this stays as small as the reads in flight.
        self._tick = 0
        self._flushed = 0
        self._inflight: dict[bytes, int] = {}
        self._last_change: dict[bytes, int] = {}
        self._starting: dict[bytes, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"NearStore(entries={len(self._entries)}, bytes={self._size}, limit={self.limit})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._size

    def attach(self, channel: Channel) -> None:
        self._channel = channel

    # -- reports from the channel ----------------------------------------------------------------

    def on_invalidate(self, keys: list[bytes] | None) -> None:
        self._tick += 1
        if keys is None:
            self._flushed = self._tick
            self._entries.clear()
            self._size = 0
            return
        for key in keys:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        value = self._entries.pop(key, None)
        if value is not None:
            self._size -= len(key) + len(value) + ENTRY_OVERHEAD
        if key in self._inflight:
            self._last_change[key] = self._tick

    def drop(self, key: bytes) -> None:
        """Forget ``key`` now (a write of this process's): as if its report had arrived."""
        self._tick += 1
        self._drop(key)

    def drop_prefix(self, prefix: bytes) -> None:
        self._tick += 1
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self._drop(key)
        for key in self._inflight:
            if key.startswith(prefix):
                self._last_change[key] = self._tick

    # -- reads -----------------------------------------------------------------------------------

    def serving(self, prefix: bytes) -> bool:
        channel = self._channel
        if channel is not None and channel.tracks(prefix):
            return True
        if channel is not None and prefix not in self._starting:
            # Start tracking in the background; reads go to the store until it is confirmed
            # (and again after the channel is lost, until it is back).
            task = asyncio.get_running_loop().create_task(self._track(channel, prefix))
            self._starting[prefix] = task
        return False

    async def _track(self, channel: Channel, prefix: bytes) -> None:
        try:
            await channel.add_prefix(prefix)
        except Exception:  # noqa: S110 - retried on a later read; reads go to the store meanwhile
            pass
        finally:
            self._starting.pop(prefix, None)

    def held(self, prefix: bytes) -> OrderedDict[bytes, bytes] | None:
        """The envelopes kept, least recently used first, if entries under ``prefix`` may be
        served now (see :meth:`NearCache.held`)."""
        return self._entries if self.serving(prefix) else None

    def lookup(self, key: bytes) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def begin(self, key: bytes) -> tuple[int, int]:
        """A read of ``key`` starts: the token its fill must present."""
        self._inflight[key] = self._inflight.get(key, 0) + 1
        channel = self._channel
        return self._tick, -1 if channel is None else channel.epoch

    def end(self, key: bytes, token: tuple[int, int], value: bytes | None, prefix: bytes) -> None:
        """A read of ``key`` ended with ``value`` (None: a miss or a failure): keep it if no
        change could have happened while it was in flight."""
        count = self._inflight[key] - 1
        changed = self._last_change.get(key, -1)
        if count:
            self._inflight[key] = count
        else:
            del self._inflight[key]
            self._last_change.pop(key, None)
        started, epoch = token
        channel = self._channel
        if (
            value is None
            or changed > started
            or self._flushed > started
            or channel is None
            or channel.epoch != epoch
            or not channel.tracks(prefix)
        ):
            return
        self._keep(key, value)

    def _keep(self, key: bytes, value: bytes) -> None:
        size = len(key) + len(value) + ENTRY_OVERHEAD
        if size > self.limit // 16:
            return
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._size -= len(key) + len(old) + ENTRY_OVERHEAD
        entries[key] = value
        self._size += size
        while self._size > self.limit:
            oldest, dropped = entries.popitem(last=False)
            self._size -= len(oldest) + len(dropped) + ENTRY_OVERHEAD

    async def aclose(self) -> None:
        for task in list(self._starting.values()):
            task.cancel()
        self._starting.clear()
        channel, self._channel = self._channel, None
        self._entries.clear()
        self._size = 0
        if channel is not None:
            await channel.aclose()


class NearCache(Layer):
    """A namespace's share of its store's :class:`NearStore` (see the module docstring)."""

    __slots__ = ("_near", "_on_hit", "_prefix")

    def __init__(
        self, inner: Backend, *, near: NearStore, prefix: bytes, on_hit: Callable[[int], None]
    ) -> None:
        super().__init__(inner)
        self._near = near
        self._prefix = prefix
        self._on_hit = on_hit

    def held(self) -> OrderedDict[bytes, bytes] | None:
        """The envelopes kept (storage key → envelope, least recently used first) while they may
        be served, else None. For :class:`~.verified.VerifiedReads`, which serves a memo entry
        whose envelope is the one kept here without calling this layer; it moves what it serves
        to the end, and counts it with :meth:`served`."""
        return self._near.held(self._prefix)

    def served(self, count: int) -> None:
        self._on_hit(count)

    async def get(self, key: bytes) -> bytes | None:
        near, prefix = self._near, self._prefix
        if not near.serving(prefix):
            return await self.inner.get(key)
        value = near.lookup(key)
        if value is not None:
            self._on_hit(1)
            return value
        token = near.begin(key)
        value = None
        try:
            value = await self.inner.get(key)
        finally:
            near.end(key, token, value, prefix)
        return value

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        near, prefix = self._near, self._prefix
        if not near.serving(prefix):
            return await self.inner.get_many(keys)
        lookup = near.lookup
        out = [lookup(key) for key in keys]
        missing = [i for i, value in enumerate(out) if value is None]
        if len(missing) < len(out):
            self._on_hit(len(out) - len(missing))
        if not missing:
            return out
        wanted = [keys[i] for i in missing]
        tokens = [near.begin(key) for key in wanted]
        found: list[bytes | None] = [None] * len(wanted)
        try:
            found = await self.inner.get_many(wanted)
        finally:
            for key, token, value in zip(wanted, tokens, found, strict=True):
                near.end(key, token, value, prefix)
        for index, value in zip(missing, found, strict=True):
            out[index] = value
        return out

    @contextlib.contextmanager
    def _writing(self, keys: Iterable[bytes]) -> Iterator[None]:
        """Around a write: its keys are dropped before it is sent and again once it has returned
        or failed, so no read racing it can leave the old envelope in (see the module doc)."""
        drop = self._near.drop
        keys = list(keys)
        for key in keys:
            drop(key)
        try:
            yield
        finally:
            for key in keys:
                drop(key)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        with self._writing((key,)):
            await self.inner.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        with self._writing(key for key, _ in items):
            await self.inner.set_many(items, ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        with self._writing((key,)):
            return await self.inner.delete(key)

    async def delete_prefix(self, prefix: bytes) -> int:
        near = self._near
        near.drop_prefix(prefix)
        try:
            return await self.inner.delete_prefix(prefix)
        finally:
            near.drop_prefix(prefix)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        with self._writing((key,)):
            return await super().add(key, value, ttl=ttl)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        with self._writing((key,)):
            return await super().compare_and_set(key, token, value, ttl=ttl)
