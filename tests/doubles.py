"""Test doubles for the decorator and web tests (never for the backend contract suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiocache_secure import BackendUnavailable


class FailingBackend:
    """A store that is down: every operation raises BackendUnavailable."""

    async def get(self, key: bytes) -> bytes | None:
        raise BackendUnavailable("test backend is down")

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        raise BackendUnavailable("test backend is down")

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        raise BackendUnavailable("test backend is down")

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        raise BackendUnavailable("test backend is down")

    async def delete(self, key: bytes) -> bool:
        raise BackendUnavailable("test backend is down")

    async def delete_prefix(self, prefix: bytes) -> int:
        raise BackendUnavailable("test backend is down")

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        raise BackendUnavailable("test backend is down")
        yield b"", b""  # pragma: no cover

    async def aclose(self) -> None:
        return None
