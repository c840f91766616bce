"""The lease scope of a store that offers leases (the Redis backend, and the breaker's guard in
front of it): ``async with store.lease(key, ttl, wait) as held``.

One definition, so that what happens to a lease on the way out (released if held, a failed
release swallowed) is the same whichever object the caller holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from .errors import BackendError

__all__ = ["LeaseOwner", "hold_lease"]


class LeaseOwner(Protocol):
    """What :func:`hold_lease` needs: take a lease (an owner token, or None) and give it back."""

    async def acquire_lease(self, key: bytes, ttl: float, *, wait: float = 0.0) -> bytes | None:
        """Take the lease ``key`` for ``ttl`` seconds: the owner token, or None after ``wait``."""
        ...

    async def release_lease(self, key: bytes, token: bytes) -> bool:
        """Release the lease ``key`` if ``token`` still owns it."""
        ...


@contextlib.asynccontextmanager
async def hold_lease(
    owner: LeaseOwner, key: bytes, ttl: float, wait: float = 0.0
) -> AsyncIterator[bool]:
    """Whether ``owner`` got the lease ``key``; released on exit if it did."""
    token = await owner.acquire_lease(key, ttl, wait=wait)
    try:
        yield token is not None
    finally:
        if token is not None:
            # An unreleased lease expires after ttl; failing the caller here helps nobody.
            with contextlib.suppress(BackendError):
                await owner.release_lease(key, token)
