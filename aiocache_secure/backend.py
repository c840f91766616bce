"""The Backend protocol: bytes in, bytes out, small on purpose.

Every store (memory, file, Redis, MongoDB) implements it, and so does every layer (key hashing,
encryption, size limits, timing padding), which wraps another Backend. Typing, cryptography and
policy live in layers or in the :class:`~aiocache_secure.cache.Cache` facade, never here.

Rules every implementation follows:

* ``ttl`` is a relative lifetime in seconds (``None``: no expiry). A backend expires entries by
  itself; the entry frame above also carries the absolute expiry, so a backend that keeps an entry
  a little longer is never wrong, only wasteful.
* ``get_many`` returns one slot per requested key, in order; ``None`` marks a miss.
* ``set_many`` stores every item with the same ``ttl``.
* ``delete`` returns whether something was deleted.
* ``delete_prefix`` removes every key starting with ``prefix`` and nothing else; it is how one
  namespace is cleared on a shared store, so it must never flush the whole store.
* ``scan`` yields ``(key, value)`` pairs whose key starts with ``prefix``; it streams (no full
  load into memory) and tolerates concurrent writes (an entry may be seen or missed, never torn).
* ``aclose`` releases connections; it is idempotent.
* Driver exceptions become :class:`~aiocache_secure.errors.BackendError` subclasses at this
  boundary, raised ``from`` the original, with no key, value, password or URL in the message.

A backend without a native batch form implements ``get_many``/``set_many`` with a loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["AtomicBackend", "Backend"]


@runtime_checkable
class Backend(Protocol):
    """A store of bytes under bytes keys: the eight methods every backend and layer implements."""

    async def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or ``None`` if there is none (or it expired)."""
        ...

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One slot per key, in order: the value, or ``None`` for a miss."""
        ...

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None``: no expiry)."""
        ...

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        """Store every ``(key, value)`` pair, all with the same ``ttl``."""
        ...

    async def delete(self, key: bytes) -> bool:
        """Remove ``key``; whether something was removed."""
        ...

    async def delete_prefix(self, prefix: bytes) -> int:
        """Remove every key starting with ``prefix`` (and nothing else); how many were removed."""
        ...

    def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        """Stream the ``(key, value)`` pairs whose key starts with ``prefix``."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; idempotent."""
        ...


@runtime_checkable
class AtomicBackend(Backend, Protocol):
    """Optional: what ``Cache.add``, ``incr`` and ``expire`` need.

    * ``add`` stores only if no live entry exists, atomically, and says whether it stored.
    * ``get_versioned`` returns ``(value, token)``: ``token`` is opaque to callers and identifies
      the stored entry (the stored bytes, for stores that keep bytes as written).
    * ``compare_and_set`` replaces the entry only if it is still the one ``token`` identifies,
      atomically, and says whether it did.

    Layers transform ``value`` and map ``key`` but pass ``token`` through untouched, so an
    encryption layer can compare-and-set on the ciphertext it read.
    """

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        """Store only if no live entry exists, atomically; whether it stored."""
        ...

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        """``(value, token)`` of the entry, ``token`` identifying it; ``None`` on a miss."""
        ...

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        """Replace the entry only if it is still the one ``token`` identifies; whether it did."""
        ...
