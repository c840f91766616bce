"""The verified-read memo: a manager-wide, byte-bounded store of two pure computations' results.

Two owners keep entries in it, each under its own prefix (:mod:`aiocache_secure.keyspace`):

* :class:`~aiocache_secure.layers.keys.HashedKeys` (:class:`KeyEntry`): cache key → storage key
  (a keyed PRF, ~0.45 µs per key);
* :class:`~aiocache_secure.layers.verified.VerifiedReads`
  (:class:`~aiocache_secure.layers.verified.Verified`): cache key → the envelope last read from
  the store, the key epoch it was authenticated under, the frame it opened to and the value the
  facade decoded from that frame (AES-GCM verification and decryption, ~0.6 µs for 100 bytes and
  ~2 µs for 10 KB, plus frame checks and deserialization, ~0.3 µs for a short JSON string).
  Immutable values are handed out again as the same object; anything mutable is decoded afresh
  from the verified frame on every hit.

Both are deterministic functions of their inputs, so a memo hit returns exactly what recomputing
would. A verified entry serves a read only when the envelope fetched from the store *now* is
byte-for-byte the one that was authenticated before, under the same key epoch (a key source bumps
its epoch whenever the keys it can open with change: a new keyring, a private namespace's key
loaded or forgotten). Anything else (a tampered, replaced or truncated entry) misses the memo and
is verified in full. Expiry is not memoized: it is checked against the clock on every read. Every
read still goes to the store: the memo saves CPU, never a round trip, and never serves an entry
the store no longer holds.

What it costs: plaintext frames and values of recently read entries stay in process memory, up to
``limit`` bytes for the whole manager (``CacheManager(memo_bytes=...)``; 0 turns it off), and
entries are dropped on ``delete``, ``set``, ``clear``, ``erase``, a new keyring and ``aclose``.
Namespaces with timing padding never use it (a memo hit is faster than a first read), and
``namespace(..., memo=False)`` keeps a namespace out of it.

Entries are slotted dataclasses with a ``size`` field, their accounted bytes (field reads cost
what tuple indexing costs; a NamedTuple's cost about twice that). Eviction is first-in first-out,
which costs nothing on a hit. Entries over :data:`MAX_ENTRY_BYTES` are not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = ["DEFAULT_MEMO_BYTES", "ENTRY_OVERHEAD", "MAX_ENTRY_BYTES", "KeyEntry", "Memo"]

DEFAULT_MEMO_BYTES: Final = 8 * 2**20
# Larger entries are never kept: their decryption is a small part of their read (AES-GCM runs at
# several GB/s; the fixed per-call cost is what the memo saves), while a budget of them would be
# churned by any working set of a few thousand values (measured: 10 KB values at concurrency 50
# read 30% slower through a thrashing 8 MiB memo than with none).
MAX_ENTRY_BYTES: Final = 8192
# Dict slot, object and bytes headers of one entry, roughly, on 64-bit CPython.
ENTRY_OVERHEAD: Final = 200


class Entry(Protocol):
    """What the memo needs of an entry: its accounted size in bytes."""

    @property
    def size(self) -> int: ...


@dataclass(slots=True, eq=False)
class KeyEntry:
    """A memoized storage key (kept by :class:`~aiocache_secure.layers.keys.HashedKeys`)."""

    size: int
    storage_key: bytes


class Memo:
    __slots__ = ("_entries", "_largest", "_size", "get", "limit")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError("memo_bytes must be an int")
        if limit < 0:
            raise ValueError("memo_bytes must be >= 0")
        self.limit = limit
        # Nor more than 1/16 of the memo, so that a few entries cannot flush it.
        self._largest = min(limit // 16, MAX_ENTRY_BYTES)
        # Ordered: evicting the oldest is O(1) (a plain dict's first key, after many pops from
        # its front, takes a scan past every dead slot: ~20 µs per insert at 30,000 entries).
        self._entries: OrderedDict[bytes, Any] = OrderedDict()
        self._size = 0
        # The entry under a key, or None: the dict's own get, bound once (hits run per key of a
        # batch, and a Python-level method call would double their cost). clear() keeps the dict.
        # Typed Any: each owner reads its own entries under its own prefix.
        self.get: Callable[[bytes], Any] = self._entries.get

    def __repr__(self) -> str:
        return f"Memo(entries={len(self._entries)}, bytes={self._size}, limit={self.limit})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._size

    def put(self, key: bytes, entry: Entry) -> None:
        size = entry.size
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._size -= old.size
        if size > self._largest:
            return
        entries[key] = entry
        self._size += size
        while self._size > self.limit:
            self._size -= entries.popitem(last=False)[1].size

    def discard(self, key: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old.size

    def discard_prefix(self, prefix: bytes) -> None:
        for key in [key for key in self._entries if key.startswith(prefix)]:
            self.discard(key)

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0
