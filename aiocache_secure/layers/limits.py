"""Size limit: a value larger than ``max_value_bytes`` is refused before any I/O."""

from __future__ import annotations

from collections.abc import Sequence

from .. import audit
from ..backend import Backend
from ..errors import ValueTooLarge
from ..frame import HEADER
from .base import Layer

__all__ = ["SizeLimit"]


class SizeLimit(Layer):
    """Counts the serialized value (the frame's payload and embedded key), not the envelope."""

    __slots__ = ("_limit", "_namespace")

    def __init__(self, inner: Backend, *, max_value_bytes: int, namespace: str) -> None:
        super().__init__(inner)
        self._limit = max_value_bytes + HEADER
        self._namespace = namespace

    def _check(self, value: bytes) -> None:
        if len(value) > self._limit:
            audit.emit("limit_exceeded", namespace=self._namespace, limit="max_value_bytes")
            raise ValueTooLarge(
                f"value is {len(value) - HEADER} bytes; this namespace allows at most "
                f"{self._limit - HEADER}"
            )

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        self._check(value)
        await self.inner.set(key, value, ttl=ttl)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        self._check(value)
        return await super().add(key, value, ttl=ttl)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        self._check(value)
        return await super().compare_and_set(key, token, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        for _, value in items:
            self._check(value)
        await self.inner.set_many(items, ttl=ttl)
