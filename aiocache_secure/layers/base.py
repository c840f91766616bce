"""The layer base: a Backend that holds a Backend and forwards what it does not change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from ..backend import AtomicBackend, Backend
from ..errors import UnsupportedOperation

__all__ = ["Layer"]


class Layer:
    """Forwards every Backend call to ``inner``; subclasses override what they transform."""

    __slots__ = ("inner",)

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self.inner.get_many(keys)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self.inner.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        await self.inner.set_many(items, ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: bytes) -> int:
        return await self.inner.delete_prefix(prefix)

    def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        return self.inner.scan(prefix)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        return bool(await _atomic(self.inner).add(key, value, ttl=ttl))

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        return await _atomic(self.inner).get_versioned(key)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        return bool(await _atomic(self.inner).compare_and_set(key, token, value, ttl=ttl))

    async def aclose(self) -> None:
        # Layers never own the store: the manager closes shared backends exactly once.
        return None


def _atomic(backend: Backend) -> AtomicBackend:
    if not isinstance(backend, AtomicBackend):
        raise UnsupportedOperation("this backend does not support atomic updates")
    return backend
