"""Starlette and FastAPI helpers: open/close a manager with the app, inject namespaces.

::

    manager = CacheManager(keyring=Keyring.from_env())
    app = FastAPI(lifespan=cache_lifespan(manager))

    @app.get("/users/{uid}")
    async def user(uid: int, users: Cache = Depends(namespace_dependency("users", ttl=60))): ...

``cache_lifespan`` also puts the manager into the lifespan state (``request.state.cache_manager``),
which is where :func:`namespace_dependency` finds it. The response cache is per route,
``@cache_response(cache=ns, ttl=60)`` under the route decorator (:mod:`._route_cache`), or the plain
ASGI :class:`~aiocache_secure.integrations.asgi.CacheMiddleware` for a whole app. This module
imports Starlette (and FastAPI when installed); the rest of the package does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.requests import Request

from ..cache import Cache
from ..manager import CacheManager, default_manager
from ._responses import invalidate_tags, invalidate_url
from ._route_cache import cache_response

__all__ = [
    "cache_lifespan",
    "cache_response",
    "invalidate_tags",
    "invalidate_url",
    "namespace_dependency",
]

STATE_KEY = "cache_manager"


def cache_lifespan(
    manager: CacheManager | Callable[[], CacheManager],
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A ``lifespan=`` for Starlette/FastAPI that closes ``manager`` when the app stops.

    Pass a factory (``lambda: CacheManager(...)``) instead of a manager when the app may be
    started more than once in one process (tests): a closed manager cannot be reopened.
    """
    if not isinstance(manager, CacheManager) and not callable(manager):
        raise TypeError("cache_lifespan takes a CacheManager or a factory of one")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        opened = manager if isinstance(manager, CacheManager) else manager()
        async with opened:
            yield {STATE_KEY: opened}

    return lifespan


def namespace_dependency(
    name: str | Callable[[Request], str],
    *,
    manager: CacheManager | None = None,
    **options: Any,
) -> Callable[[Request], Cache]:
    """A dependency returning namespace ``name`` (``Depends(namespace_dependency("users"))``).

    ``name`` may be a function of the request, for per-user namespaces:
    ``namespace_dependency(lambda request: f"user:{request.state.uid}", private=True)``.
    ``options`` are :meth:`CacheManager.namespace` options. The manager is ``manager``, else the
    one :func:`cache_lifespan` opened, else the module-level default manager.
    """
    if not isinstance(name, str) and not callable(name):
        raise TypeError("name must be a namespace name or a function of the request")

    def dependency(request: Request) -> Cache:
        chosen = manager
        if chosen is None:
            chosen = getattr(request.state, STATE_KEY, None)
        if not isinstance(chosen, CacheManager):
            chosen = default_manager()
        return chosen.namespace(name if isinstance(name, str) else name(request), **options)

    return dependency
