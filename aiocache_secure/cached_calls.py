"""What a ``@cached`` function does on each call, behind the public wrappers of
:mod:`aiocache_secure.decorator`: the read (typed, tagged, stale-while-revalidate), single
flight per key in the process, the optional distributed lease, the computation, the write, and
a copy of the result for every caller (see docs/decorator.md).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import random
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, ParamSpec, TypeVar, cast

from .cache import MISSING, Cache
from .callkeys import CallKey, immutable
from .errors import (
    BackendError,
    ClosedError,
    IntegrityError,
    SerializationError,
    ValueTooLarge,
)
from .flight import Flight, spawn
from .manager import CacheManager, default_manager
from .tags import check_tags
from .typed import check_storable, coerce, dump, needs_coercion

__all__ = ["EARLY_REFRESH", "LEASE_SECONDS", "LEASE_WAIT", "Core"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")

_log: Final = logging.getLogger("aiocache_secure")
_BURST_SECONDS: Final = 10.0
EARLY_REFRESH: Final = 0.1
"""Fraction of ``ttl`` by which a stale-while-revalidate entry's freshness is randomly shortened."""
LEASE_SECONDS: Final = 30.0
"""How long a distributed lease (``lock=True``) is held at most if its holder dies."""
LEASE_WAIT: Final = 10.0
"""How long a caller waits for another process's lease before computing by itself."""
_READ_ERRORS: Final = (BackendError, ClosedError, IntegrityError)
_WRITE_ERRORS: Final = (BackendError, ClosedError, SerializationError, ValueTooLarge)
_jitter: Final = random.Random()  # noqa: S311 - spreads expiry, no secrecy involved


_Copy = Callable[[], tuple[bool, Any]]


def _decode(cache: Cache, payload: bytes, wrapped: bool, declared: Any) -> tuple[bool, Any]:
    """A new copy of the value serialized in ``payload`` (a stale-while-revalidate entry when
    ``wrapped``), as the ``declared`` return type when it needs one; ``(False, None)`` if it does
    not decode."""
    try:
        found = cache._loads(payload)
        value = found[1] if wrapped else found
        return True, value if declared is None else coerce(value, declared)
    except SerializationError:
        return False, None


_UNRESOLVED: Final = object()


def _declared_type(fn: Callable[..., Any], names: dict[str, Any] | None = None) -> Any:
    """The return type reads must turn values back into (models, dataclasses, ...), ``None``
    when values come back as declared anyway, ``_UNRESOLVED`` while a forward reference in the
    annotation names something not defined yet. ``TypeError`` for a type the cache cannot store:
    better at decoration than a logged failure on every call."""
    target = inspect.unwrap(fn)
    if "return" not in getattr(target, "__annotations__", {}):
        return None
    try:
        declared = typing.get_type_hints(target, localns=names, include_extras=True).get("return")
    except Exception:  # NameError for a forward reference, and what else evaluation raises
        return _UNRESOLVED
    if declared is None:
        return None
    try:
        check_storable(declared)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", "the function")
        raise TypeError(f"@cached {name}: {exc}; return a storable type, or drop @cached") from None
    return declared if needs_coercion(declared) else None


def _uncopyable() -> tuple[bool, Any]:
    return False, None


class Core:
    """Everything a cached function does; the public wrappers only bind arguments to it."""

    __slots__ = (
        "_cache",
        "_condition",
        "_declared",
        "_flights",
        "_fn",
        "_key",
        "_logged",
        "_lock",
        "_manager",
        "_name",
        "_names",
        "_namespace",
        "_owner",
        "_stale_ttl",
        "_tags",
        "_ttl",
        "first_param",
    )

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        namespace: str,
        ttl: float | None,
        manager: CacheManager | None,
        key: str | Callable[..., str] | None,
        condition: Callable[[Any], bool] | None,
        stale_ttl: float | None,
        lock: bool,
        names: dict[str, Any] | None = None,
        tags: Sequence[str] | Callable[..., Sequence[str]] = (),
    ) -> None:
        self._fn = fn
        self._tags = tags
        self._key = CallKey(fn, key)
        self._name = getattr(fn, "__qualname__", "?")
        self._namespace = namespace
        self._ttl = ttl
        self._manager = manager
        self._condition = condition
        self._stale_ttl = stale_ttl
        self._lock = lock
        self._cache: Cache | None = None
        self._owner: CacheManager | None = None
        self._flights: dict[str, Flight] = {}
        self._logged: dict[type[BaseException], float] = {}
        self.first_param = self._key.first_param
        self._declared = _declared_type(fn, names)
        # Kept only while needed: they hold the defining scope's objects alive.
        self._names = names if self._declared is _UNRESOLVED else None

    def _settle_declared(self) -> bool:
        """Resolve a return annotation that named something not defined at decoration time;
        False while it still cannot be (or is not storable): the cache is then bypassed, since
        it could not hand back the declared type."""
        try:
            self._declared = _declared_type(self._fn, self._names)
        except TypeError as exc:
            self._log_once(exc, "@cached %s: the return type cannot be cached (%s)")
            return False
        if self._declared is _UNRESOLVED:
            self._log_once(NameError(), "@cached %s: the return annotation does not resolve (%s)")
            return False
        self._names = None
        return True

    def _as_declared(self, value: Any) -> Any:
        """``value`` as the declared return type; MISSING if it does not fit (an entry written
        before the type changed, say), which the caller treats as a miss."""
        declared = self._declared
        if declared is None:
            return value
        try:
            return coerce(value, declared)
        except SerializationError:
            return MISSING

    # -- the namespace --------------------------------------------------------------------------

    def resolve(self) -> Cache:
        """The namespace, looked up lazily: the default manager may change between calls."""
        manager = self._manager if self._manager is not None else default_manager()
        cache = self._cache
        if cache is not None and self._owner is manager:
            return cache
        cache = manager.namespaces.get(self._namespace)
        if cache is None:
            cache = manager.namespace(self._namespace, ttl=self._ttl)
        self._cache, self._owner = cache, manager
        return cache

    def _tags_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        """The call's tags: ``tags=`` itself, or what the callable makes of the arguments."""
        tags = self._tags
        if not callable(tags):
            return cast(tuple[str, ...], tags)
        made = tags(*args, **kwargs)
        try:
            return check_tags(made)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"the tags= function of {self._name}: {exc}") from None

    async def _get(self, cache: Cache, key: str, tags: tuple[str, ...]) -> Any:
        return await (cache._get_tagged(key, tags, MISSING) if tags else cache.get(key, MISSING))

    # -- calls ----------------------------------------------------------------------------------

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int) -> Any:
        key = self._key(args, kwargs, skip)
        try:
            cache = self.resolve()
        except ClosedError as exc:
            self._read_failed(exc)
            return await self._fn(*args, **kwargs)
        if self._declared is _UNRESOLVED and not self._settle_declared():
            return await self._fn(*args, **kwargs)
        tags = self._tags_of(args, kwargs) if self._tags else ()
        try:
            found = await self._get(cache, key, tags)
        except _READ_ERRORS as exc:
            self._read_failed(exc)
            found = MISSING
        if found is not MISSING:
            if self._stale_ttl is None:
                if self._declared is None:
                    return found
                value = self._as_declared(found)
                if value is not MISSING:
                    return value
            fresh, value = self._unwrap(cache, found)
            if fresh is not None and self._declared is not None:
                value = self._as_declared(value)
                fresh = None if value is MISSING else fresh
            if fresh is not None:
                if not fresh and key not in self._flights:
                    self._start(cache, key, args, kwargs, background=True)
                return value
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(cache, key, args, kwargs, background=False)
        flight.callers += 1
        ok, value = await flight.result()
        if ok:
            return value
        return await self._fn(*args, **kwargs)

    async def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int) -> bool:
        key = self._key(args, kwargs, skip)
        self._disown(key)
        return await self.resolve().delete(key)

    async def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int) -> Any:
        key = self._key(args, kwargs, skip)
        cache = self.resolve()
        self._disown(key)
        value = await self._fn(*args, **kwargs)
        if self._condition is None or self._condition(value):
            payload, _ = self._serialize(cache, value)
            tags = self._tags_of(args, kwargs) if self._tags else ()
            await cache._set_payload(key, payload, ttl=self._entry_ttl, tags=tags)
        else:
            await cache.delete(key)
        return value

    def _disown(self, key: str) -> None:
        """A computation already running for ``key`` started before the data changed: it still
        answers its callers, but must not store its (possibly outdated) result."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.store = False

    # -- the shared computation -----------------------------------------------------------------

    def _start(
        self,
        cache: Cache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        background: bool,
    ) -> Flight:
        flight = Flight()
        self._flights[key] = flight
        spawn(functools.partial(self._run, flight, cache, key, args, kwargs, background))
        return flight

    async def _run(
        self,
        flight: Flight,
        cache: Cache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        background: bool,
    ) -> None:
        try:
            lease = self._lease(cache, key) if self._lock else None
            if lease is None:
                value, copy = await self._compute(flight, cache, key, args, kwargs)
            else:
                value, copy = await self._compute_leased(lease, flight, cache, key, args, kwargs)
            # No caller can join from here on (nothing awaits before the flight is unlisted
            # below), so flight.callers is final: a value with one caller needs no copies.
            flight.succeed(value, self._copies(cache, value, copy, flight.callers))
        except BaseException as exc:
            flight.fail(exc)
            if not isinstance(exc, Exception):
                raise
            if background:
                self._log_once(exc, "@cached %s: a background refresh failed (%s)")
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    async def _compute(
        self, flight: Flight, cache: Cache, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, _Copy | None]:
        """The result, and a maker of copies of it when it was serialized on the way."""
        # Between a caller's miss and this task's start, another flight (or process) may have
        # stored the value: look again before computing.
        tags = self._tags_of(args, kwargs) if self._tags else ()
        found = await self._read_fresh(cache, key, tags)
        if found is not MISSING:
            return found, None
        value = await self._fn(*args, **kwargs)
        if not flight.store or (self._condition is not None and not self._condition(value)):
            return value, None
        try:
            payload, copy = self._serialize(cache, value)
        except SerializationError as exc:
            self._write_failed(exc)
            return value, _uncopyable
        try:
            await cache._set_payload(key, payload, ttl=self._entry_ttl, tags=tags)
        except _WRITE_ERRORS as exc:
            self._write_failed(exc)
        return value, copy

    async def _compute_leased(
        self,
        lease: Any,
        flight: Flight,
        cache: Cache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, _Copy | None]:
        try:
            held = lease(self._lease_name(key), LEASE_SECONDS, wait=LEASE_WAIT)
            await held.__aenter__()
        except BackendError as exc:
            self._read_failed(exc)
            return await self._compute(flight, cache, key, args, kwargs)
        try:
            value = await self._compute(flight, cache, key, args, kwargs)
        except BaseException as exc:
            try:
                await held.__aexit__(type(exc), exc, exc.__traceback__)
            except BackendError as release_exc:
                self._write_failed(release_exc)
            raise
        try:
            await held.__aexit__(None, None, None)
        except BackendError as exc:
            self._write_failed(exc)
        return value

    def _lease(self, cache: Cache, key: str) -> Any:
        """The namespace store's ``lease`` method, when it has one.

        Duck-typed on the Redis backend's: ``lease(name: bytes, ttl: float, wait: float)`` is an
        async context manager that waits up to ``wait`` seconds for the lease and yields whether
        it holds it. Held or not, the computation then looks at the cache again first, so the
        processes that waited find the holder's result instead of computing it again.
        """
        owner = self._owner
        if owner is None:
            return None
        try:
            store = owner.backend_of(self._namespace)
        except KeyError:
            return None
        lease = getattr(store, "lease", None)
        return lease if callable(lease) else None

    def _lease_name(self, key: str) -> bytes:
        # The lease lives in the shared store beside the entries: name it by a keyed digest so it
        # reveals neither the namespace nor the key (unkeyed when the manager has no keyring).
        keyring = self._owner.keyring if self._owner is not None else None
        secret = keyring.derive_index(b"acs1/decorator-lease") if keyring is not None else b""
        digest = hashlib.blake2b(
            self._namespace.encode("utf-8") + b"\x00" + key.encode("utf-8", "surrogatepass"),
            key=secret,
            digest_size=24,
        )
        return b"acs-lease:" + digest.hexdigest().encode("ascii")

    # -- entries --------------------------------------------------------------------------------

    async def _read_fresh(self, cache: Cache, key: str, tags: tuple[str, ...]) -> Any:
        try:
            found = await self._get(cache, key, tags)
        except _READ_ERRORS as exc:
            self._read_failed(exc)
            return MISSING
        if found is MISSING:
            return found
        if self._stale_ttl is None:
            return self._as_declared(found)
        fresh, value = self._unwrap(cache, found)
        return self._as_declared(value) if fresh else MISSING

    def _unwrap(self, cache: Cache, found: Any) -> tuple[bool | None, Any]:
        """``(fresh, value)`` of a stale-while-revalidate entry; ``(None, None)`` if malformed."""
        if type(found) is list and len(found) == 2:
            fresh_until, value = found
            if type(fresh_until) is float:
                return cache.clock() < fresh_until, value
        return None, None

    @property
    def _entry_ttl(self) -> float | None:
        if self._stale_ttl is None or self._ttl is None:
            return self._ttl
        return self._ttl + self._stale_ttl

    def _serialize(self, cache: Cache, value: Any) -> tuple[bytes, _Copy]:
        """The bytes to store for ``value``, and a maker of new copies of it decoded from them
        (SerializationError if the namespace's serializer cannot store it)."""
        if self._declared is not None:
            value = dump(value)
        if self._stale_ttl is None:
            payload = cache._dumps(value)
            return payload, functools.partial(_decode, cache, payload, False, self._declared)
        assert self._ttl is not None  # noqa: S101 - cached() requires ttl with stale_ttl
        fresh_for = self._ttl * (1.0 - EARLY_REFRESH * _jitter.random())
        payload = cache._dumps([float(cache.clock() + fresh_for), value])
        return payload, functools.partial(_decode, cache, payload, True, self._declared)

    def _copies(self, cache: Cache, value: Any, copy: _Copy | None, callers: int) -> _Copy | None:
        """How the callers after the first get their own copy of ``value`` (see :class:`Flight`).

        Decoded from the bytes the namespace's serializer made of it, so a caller that shared a
        computation gets what a cache hit would have given it. The bytes are made before any
        caller sees the value (one that mutates it then cannot reach the others' copies): the
        stored bytes when the result was written, else (not stored, or read from the cache)
        serialized here, once, if more than one caller waits. A value the serializer cannot
        store cannot be copied faithfully either: the other callers call the function
        themselves, as they would without a cache (such a result is never cached anyway).
        """
        if callers < 2 or immutable(value):
            return None
        if copy is not None:
            return copy
        declared = self._declared
        try:
            payload = cache._dumps(value if declared is None else dump(value))
        except SerializationError:
            return _uncopyable
        return functools.partial(_decode, cache, payload, False, declared)

    # -- failures -------------------------------------------------------------------------------

    def _read_failed(self, exc: BaseException) -> None:
        self._log_once(exc, "@cached %s: the cache failed (%s); calling the function directly")

    def _write_failed(self, exc: BaseException) -> None:
        self._log_once(exc, "@cached %s: a result was not cached (%s)")

    def _log_once(self, exc: BaseException, message: str) -> None:
        """Log a failure once per burst and kind: an outage must not flood the logs."""
        kind = type(exc)
        now = time.monotonic()
        if now - self._logged.get(kind, -_BURST_SECONDS) >= _BURST_SECONDS:
            self._logged[kind] = now
            _log.warning(message, self._name, kind.__name__)
