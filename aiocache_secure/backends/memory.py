"""The in-memory backend: an LRU dictionary with bounded entries and bytes, and expiry.

Each entry is charged ``len(key) + len(value) + ENTRY_OVERHEAD`` bytes against ``max_bytes``;
``ENTRY_OVERHEAD`` approximates CPython's cost of the dict slot, the entry tuple and two bytes
objects' headers, so the limit tracks real memory rather than payload alone.

Expiry is lazy (an expired entry is a miss and is dropped when read) and active (every write pops
already-expired entries off a min-heap of deadlines), so memory held by expired entries is
reclaimed even if they are never read again. All operations run without awaiting, so each is
atomic with respect to other tasks under asyncio and trio alike; no lock is needed.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from ..clock import Clock, system_clock
from ..errors import ConfigurationError

__all__ = ["ENTRY_OVERHEAD", "MemoryBackend"]

ENTRY_OVERHEAD: Final = 160
_NEVER: Final = math.inf


class MemoryBackend:
    """``memory://``: a process-local store. Values are the bytes the layers above produce."""

    __slots__ = (
        "_bytes",
        "_clock",
        "_data",
        "_heap",
        "_max_bytes",
        "_max_entries",
        "_on_evict",
        "evictions",
    )

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        clock: Clock = system_clock,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        for name, limit in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
            ):
                raise ConfigurationError(f"{name} must be a positive int or None")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._on_evict = on_evict
        self._data: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._heap: list[tuple[float, bytes]] = []
        self._bytes = 0
        self.evictions = 0

    def __repr__(self) -> str:
        return f"MemoryBackend(entries={len(self._data)}, bytes={self._bytes})"

    def __len__(self) -> int:
        return len(self._data)

    @property
    def used_bytes(self) -> int:
        """Bytes charged against ``max_bytes`` (payloads plus per-entry overhead)."""
        return self._bytes

    @property
    def evicts(self) -> bool:
        """True when ``max_entries``/``max_bytes`` may drop live entries to make room."""
        return self._max_entries is not None or self._max_bytes is not None

    def _lookup(self, key: bytes) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return value

    def _remove(self, key: bytes) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(key) + len(entry[0]) + ENTRY_OVERHEAD
        return True

    def _store(self, key: bytes, value: bytes, ttl: float | None, now: float) -> None:
        cost = len(key) + len(value) + ENTRY_OVERHEAD
        if self._max_bytes is not None and cost > self._max_bytes:
            # An entry that can never fit is dropped rather than flushing the whole store for it.
            self._remove(key)
            self._count_evictions(1)
            return
        self._remove(key)
        expires = _NEVER if ttl is None else now + ttl
        self._data[key] = (value, expires)
        self._bytes += cost
        if ttl is not None:
            heapq.heappush(self._heap, (expires, key))

    def _expire_and_evict(self, now: float) -> None:
        heap, data = self._heap, self._data
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry[1] == expires:
                self._remove(key)
        if len(heap) > 2 * len(data) + 64:
            self._heap = [(e, k) for k, (_, e) in data.items() if e != _NEVER]
            heapq.heapify(self._heap)
        evicted = 0
        max_entries, max_bytes = self._max_entries, self._max_bytes
        while data and (
            (max_entries is not None and len(data) > max_entries)
            or (max_bytes is not None and self._bytes > max_bytes)
        ):
            self._remove(next(iter(data)))
            evicted += 1
        if evicted:
            self._count_evictions(evicted)

    def _count_evictions(self, count: int) -> None:
        self.evictions += count
        if self._on_evict is not None:
            self._on_evict(count)

    async def get(self, key: bytes) -> bytes | None:
        return self._lookup(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self._lookup(key) for key in keys]

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        now = self._clock()
        self._store(key, value, ttl, now)
        self._expire_and_evict(now)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        now = self._clock()
        for key, value in items:
            self._store(key, value, ttl, now)
        self._expire_and_evict(now)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        if self._lookup(key) is not None:
            return False
        now = self._clock()
        self._store(key, value, ttl, now)
        self._expire_and_evict(now)
        return True

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        value = self._lookup(key)
        return None if value is None else (value, value)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        current = self._lookup(key)
        if current is None or (current is not token and current != token):
            return False
        now = self._clock()
        self._store(key, value, ttl, now)
        self._expire_and_evict(now)
        return True

    async def delete(self, key: bytes) -> bool:
        return self._remove(key)

    async def delete_prefix(self, prefix: bytes) -> int:
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        # A snapshot of the keys: writers may run between yields without breaking iteration.
        for key in [k for k in self._data if k.startswith(prefix)]:
            entry = self._data.get(key)
            if entry is not None and entry[1] > self._clock():
                yield key, entry[0]

    async def aclose(self) -> None:
        self._data.clear()
        self._heap.clear()
        self._bytes = 0
