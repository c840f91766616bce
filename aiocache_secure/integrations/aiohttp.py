"""aiohttp: the response cache as a middleware, and a manager tied to the app's lifetime.

::

    app = web.Application(middlewares=[cache_middleware(manager.namespace("pages"), ttl=60)])
    setup(app, manager)                        # closes the manager on cleanup
    ...
    users = namespace(request, "users", ttl=60)   # in a handler

The caching rules are the ASGI middleware's (:mod:`._http`): same keys, same ``Cache-Control``,
``Vary``, cookie and credential rules, same ETags and ``304``. Handlers returning a
``web.Response`` with a bytes body are cached; streamed responses (``web.StreamResponse`` written
by the handler, files) are passed through uncached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..cache import MISSING, Cache
from ..errors import CacheError
from ..manager import CacheManager
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SESSION_COOKIES,
    DEFAULT_VARY_HEADERS,
    BurstLog,
    HttpPolicy,
    etag_matches,
    header_values,
    not_modified_headers,
    pack_entry,
    unpack_entry,
)

__all__ = ["MANAGER_KEY", "cache_middleware", "namespace", "setup"]

MANAGER_KEY: Final = web.AppKey("aiocache_secure.manager", CacheManager)


def setup(app: web.Application, manager: CacheManager) -> None:
    """Keep ``manager`` in ``app[MANAGER_KEY]`` and close it when the app cleans up."""
    app[MANAGER_KEY] = manager

    async def close(app: web.Application) -> None:
        await manager.aclose()

    app.on_cleanup.append(close)


def namespace(request: web.Request, name: str, **options: Any) -> Cache:
    """Namespace ``name`` of the manager :func:`setup` attached to the request's app."""
    return request.app[MANAGER_KEY].namespace(name, **options)


def cache_middleware(
    cache: Cache,
    *,
    ttl: float = 60.0,
    identity: Callable[[web.Request], str | None] | None = None,
    vary_headers: Sequence[str] = DEFAULT_VARY_HEADERS,
    session_cookies: Sequence[str] = DEFAULT_SESSION_COOKIES,
    x_cache_header: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Middleware:
    """The response cache as an aiohttp middleware; options as
    :class:`~aiocache_secure.integrations.asgi.CacheMiddleware` (``identity`` takes the request).
    """
    if not isinstance(cache, Cache):
        raise TypeError("cache must be a namespace (CacheManager.namespace(...))")
    policy = HttpPolicy(
        ttl=ttl,
        vary_headers=tuple(vary_headers),
        session_cookies=tuple(session_cookies),
        max_body_bytes=max_body_bytes,
    )
    log = BurstLog("aiohttp cache_middleware")

    def respond(
        status: int, headers: Sequence[tuple[str, str]], body: bytes, outcome: str
    ) -> web.Response:
        response = web.Response(status=status, body=body)
        response.headers.popall("Content-Type", None)
        for name, value in headers:
            response.headers.add(name, value)
        if x_cache_header:
            response.headers["X-Cache"] = outcome
        return response

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return await handler(request)
        headers = [(name.lower(), value) for name, value in request.headers.items()]
        key = policy.request_key(
            scheme=request.scheme,
            host=request.host,
            path=request.path,
            query=request.query_string,
            headers=headers,
            identity=identity(request) if identity is not None else None,
        )
        if key is None:
            return await handler(request)
        if_none_match = header_values(headers, "if-none-match")
        try:
            found = unpack_entry(await cache.get(key, MISSING))
        except CacheError as exc:
            log.failed(exc)
            found = None
        if found is not None:
            status, stored, body, etag = found
            if if_none_match and etag_matches(if_none_match, etag):
                return respond(304, not_modified_headers(stored), b"", "HIT")
            return respond(status, stored, body, "HIT")
        response = await handler(request)
        if x_cache_header and not response.prepared:
            response.headers["X-Cache"] = "MISS"
        if request.method == "HEAD" or type(response) is not web.Response or response.prepared:
            return response
        payload = response.body
        if not isinstance(payload, bytes) or len(payload) > policy.max_body_bytes:
            return response
        response_headers = [
            (name.lower(), value)
            for name, value in response.headers.items()
            if name.lower() != "x-cache"
        ]
        if response.cookies:
            response_headers.append(("set-cookie", ""))
        store_for = policy.storable_ttl(response.status, response_headers)
        if store_for is None:
            return response
        entry, etag = pack_entry(response.status, response_headers, payload)
        if "ETag" not in response.headers:
            response.headers["ETag"] = etag
        try:
            await cache.set(key, entry, ttl=store_for)
        except CacheError as exc:
            log.failed(exc)
        if if_none_match and etag_matches(if_none_match, etag):
            return respond(304, not_modified_headers(entry_headers(entry)), b"", "MISS")
        return response

    return middleware


def entry_headers(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in entry["h"]]
