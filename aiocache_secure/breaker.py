"""Circuit breaker: during an outage, calls fail in microseconds instead of waiting out a timeout.

:class:`Breaker` is the configuration (a frozen dataclass, ``CacheManager(breaker=...)``; ``None``
turns breakers off). The manager wraps every store it hands to namespaces, except ``memory://``
(which cannot be unreachable), in one :class:`GuardedBackend` per store, so all namespaces on a
backend share one :class:`Circuit`:

``closed``
    Calls go to the store. ``failures`` backend failures in a row (no success in between) within
    ``window`` seconds open the circuit.
``open``
    Every call raises :class:`~aiocache_secure.errors.BackendUnavailable` at once (a miss or a
    no-op under ``fail_open``), without touching the store, for ``pause`` seconds.
``half_open``
    The first call after the pause is let through as a probe, while the others still fail fast:
    success closes the circuit, a failure opens it for another ``pause``. A probe that is still
    out after another ``pause`` no longer holds the others back: the next call probes too, so a
    lost probe never leaves the circuit open for good; a cancelled probe frees the way at once.

Only :class:`~aiocache_secure.errors.BackendUnavailable` and
:class:`~aiocache_secure.errors.BackendTimeout` count as failures: a tampered entry, a value too
large, a closed manager or a cancelled caller say nothing about the store's health. Each change of
state is one audit event (``breaker_opened``, ``breaker_half_open``, ``breaker_closed``) naming the
backend's kind, never its URL, and is pushed to every watcher (the namespaces' ``stats.breaker``
and metrics hooks). The circuit is plain synchronous state: it runs unchanged under asyncio and
trio, and its clock is injectable (``Breaker(clock=...)``, or the manager's injected clock).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, ParamSpec, TypeVar

import anyio.lowlevel

from . import audit
from .backend import AtomicBackend, Backend
from .errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    UnsupportedOperation,
)
from .leases import hold_lease

__all__ = ["CLOSED", "HALF_OPEN", "OFF", "OPEN", "Breaker", "Circuit", "GuardedBackend", "guard"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
OFF: Final = "off"
_FAILURES: Final = (BackendUnavailable, BackendTimeout)
_EVENTS: Final = {OPEN: "breaker_opened", HALF_OPEN: "breaker_half_open", CLOSED: "breaker_closed"}

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Breaker:
    """When a backend's circuit opens, and for how long.

    ``failures`` backend failures in a row within ``window`` seconds open it; after ``pause``
    seconds one probe call is let through. Keep ``window`` above ``failures`` times the store's
    timeout, so that even a lone caller waiting out one timeout after another opens it (the
    default: 5 × 3 s < 30 s). ``clock`` returns seconds; when it is not given, the manager's
    clock if one was injected (``CacheManager(clock=ManualClock())``), else ``time.monotonic``.
    """

    failures: int = 5
    window: float = 30.0
    pause: float = 2.0
    clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int):
            raise ConfigurationError("Breaker.failures must be a positive int")
        if self.failures < 1:
            raise ConfigurationError("Breaker.failures must be a positive int")
        for name in ("window", "pause"):
            number = getattr(self, name)
            if (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not 0 < number < math.inf
            ):
                raise ConfigurationError(f"Breaker.{name} must be a positive number of seconds")
        if self.clock is not None and not callable(self.clock):
            raise ConfigurationError("Breaker.clock must be a callable returning seconds")


class Circuit:
    """The breaker state of one backend, shared by every namespace on it."""

    __slots__ = ("_clock", "_config", "_failed", "_kind", "_probing", "_retry_at", "_watchers")

    def __init__(
        self, config: Breaker, *, kind: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = config.clock or clock
        self._kind = kind
        self._failed: deque[float] = deque(maxlen=config.failures)
        self._retry_at: float | None = None  # None while closed
        self._probing = False
        self._watchers: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"Circuit(kind={self._kind!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        if self._retry_at is None:
            return CLOSED
        return HALF_OPEN if self._probing else OPEN

    def watch(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(state)`` on every change of state."""
        self._watchers.append(watcher)

    # -- the three calls a guarded operation makes ------------------------------------------------

    def admit(self) -> bool:
        """Let a call through (True: it is the half-open probe) or raise ``BackendUnavailable``."""
        retry_at = self._retry_at
        if retry_at is None:
            return False
        now = self._clock()
        if now < retry_at:
            raise BackendUnavailable("backend circuit open: failing fast")
        # One probe per pause: a probe still out after a whole pause no longer holds others back.
        self._retry_at = now + self._config.pause
        if not self._probing:
            self._probing = True
            self._changed(HALF_OPEN)
        return True

    def succeeded(self, probe: bool) -> None:
        if probe:
            self._retry_at = None
            self._probing = False
            self._failed.clear()
            self._changed(CLOSED)
        elif self._failed and self._retry_at is None:
            self._failed.clear()

    def failed(self, probe: bool) -> None:
        now = self._clock()
        if probe:
            self._probing = False
            self._open(now)
            return
        if self._retry_at is not None:
            return  # a call admitted before the circuit opened
        failed = self._failed
        failed.append(now)
        if len(failed) == failed.maxlen and now - failed[0] <= self._config.window:
            self._open(now)

    def abandoned(self, probe: bool) -> None:
        """The call ended without a verdict on the store (cancelled, closed, refused locally)."""
        if probe and self._retry_at is not None:
            self._retry_at = min(self._retry_at, self._clock())  # the next call probes

    # -- internals ------------------------------------------------------------------------------

    def _open(self, now: float) -> None:
        self._retry_at = now + self._config.pause
        self._failed.clear()
        self._changed(OPEN)

    def _changed(self, state: str) -> None:
        audit.emit(
            _EVENTS[state],
            level=logging.WARNING if state == OPEN else logging.INFO,
            backend=self._kind,
        )
        for watcher in self._watchers:
            watcher(state)


async def _admit(circuit: Circuit) -> bool:
    try:
        return circuit.admit()
    except BackendUnavailable:
        # Failing fast still yields to the event loop once: a caller that retries in a loop
        # while the store is down must not starve every other task (the fault soak did).
        await anyio.lowlevel.checkpoint()
        raise


def _judge(circuit: Circuit, probe: bool, exc: BaseException) -> None:
    """The verdict on a call to the store that raised ``exc``: a failure of the store, or none
    (cancelled, or an error that says nothing about the store's health)."""
    if isinstance(exc, _FAILURES):
        circuit.failed(probe)
    else:
        circuit.abandoned(probe)


class GuardedBackend:
    """A store behind its :class:`Circuit`: the Backend (and AtomicBackend) protocol, guarded.

    Attributes it does not define (a store's own counters, for tooling) are read from the store.
    It closes the store it guards.
    """

    __slots__ = ("circuit", "inner")

    def __init__(self, inner: Backend, circuit: Circuit) -> None:
        self.inner = inner
        self.circuit = circuit

    def __repr__(self) -> str:
        return f"GuardedBackend({self.inner!r}, state={self.circuit.state!r})"

    def __getattr__(self, name: str) -> Any:
        if name in GuardedBackend.__slots__:
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def _run(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        circuit = self.circuit
        probe = await _admit(circuit)
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            _judge(circuit, probe, exc)
            raise
        circuit.succeeded(probe)  # inline, not a context manager: this runs on every call
        return result

    async def get(self, key: bytes) -> bytes | None:
        return await self._run(self.inner.get, key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self._run(self.inner.get_many, keys)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self._run(self.inner.set, key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        await self._run(self.inner.set_many, items, ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        return await self._run(self.inner.delete, key)

    async def delete_prefix(self, prefix: bytes) -> int:
        return await self._run(self.inner.delete_prefix, prefix)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        circuit = self.circuit
        probe = await _admit(circuit)
        try:
            async for item in self.inner.scan(prefix):
                yield item
        except BaseException as exc:  # a scan closed early (GeneratorExit) is no verdict
            _judge(circuit, probe, exc)
            raise
        circuit.succeeded(probe)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        return await self._run(_atomic(self.inner).add, key, value, ttl=ttl)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        return await self._run(_atomic(self.inner).get_versioned, key)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        return await self._run(_atomic(self.inner).compare_and_set, key, token, value, ttl=ttl)

    async def aclose(self) -> None:
        await self.inner.aclose()


class GuardedLeases(GuardedBackend):
    """A guarded store that also offers the Redis backend's lease (see ``RedisBackend.lease``)."""

    __slots__ = ()

    async def acquire_lease(self, key: bytes, ttl: float, *, wait: float = 0.0) -> bytes | None:
        result: bytes | None = await self._run(self.inner.acquire_lease, key, ttl, wait=wait)  # type: ignore[attr-defined]
        return result

    async def release_lease(self, key: bytes, token: bytes) -> bool:
        return bool(await self._run(self.inner.release_lease, key, token))  # type: ignore[attr-defined]

    def lease(
        self, key: bytes, ttl: float, wait: float = 0.0
    ) -> contextlib.AbstractAsyncContextManager[bool]:
        return hold_lease(self, key, ttl, wait)


def guard(
    store: Backend, config: Breaker, *, kind: str, clock: Callable[[], float] = time.monotonic
) -> GuardedBackend:
    """``store`` behind a new circuit (with the lease methods when ``store`` has them);
    ``clock`` serves when ``config`` names none."""
    leases = all(
        callable(getattr(store, name, None)) for name in ("acquire_lease", "release_lease", "lease")
    )
    cls = GuardedLeases if leases else GuardedBackend
    return cls(store, Circuit(config, kind=kind, clock=clock))


def _atomic(backend: Backend) -> AtomicBackend:
    if not isinstance(backend, AtomicBackend):
        raise UnsupportedOperation("this backend does not support atomic updates")
    return backend
