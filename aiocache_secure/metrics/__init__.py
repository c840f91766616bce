"""Metrics: a small hook the facade calls per operation, free when unused.

A namespace created with ``metrics=hook`` is a :class:`MeteredCache`, which times each public
operation and calls ``hook.record(operation, namespace, outcome, duration_seconds)``; every other
namespace is a plain :class:`~aiocache_secure.cache.Cache` with no hook call on its hot paths.
Outcomes: ``hit``, ``miss``, ``ok``, ``error``, ``tampered``. Never a key or a value.
``cache.stats`` stays the zero-dependency view. An OpenTelemetry hook lives in
:mod:`aiocache_secure.metrics.otel` (extra ``otel``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..cache import Cache
from ..padded import PaddedCache
from ..policy import Seconds

__all__ = ["MeteredCache", "MeteredPaddedCache", "MetricsHook"]

T = TypeVar("T")


@runtime_checkable
class MetricsHook(Protocol):
    """Receives one call per cache operation; implement it to feed any metrics system."""

    def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
        """One operation: its name, the namespace, ``hit``/``miss``/``ok``/``error``/``tampered``
        and its duration in seconds. Called inline: keep it fast and never raise."""
        ...


class MeteredCache(Cache):
    """A :class:`~aiocache_secure.cache.Cache` that reports every public operation to a hook.

    Created by ``manager.namespace(..., metrics=hook)``; behaves exactly like a ``Cache``.
    """

    __slots__ = ("_hook",)

    def set_metrics(self, hook: MetricsHook) -> None:
        """Report to ``hook`` from now on."""
        self._hook = hook

    async def _measure(
        self, operation: str, call: Callable[[], Awaitable[T]], *, reads: bool = False
    ) -> T:
        stats = self.stats
        hits, tampered, errors = stats.hits, stats.tampered, stats.errors
        start = time.perf_counter()
        outcome = "ok"
        try:
            result = await call()
        except Exception:
            outcome = "error"
            raise
        finally:
            if stats.tampered > tampered:
                outcome = "tampered"
            elif stats.errors > errors:
                outcome = "error"
            elif reads and outcome == "ok":
                outcome = "hit" if stats.hits > hits else "miss"
            self._hook.record(operation, self.name, outcome, time.perf_counter() - start)
        return result

    async def get(self, key: str, default: Any = None, *, type: Any = None) -> Any:
        if type is not None:  # measured once, by the plain read it makes
            return await super().get(key, default, type=type)
        return await self._measure(
            "get", lambda: super(MeteredCache, self).get(key, default), reads=True
        )

    async def get_many(
        self, keys: Iterable[str], default: Any = None, *, type: Any = None
    ) -> list[Any]:
        if type is not None:
            return await super().get_many(keys, default, type=type)
        return await self._measure(
            "get_many", lambda: super(MeteredCache, self).get_many(keys, default), reads=True
        )

    async def set(
        self, key: str, value: Any, ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> None:
        await self._measure(
            "set", lambda: super(MeteredCache, self).set(key, value, ttl, tags=tags)
        )

    async def _set_payload(
        self, key: str, payload: bytes, ttl: Seconds | None = None, tags: Sequence[str] = ()
    ) -> None:
        # @cached's write (see Cache._set_payload) is a set like any other.
        await self._measure(
            "set", lambda: super(MeteredCache, self)._set_payload(key, payload, ttl, tags)
        )

    async def set_many(
        self, items: Mapping[str, Any], ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> None:
        await self._measure(
            "set_many", lambda: super(MeteredCache, self).set_many(items, ttl, tags=tags)
        )

    async def invalidate_tags(self, tags: Sequence[str]) -> None:
        await self._measure(
            "invalidate_tags", lambda: super(MeteredCache, self).invalidate_tags(tags)
        )

    async def delete(self, key: str) -> bool:
        return await self._measure("delete", lambda: super(MeteredCache, self).delete(key))

    async def delete_many(self, keys: Iterable[str]) -> int:
        return await self._measure(
            "delete_many", lambda: super(MeteredCache, self).delete_many(keys)
        )

    async def clear(self) -> int:
        return await self._measure("clear", lambda: super(MeteredCache, self).clear())

    async def add(
        self, key: str, value: Any, ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> bool:
        return await self._measure(
            "add", lambda: super(MeteredCache, self).add(key, value, ttl, tags=tags)
        )

    async def incr(self, key: str, delta: int = 1, ttl: Seconds | None = None) -> int:
        return await self._measure("incr", lambda: super(MeteredCache, self).incr(key, delta, ttl))

    async def expire(self, key: str, ttl: Seconds | None) -> bool:
        return await self._measure("expire", lambda: super(MeteredCache, self).expire(key, ttl))


class MeteredPaddedCache(MeteredCache, PaddedCache):
    """A :class:`~aiocache_secure.padded.PaddedCache` that reports to a hook (each measured
    operation includes its padding: what a caller waits is what is recorded)."""

    __slots__ = ()
