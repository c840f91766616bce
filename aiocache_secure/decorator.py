"""``@cached``: cache a coroutine function's results in a namespace.

::

    @cached(namespace="profiles", ttl=60)
    async def load_profile(user_id: int) -> dict[str, Any]: ...

    await load_profile(42)                  # computed once, then served from the namespace
    await load_profile.invalidate(42)       # drop that entry
    await load_profile.refresh(42)          # recompute and store now
    load_profile.cache                      # the namespace (a Cache)

Rules, each chosen so that the cache can never change what the application computes:

* **Keys** are built from the arguments bound to the signature, each value type-tagged
  (:mod:`aiocache_secure.callkeys`), prefixed with the function's module and qualified name
  (and, for a closure, what its free variables held); ``self``/``cls`` are left out.
  ``key=`` takes a template (``"user:{user_id}"``) or a callable instead; those keys are used
  verbatim.
* **A cached ``None`` is a hit.** Exceptions are never cached; ``condition=`` can veto a result.
* **Single flight**: concurrent callers of one key in this process share one execution
  (:mod:`aiocache_secure.flight`); cancelling one caller does not cancel it for the others.
  Each caller gets its own result: the first the function's object, the others copies decoded
  from the bytes it was stored as (immutable values are shared).
  With ``lock=True`` and a backend that offers a distributed lease, processes share it too.
* **Stale-while-revalidate** (``stale_ttl=``): entries stay fresh for ``ttl`` seconds (minus up to
  10 % random jitter, so keys written together do not expire together), then are served stale for
  up to ``stale_ttl`` more seconds while one background refresh runs.
* **The cache never makes the application fail**: when the store fails (``BackendError``), the
  manager was closed, an entry fails authentication under ``strict=True``, or a result cannot be
  stored (``SerializationError``, ``ValueTooLarge``), the function's own result is returned; the
  failure is logged once per burst. ``invalidate`` and ``refresh`` are explicit cache operations
  and do raise.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from .cache import Cache
from .cached_calls import EARLY_REFRESH, LEASE_SECONDS, LEASE_WAIT, Core
from .callkeys import METHOD_FIRST_PARAMS
from .manager import CacheManager
from .policy import MAX_TTL, Seconds, check_ttl, validate_namespace_name
from .tags import check_tags

__all__ = ["EARLY_REFRESH", "LEASE_SECONDS", "LEASE_WAIT", "BoundCached", "Cached", "cached"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")


class Cached(Generic[P, R]):
    """A cached coroutine function, as returned by :func:`cached`.

    Calling it returns the function's result (from the cache when possible). It keeps the
    function's name, docstring, signature and type hints, and binds like a method when it is
    defined in a class.
    """

    def __init__(self, core: Core, fn: Callable[P, Awaitable[R]]) -> None:
        self._core = core
        self._skip = 1 if core.first_param in METHOD_FIRST_PARAMS else 0
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<cached {self._core._name}>"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._core.call(args, kwargs, self._skip)
        return result

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry of this call; True if there was one. Backend errors propagate."""
        return await self._core.invalidate(args, kwargs, self._skip)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now and store its result. Backend errors propagate."""
        result: R = await self._core.refresh(args, kwargs, self._skip)
        return result

    @property
    def cache(self) -> Cache:
        """The namespace holding this function's entries."""
        return self._core.resolve()

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self: Cached[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> BoundCached[P2, R]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return BoundCached(self._core, instance)


class BoundCached(Generic[P, R]):
    """A cached method bound to its instance (or class, for a class method)."""

    __slots__ = ("__self__", "_core")

    def __init__(self, core: Core, instance: object) -> None:
        self._core = core
        self.__self__ = instance

    def __repr__(self) -> str:
        return f"<bound cached {self._core._name}>"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._core.call((self.__self__, *args), kwargs, 1)
        return result

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        return await self._core.invalidate((self.__self__, *args), kwargs, 1)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._core.refresh((self.__self__, *args), kwargs, 1)
        return result

    @property
    def cache(self) -> Cache:
        return self._core.resolve()


class _ClassMethod:
    """``@cached`` over ``@classmethod``: binds to the class whatever the Python version."""

    def __init__(self, inner: Cached[Any, Any]) -> None:
        self._inner = inner
        self.__wrapped__ = inner

    def __get__(self, instance: object, owner: type[Any] | None = None) -> BoundCached[Any, Any]:
        return BoundCached(self._inner._core, owner if owner is not None else type(instance))


def cached(
    namespace: str,
    *,
    ttl: Seconds | None = None,
    manager: CacheManager | None = None,
    key: str | Callable[..., str] | None = None,
    condition: Callable[[Any], bool] | None = None,
    stale_ttl: Seconds | None = None,
    lock: bool = False,
    tags: Sequence[str] | Callable[..., Sequence[str]] = (),
) -> Callable[[Callable[P, Awaitable[R]]], Cached[P, R]]:
    """Cache a coroutine function's results in namespace ``namespace``.

    ``ttl``: seconds an entry lives (``None``: the namespace's default). ``manager``: the
    :class:`CacheManager` owning the namespace (default: the module-level default manager, looked
    up at the first call, not at decoration). An existing namespace of that name is reused as it
    is; otherwise it is created with ``ttl``. ``key``: a template string such as
    ``"user:{user_id}"`` or a callable taking the call's arguments and returning a ``str``.
    ``condition``: ``condition(result)`` false → the result is returned but not stored.
    ``stale_ttl``: serve an expired entry for this many more seconds while it is refreshed in the
    background (needs ``ttl``). ``lock``: share a computation across processes through the store's
    distributed lease, when it has one; otherwise only within this process.
    ``tags``: tag names for every entry (see :meth:`Cache.invalidate_tags`), or a callable taking
    the call's arguments (as ``key=`` does) and returning them; the entry and its tags' records
    are read in one batch.
    """
    namespace = validate_namespace_name(namespace)
    if ttl is not None:
        ttl = check_ttl(ttl)
    if stale_ttl is not None:
        stale_ttl = check_ttl(stale_ttl, "stale_ttl")
        if ttl is None:
            raise TypeError("stale_ttl= needs ttl= (how long an entry stays fresh)")
        if ttl + stale_ttl > MAX_TTL:
            raise ValueError(f"ttl + stale_ttl must be at most {MAX_TTL:.0f} seconds (100 years)")
    if manager is not None and not isinstance(manager, CacheManager):
        raise TypeError("manager must be a CacheManager")
    if condition is not None and not callable(condition):
        raise TypeError("condition must be a callable taking the result")
    if not isinstance(lock, bool):
        raise TypeError("lock must be True or False")
    if not callable(tags):
        tags = check_tags(tags)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Cached[P, R]:
        target: Any = fn
        kind: type[Any] | None = None
        if isinstance(fn, staticmethod | classmethod):
            kind, target = type(fn), fn.__func__
        if not (
            inspect.iscoroutinefunction(target)
            or inspect.iscoroutinefunction(inspect.unwrap(target))
        ):
            raise TypeError("@cached decorates coroutine functions (async def)")
        # The names visible where the function is defined, for a return annotation that names
        # a local class (under postponed evaluation of annotations, PEP 563).
        names = dict(sys._getframe(1).f_locals)
        core = Core(
            target,
            namespace=namespace,
            ttl=ttl,
            manager=manager,
            key=key,
            condition=condition,
            stale_ttl=stale_ttl,
            lock=lock,
            names=names,
            tags=tags,
        )
        wrapped: Cached[P, R] = Cached(core, target)
        if kind is staticmethod:
            return staticmethod(wrapped)  # type: ignore[return-value]
        if kind is classmethod:
            return _ClassMethod(wrapped)  # type: ignore[return-value]
        return wrapped

    return decorate
