"""The stores one manager opened: shared per URL, or opened for one namespace, each behind its
circuit breaker (one per store, shared by the namespaces on it; see :mod:`.breaker`), and the
near caches of Redis stores (one per store, with its invalidation channel; see
:mod:`.layers.near`)."""

from __future__ import annotations

import time

import anyio

from .backend import Backend
from .backends import MemoryBackend, backend_kind, open_backend
from .breaker import Breaker, GuardedBackend, guard
from .clock import Clock, system_clock
from .errors import BackendError, ConfigurationError
from .layers.near import NearStore
from .policy import Policy
from .stats import Stats

__all__ = ["Stores", "leaves_process"]


def leaves_process(backend: str | Backend) -> bool:
    """Whether a backend (a URL or an instance) keeps entries outside this process."""
    if isinstance(backend, str):
        return backend_kind(backend).leaves_process
    if not isinstance(backend, Backend):
        raise TypeError("a backend is a URL string or a Backend instance")
    return type(backend) is not MemoryBackend


class Stores:
    """Opens, guards, tracks and closes a manager's stores."""

    __slots__ = (
        "_breaker",
        "_clock",
        "_guards",
        "_near_bytes",
        "_strict",
        "near",
        "owned",
        "shared",
    )

    def __init__(
        self, *, breaker: Breaker | None, clock: Clock, strict: bool, near_cache_bytes: int
    ) -> None:
        self._breaker = breaker
        self._near_bytes = near_cache_bytes
        self.near: dict[int, NearStore] = {}
        self._clock = clock
        self._strict = strict
        self.shared: dict[str, Backend] = {}
        # Stores opened for one namespace each (memory, file), by id: released with it.
        self.owned: dict[int, Backend] = {}
        self._guards: dict[int, GuardedBackend] = {}

    def guarded(self, store: Backend) -> Backend:
        """``store`` behind its circuit breaker: one per store, shared by its namespaces."""
        if self._breaker is None or isinstance(store, MemoryBackend | GuardedBackend):
            return store
        guarded = self._guards.get(id(store))
        if guarded is None:
            kind = str(getattr(store, "kind", type(store).__name__))
            # An injected manager clock drives the breaker too; the system's wall clock does not
            # (it may jump), time.monotonic does.
            clock = time.monotonic if self._clock is system_clock else self._clock
            guarded = self._guards[id(store)] = guard(store, self._breaker, kind=kind, clock=clock)
        return guarded

    def forget(self, store: Backend) -> None:
        """Stop tracking a store opened for one namespace (or one call), and its circuit."""
        self.owned.pop(id(store), None)
        if isinstance(store, GuardedBackend):
            self._guards.pop(id(store.inner), None)

    def open_shared(self, backend: str | Backend) -> Backend:
        if not isinstance(backend, str):
            if not isinstance(backend, Backend):
                raise TypeError("a backend is a URL string or a Backend instance")
            return self.guarded(backend)
        opened = self.shared.get(backend)
        if opened is None:
            opened = open_backend(backend, clock=self._clock, strict=self._strict)
            self.shared[backend] = opened
        return self.guarded(opened)

    def resolve(self, backend: str | Backend, policy: Policy, stats: Stats) -> tuple[Backend, bool]:
        """``(store, leaves_process)`` for a namespace."""
        quotas = policy.max_entries is not None or policy.max_bytes is not None
        leaves = leaves_process(backend)
        if not isinstance(backend, str):
            if quotas:
                raise ConfigurationError(
                    "max_entries/max_bytes apply to backends the manager opens from a URL; "
                    "configure a Backend instance's own limits instead"
                )
            return self.guarded(backend), leaves
        kind = backend_kind(backend)
        if not kind.per_namespace:
            if quotas:
                raise ConfigurationError(
                    f"max_entries/max_bytes are enforced by memory and file backends only; "
                    f"bound a {kind.scheme}:// store with its own memory policy"
                )
            return self.open_shared(backend), leaves

        def on_evict(count: int) -> None:
            stats.evictions += count

        store = open_backend(
            backend,
            clock=self._clock,
            strict=self._strict,
            max_entries=policy.max_entries,
            max_bytes=policy.max_bytes,
            on_evict=on_evict,
        )
        guarded = self.guarded(store)  # closing it closes the store
        self.owned[id(guarded)] = guarded
        return guarded, leaves

    def near_of(self, store: Backend) -> NearStore:
        """The near cache of ``store``, with its invalidation channel: one per store."""
        near = self.near.get(id(store))
        if near is None:
            opener = getattr(store, "open_invalidation_channel", None)
            if opener is None:
                raise ConfigurationError(
                    "near_cache needs a Redis store (redis:// or rediss://), which reports "
                    "changes; memory, file and MongoDB stores have no invalidation channel"
                )
            near = NearStore(self._near_bytes)
            near.attach(opener(near.on_invalidate))
            self.near[id(store)] = near
        return near

    async def aclose(self, *also: Backend) -> int:
        """Close the near caches, every store, then ``also`` (each shielded from cancellation);
        how many stores failed to close cleanly."""
        nears, self.near = list(self.near.values()), {}
        for near in nears:
            with anyio.CancelScope(shield=True):
                await near.aclose()
        failures = 0
        for backend in [*self.owned.values(), *self.shared.values(), *also]:
            try:
                with anyio.CancelScope(shield=True):
                    await backend.aclose()
            except BackendError:
                failures += 1
        self.owned.clear()
        self.shared.clear()
        return failures
