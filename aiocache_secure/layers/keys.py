"""Key mapping: cache key → storage key, with the namespace built in (spellings: ``keyspace``).

``hashed``:   ``acs1`` + tag + ``:`` + hex(BLAKE2b-192 keyed with the namespace key, over the key)
``prefixed``: ``acs1`` + tag + ``=`` + the key itself (``hash_keys=False``)

The PRF is keyed BLAKE2b (RFC 7693 keyed mode, a PRF like HMAC-SHA256 at a third of the cost),
fixed in code for format ``acs1``, never chosen by stored data.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

from .. import keyspace
from ..backend import Backend
from ..memo import ENTRY_OVERHEAD, KeyEntry, Memo
from .base import Layer

__all__ = ["HashedKeys", "PrefixedKeys"]


class HashedKeys(Layer):
    __slots__ = ("_memo", "_memo_prefix", "_prf", "prefix")

    def __init__(
        self, inner: Backend, *, tag: bytes, prf_key: bytes, memo: Memo | None = None
    ) -> None:
        super().__init__(inner)
        self.prefix = keyspace.hashed_prefix(tag)
        # Copying a keyed state is cheaper than keying a new one on every call.
        self._prf = hashlib.blake2b(key=prf_key, digest_size=24)
        self._memo = memo
        self._memo_prefix = keyspace.key_memo_prefix(tag)

    def storage_key(self, key: bytes) -> bytes:
        memo = self._memo
        if memo is None:
            return self._derive(key)
        memo_key = self._memo_prefix + key
        found = memo.get(memo_key)
        return self._derive(key, memo_key) if found is None else found.storage_key

    def _derive(self, key: bytes, memo_key: bytes = b"") -> bytes:
        """The PRF itself; remembered under ``memo_key`` when one is given."""
        prf = self._prf.copy()
        prf.update(key)
        storage_key = self.prefix + prf.hexdigest().encode("ascii")
        if memo_key and self._memo is not None:
            size = len(memo_key) + len(storage_key) + ENTRY_OVERHEAD
            self._memo.put(memo_key, KeyEntry(size, storage_key))
        return storage_key

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(self.storage_key(key))

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        memo = self._memo
        if memo is None:
            return await self.inner.get_many([self.storage_key(k) for k in keys])
        # storage_key(), with its memo lookup inlined: this runs once per key of a batch.
        found, memo_prefix = memo.get, self._memo_prefix
        storage_keys = []
        for key in keys:
            memo_key = memo_prefix + key
            hit = found(memo_key)
            storage_keys.append(self._derive(key, memo_key) if hit is None else hit.storage_key)
        return await self.inner.get_many(storage_keys)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self.inner.set(self.storage_key(key), value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        await self.inner.set_many([(self.storage_key(k), v) for k, v in items], ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        return await self.inner.delete(self.storage_key(key))

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        return await super().add(self.storage_key(key), value, ttl=ttl)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        return await super().get_versioned(self.storage_key(key))

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        return await super().compare_and_set(self.storage_key(key), token, value, ttl=ttl)

    async def delete_prefix(self, prefix: bytes) -> int:
        if prefix:
            raise ValueError("a namespace with hashed keys can only be cleared as a whole")
        if self._memo is not None:
            self._memo.discard_prefix(self._memo_prefix)
        return await self.inner.delete_prefix(self.prefix)

    def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        """Yields storage keys: the original keys travel inside encrypted entries only."""
        if prefix:
            raise ValueError("a namespace with hashed keys can only be scanned as a whole")
        return self.inner.scan(self.prefix)


class PrefixedKeys(Layer):
    __slots__ = ("prefix",)

    def __init__(self, inner: Backend, *, tag: bytes) -> None:
        super().__init__(inner)
        self.prefix = keyspace.prefixed_prefix(tag)

    def storage_key(self, key: bytes) -> bytes:
        return self.prefix + key

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(self.prefix + key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        prefix = self.prefix
        return await self.inner.get_many([prefix + k for k in keys])

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self.inner.set(self.prefix + key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        prefix = self.prefix
        await self.inner.set_many([(prefix + k, v) for k, v in items], ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        return await self.inner.delete(self.prefix + key)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        return await super().add(self.prefix + key, value, ttl=ttl)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        return await super().get_versioned(self.prefix + key)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        return await super().compare_and_set(self.prefix + key, token, value, ttl=ttl)

    async def delete_prefix(self, prefix: bytes) -> int:
        return await self.inner.delete_prefix(self.prefix + prefix)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        cut = len(self.prefix)
        async for key, value in self.inner.scan(self.prefix + prefix):
            yield key[cut:], value
