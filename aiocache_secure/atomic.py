"""Atomic updates of one namespace's entries, on stores implementing ``AtomicBackend``.

``add`` (store if absent), ``incr`` (a bounded compare-and-set loop on the stored, possibly
encrypted, entry; ``ContentionError`` beyond it) and ``expire``/``touch`` (re-seal with a new
authenticated expiry). Layers map keys and transform values but pass the version token through,
so encrypted namespaces compare-and-set on the ciphertext they read. Within one process, ``incr``
and ``expire`` of one key queue behind a per-key lock (:meth:`AtomicUpdates._one_updater`), so
only other processes can make a compare-and-set fail. A store without atomic operations raises
``UnsupportedOperation``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import anyio

from . import frame
from .errors import BackendError, ContentionError
from .facade import CacheCore
from .policy import Seconds
from .tags import Pending

__all__ = ["AtomicUpdates"]

_CAS_RETRIES: Final = 64


async def _backoff(attempt: int) -> None:
    """Jittered exponential pause after a lost compare-and-set race (at most 50 ms)."""
    await anyio.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.05)))  # noqa: S311


class AtomicUpdates(CacheCore):
    """The atomic operations of :class:`~aiocache_secure.cache.Cache`."""

    __slots__ = ()

    async def add(
        self, key: str, value: Any, ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> bool:
        """Store ``value`` only if ``key`` has no live entry; returns whether it was stored.

        ``tags`` as for :meth:`~aiocache_secure.cache.Cache.set`; an entry a tag invalidated is
        not live.
        """
        raw = self._key(key)
        refs = await self._tag_refs(tags) if tags else b""
        if refs is None:
            return False
        data, seconds = self._frame(raw, value, ttl, refs)
        if self._pending() and not await self._ready():
            return False
        try:
            for _ in range(_CAS_RETRIES):
                if await self._atomic.add(raw, data, ttl=seconds):
                    self.stats.sets += 1
                    return True
                found = await self._versioned(raw)
                if found is not None:
                    return False
                # Only a dead (expired or unreadable) entry stood in the way: replace it.
                current = await self._atomic.get_versioned(raw)
                if current is None:
                    continue
                if await self._atomic.compare_and_set(raw, current[1], data, ttl=seconds):
                    self.stats.sets += 1
                    return True
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        raise ContentionError("add() lost its race too many times")

    async def incr(self, key: str, delta: int = 1, ttl: Seconds | None = None) -> int:
        """Add ``delta`` to the integer under ``key`` (created at ``delta``); the new value.

        ``ttl`` applies when the counter is created; an existing counter keeps its expiry.
        Atomic on every backend with ``AtomicBackend`` support: a compare-and-set loop on the
        stored (possibly encrypted) entry, retried a bounded number of times.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("incr delta must be an int")
        raw = self._key(key)
        if self._pending():
            await self._run_prepare()
        async with self._one_updater(raw):
            for attempt in range(_CAS_RETRIES):
                found = await self._versioned(raw)
                if found is None:
                    data, seconds = self._frame(raw, delta, ttl)
                    if await self._atomic.add(raw, data, ttl=seconds):
                        self.stats.sets += 1
                        return delta
                    continue
                (value, expires_ms, refs), token = found
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError("incr needs the stored value to be an int")
                new = value + delta
                data, seconds = self._refresh(raw, new, expires_ms, refs)
                if await self._atomic.compare_and_set(raw, token, data, ttl=seconds):
                    self.stats.sets += 1
                    return new
                await _backoff(attempt)
        raise ContentionError("incr() lost its race too many times")

    async def expire(self, key: str, ttl: Seconds | None) -> bool:
        """Give a live entry a new lifetime (``None``: the namespace default); False on a miss.

        On encrypted namespaces this re-seals the entry: the expiry is authenticated.
        """
        raw = self._key(key)
        seconds = self.policy.resolve_ttl(ttl)
        if self._pending():
            await self._run_prepare()
        try:
            async with self._one_updater(raw):
                for attempt in range(_CAS_RETRIES):
                    found = await self._versioned(raw)
                    if found is None:
                        return False
                    (value, _, refs), token = found
                    payload = self._serializer.dumps(value)
                    expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
                    data = frame.pack(expires, raw if self._embed else b"", payload, refs)
                    if await self._atomic.compare_and_set(raw, token, data, ttl=seconds):
                        return True
                    await _backoff(attempt)
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        raise ContentionError("expire() lost its race too many times")

    async def touch(self, key: str) -> bool:
        """Re-arm ``key`` with the namespace's default lifetime."""
        return await self.expire(key, None)

    @contextlib.asynccontextmanager
    async def _one_updater(self, raw: bytes) -> AsyncIterator[None]:
        """Queue this process's read-modify-write updates of one key behind each other.

        Compare-and-set keeps updates atomic across processes; inside one, callers that would
        only make each other retry wait their turn instead (20 tasks racing one counter could
        otherwise starve one of them past the retry bound).
        """
        entry = self._updating.get(raw)
        if entry is None:
            entry = self._updating[raw] = (anyio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._updating[raw]

    async def _versioned(self, raw: bytes) -> tuple[tuple[Any, int, bytes], bytes] | None:
        """``((value, expires_ms, tag refs), token)`` of a live entry, else None (dead ones
        discarded)."""
        found = await self._atomic.get_versioned(raw)
        if found is None:
            return None
        data, token = found
        ok, value = self._open_frame(raw, data)
        refs = b""
        if value.__class__ is Pending:
            refs = value.refs
            ok, value = await self._tags.check(value)
        if not ok:
            await self._discard(raw, value)
            return None
        return (value, frame.read_expiry(data), refs), token

    def _refresh(
        self, raw: bytes, value: Any, expires_ms: int, refs: bytes = b""
    ) -> tuple[bytes, float | None]:
        payload = self._serializer.dumps(value)
        seconds = None if not expires_ms else max(expires_ms / 1000 - self._clock(), 0.001)
        return frame.pack(expires_ms, raw if self._embed else b"", payload, refs), seconds
