"""Test doubles for code that uses the cache, shipped with the package (as httpx ships its
``MockTransport``).

Use them to test how an application behaves when the cache is down, comes back, or was tampered
with, without mocking the library::

    from aiocache_secure import CacheManager, Keyring
    from aiocache_secure.testing import ManualClock, SwitchableBackend

    store = SwitchableBackend()                       # memory:// underneath
    clock = ManualClock()
    async with CacheManager(keyring=Keyring.generate(), clock=clock, breaker=None) as manager:
        cache = manager.namespace("users", backend=store, fail_open=True)
        await cache.set("alice", {"plan": "pro"})
        store.down = True                             # an outage: reads miss (fail_open)
        assert await cache.get("alice") is None
        store.down = False                            # recovery: the entry is back
        clock.advance(3600)                           # and expires without sleeping

* :class:`ManualClock`: time that moves only when told to (pass it as ``CacheManager(clock=)``).
* :class:`FailingBackend`: a store that is down; every call raises :class:`BackendUnavailable`
  (or the error you pass).
* :class:`SwitchableBackend`: a working store (``memory://`` unless you wrap another) that fails
  while ``down`` is true.
* :class:`RecordingBackend`: a working store that records each call's operation and key count
  (never keys or values), to assert how many round trips a code path costs.
* :func:`corrupt_entries`: flips a byte of every stored entry of a namespace, as an attacker
  with write access to the store would; reads of them are then misses (``IntegrityError`` under
  ``strict=True``).

A ready backend instance passed as ``backend=`` is used as it is: it is not closed by the
manager's ``aclose`` (close it yourself when the test holds resources).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from .backend import Backend
from .backends.memory import MemoryBackend
from .clock import ManualClock
from .errors import BackendError, BackendUnavailable

__all__ = [
    "Call",
    "FailingBackend",
    "ManualClock",
    "RecordingBackend",
    "SwitchableBackend",
    "corrupt_entries",
]


def _error(error: type[BackendError]) -> BackendError:
    return error("test backend is down")


def _check_error(error: object) -> type[BackendError]:
    if not (isinstance(error, type) and issubclass(error, BackendError)):
        raise TypeError("error must be a BackendError subclass")
    return error


class FailingBackend:
    """A store that is down: every operation raises ``error`` (:class:`BackendUnavailable`)."""

    __slots__ = ("_error",)

    def __init__(self, error: type[BackendError] = BackendUnavailable) -> None:
        self._error = _check_error(error)

    def __repr__(self) -> str:
        return f"FailingBackend(error={self._error.__name__})"

    async def get(self, key: bytes) -> bytes | None:
        raise _error(self._error)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        raise _error(self._error)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        raise _error(self._error)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        raise _error(self._error)

    async def delete(self, key: bytes) -> bool:
        raise _error(self._error)

    async def delete_prefix(self, prefix: bytes) -> int:
        raise _error(self._error)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        raise _error(self._error)
        yield b"", b""  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None


class _Forwarding:
    """Forwards the Backend protocol to ``inner``, calling :meth:`_before` first."""

    __slots__ = ("inner",)

    def __init__(self, inner: Backend | None = None) -> None:
        if inner is not None and not isinstance(inner, Backend):
            raise TypeError("inner must be a Backend")
        self.inner: Backend = MemoryBackend() if inner is None else inner

    def _before(self, operation: str, keys: int) -> None:
        raise NotImplementedError

    async def get(self, key: bytes) -> bytes | None:
        self._before("get", 1)
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._before("get_many", len(keys))
        return await self.inner.get_many(keys)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        self._before("set", 1)
        await self.inner.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        self._before("set_many", len(items))
        await self.inner.set_many(items, ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        self._before("delete", 1)
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: bytes) -> int:
        self._before("delete_prefix", 0)
        return await self.inner.delete_prefix(prefix)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        self._before("scan", 0)
        async for item in self.inner.scan(prefix):
            yield item

    async def aclose(self) -> None:
        await self.inner.aclose()


class SwitchableBackend(_Forwarding):
    """A working store that fails with ``error`` while :attr:`down` is true.

    ``calls`` counts the operations that reached it, failed ones included (with a circuit
    breaker on, an open breaker keeps calls from reaching it at all).
    """

    __slots__ = ("_error", "calls", "down")

    def __init__(
        self,
        inner: Backend | None = None,
        *,
        down: bool = False,
        error: type[BackendError] = BackendUnavailable,
    ) -> None:
        super().__init__(inner)
        if not isinstance(down, bool):
            raise TypeError("down must be True or False")
        self._error = _check_error(error)
        self.down = down
        self.calls = 0

    def __repr__(self) -> str:
        return f"SwitchableBackend(down={self.down}, calls={self.calls})"

    def _before(self, operation: str, keys: int) -> None:
        self.calls += 1
        if self.down:
            raise _error(self._error)


@dataclass(frozen=True, slots=True)
class Call:
    """One call that reached a :class:`RecordingBackend`: its operation and how many keys."""

    operation: str
    keys: int


class RecordingBackend(_Forwarding):
    """A working store that records every call in :attr:`calls` (operation and key count)."""

    __slots__ = ("calls",)

    def __init__(self, inner: Backend | None = None) -> None:
        super().__init__(inner)
        self.calls: list[Call] = []

    def __repr__(self) -> str:
        return f"RecordingBackend(calls={len(self.calls)})"

    def _before(self, operation: str, keys: int) -> None:
        self.calls.append(Call(operation, keys))

    def operations(self) -> list[str]:
        """The operations recorded so far, in order."""
        return [call.operation for call in self.calls]

    def reset(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()


async def corrupt_entries(backend: Backend, prefix: bytes) -> int:
    """Flip one byte in every entry stored under ``prefix`` (a namespace's ``cache.key_prefix``)
    in ``backend``, the store the namespace was given; returns how many entries changed.

    Entries keep no expiry in the store afterwards: they are never served again either way.
    """
    if not isinstance(backend, Backend):
        raise TypeError("backend must be a Backend")
    if not isinstance(prefix, bytes) or not prefix:
        raise TypeError("prefix must be non-empty bytes (a namespace's key_prefix)")
    found = [item async for item in backend.scan(prefix)]
    for key, value in found:
        flipped = bytearray(value)
        if flipped:
            flipped[len(flipped) // 2] ^= 0x01
        await backend.set(key, bytes(flipped) or b"\x00", ttl=None)
    return len(found)
