"""aiohttp: the response cache per handler or as a middleware, and a manager tied to the app.

::

    @cache_response(cache=manager.namespace("pages"), ttl=60)
    async def article(request: web.Request) -> web.Response: ...

    app = web.Application(middlewares=[cache_middleware(manager.namespace("pages"), ttl=60)])
    setup(app, manager)                        # closes the manager on cleanup
    ...
    users = namespace(request, "users", ttl=60)   # in a handler

The caching rules are the ASGI middleware's (:mod:`._http`, :mod:`._responses`): same keys,
credentials, ``Cache-Control``, ``Vary`` and cookie rules, same ETags, ``304``, ``Age`` and
invalidation. The key holds the path the way aiohttp's router matches it (``%2F`` kept).
Handlers returning a ``web.Response`` with a bytes body are cached; streamed responses
(``web.StreamResponse`` written by the handler, files) are passed through uncached.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..cache import Cache
from ..manager import CacheManager
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SESSION_COOKIES,
    DEFAULT_VARY_HEADERS,
    UNSAFE_METHODS,
    HttpPolicy,
    PathRules,
    etag_matches,
    header_values,
    not_modified_headers,
)
from ._responses import ResponseStore, invalidate_tags, invalidate_url, is_success

__all__ = [
    "MANAGER_KEY",
    "cache_middleware",
    "cache_response",
    "invalidate_tags",
    "invalidation_middleware",
    "invalidate_url",
    "namespace",
    "setup",
]

MANAGER_KEY: Final = web.AppKey("aiocache_secure.manager", CacheManager)
Identity = Callable[[web.Request], "str | None | Awaitable[str | None]"]
Tags = Sequence[str] | Callable[[web.Request], Sequence[str]]


def setup(app: web.Application, manager: CacheManager) -> None:
    """Keep ``manager`` in ``app[MANAGER_KEY]`` and close it when the app cleans up."""
    app[MANAGER_KEY] = manager

    async def close(app: web.Application) -> None:
        await manager.aclose()

    app.on_cleanup.append(close)


def namespace(request: web.Request, name: str, **options: Any) -> Cache:
    """Namespace ``name`` of the manager :func:`setup` attached to the request's app."""
    return request.app[MANAGER_KEY].namespace(name, **options)


class _Front:
    """The response cache for aiohttp requests: shared by the middleware and the decorator."""

    __slots__ = ("_identity", "_tags", "_x_cache", "store")

    def __init__(
        self,
        cache: Cache,
        *,
        what: str,
        ttl: float,
        identity: Identity | None,
        vary_headers: Sequence[str],
        session_cookies: Sequence[str],
        public_cookies: Sequence[str],
        credential_headers: Sequence[str],
        per_credential: bool,
        x_cache_header: bool,
        max_body_bytes: int,
        tags: Tags | None = None,
        warn_uncached: bool = True,
        credential_query: Sequence[str] = (),
    ) -> None:
        if not isinstance(cache, Cache):
            raise TypeError("cache must be a namespace (CacheManager.namespace(...))")
        if identity is not None and not callable(identity):
            raise TypeError("identity must be a callable taking the request")
        if isinstance(tags, str):
            raise TypeError("tags is a sequence of tag names or a function of the request")
        policy = HttpPolicy(
            ttl=ttl,
            vary_headers=tuple(vary_headers),
            session_cookies=tuple(session_cookies),
            public_cookies=tuple(public_cookies),
            credential_headers=tuple(credential_headers),
            per_credential=per_credential,
            max_body_bytes=max_body_bytes,
            credential_query=tuple(credential_query),
        )
        self.store = ResponseStore(
            cache, policy, what=what, warn_uncached=warn_uncached and identity is None
        )
        self._identity = identity
        self._tags = tags
        self._x_cache = x_cache_header

    def _respond(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, outcome: str
    ) -> web.Response:
        response = web.Response(status=status, body=body)
        response.headers.popall("Content-Type", None)
        for name, value in headers:
            response.headers.add(name, value)
        if self._x_cache:
            response.headers["X-Cache"] = outcome
        return response

    def _tags_of(self, request: web.Request) -> Sequence[str]:
        tags = self._tags
        if tags is None:
            return ()
        return tuple(tags(request) if callable(tags) else tags)

    async def _invalidate(self, request: web.Request, response: web.StreamResponse) -> None:
        if is_success(response.status):
            locations = response.headers.getall("Location", []) + response.headers.getall(
                "Content-Location", []
            )
            await self.store.invalidate(
                scheme=request.scheme,
                host=request.host,
                path=request.path,
                locations=locations,
                tags=self._tags_of(request),
            )

    async def unsafe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # raised redirects (HTTPFound) are successes too
            await self._invalidate(request, exc)
            raise
        await self._invalidate(request, response)
        return response

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in UNSAFE_METHODS:
            return await self.unsafe(request, handler)
        if request.method not in ("GET", "HEAD"):
            return await handler(request)
        store = self.store
        headers = [(name.lower(), value) for name, value in request.headers.items()]
        identity = None
        if self._identity is not None:
            found_identity = self._identity(request)
            if not isinstance(found_identity, str | None):
                found_identity = await found_identity
            identity = found_identity
        key = store.key(
            scheme=request.scheme,
            host=request.host,
            path=request.path,
            # what aiohttp's router matches: %2F stays encoded
            raw_path=request.rel_url.path_safe,
            query=request.rel_url.raw_query_string,  # still encoded: "%26" is not "&"
            headers=headers,
            identity=identity,
        )
        if key is None:
            return await handler(request)
        tags = self._tags_of(request)
        if_none_match = header_values(headers, "if-none-match")
        found, generations = await store.lookup(
            key, store.generation_keys(request.host, request.path, tags)
        )
        if found is not None:
            age = ("Age", found.age(store.now()))
            if if_none_match and etag_matches(if_none_match, found.etag):
                return self._respond(304, [*not_modified_headers(found.headers), age], b"", "HIT")
            return self._respond(found.status, [*found.headers, age], found.body, "HIT")
        response = await handler(request)
        if self._x_cache and not response.prepared:
            response.headers["X-Cache"] = "MISS"
        if (
            request.method == "HEAD"
            or generations is None
            or type(response) is not web.Response
            or response.prepared
        ):
            return response
        payload = response.body
        if not isinstance(payload, bytes) or len(payload) > store.policy.max_body_bytes:
            return response
        response_headers = [
            (name.lower(), value)
            for name, value in response.headers.items()
            if name.lower() != "x-cache"
        ]
        if response.cookies:
            response_headers.append(("set-cookie", ""))
        store_for = store.policy.storable_ttl(response.status, response_headers)
        if store_for is None:
            return response
        etag = await store.store(
            key, generations, response.status, response_headers, payload, store_for
        )
        if "ETag" not in response.headers:
            response.headers["ETag"] = etag
        if if_none_match and etag_matches(if_none_match, etag):
            kept = not_modified_headers([*response_headers, ("etag", etag)])
            return self._respond(304, kept, b"", "MISS")
        return response


def cache_middleware(
    cache: Cache,
    *,
    ttl: float = 60.0,
    identity: Identity | None = None,
    vary_headers: Sequence[str] = DEFAULT_VARY_HEADERS,
    session_cookies: Sequence[str] = DEFAULT_SESSION_COOKIES,
    public_cookies: Sequence[str] = (),
    credential_headers: Sequence[str] = (),
    credential_query: Sequence[str] = (),
    per_credential: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    x_cache_header: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Middleware:
    """The response cache as an aiohttp middleware; options as
    :class:`~aiocache_secure.integrations.asgi.CacheMiddleware` (``identity`` takes the request,
    and may be a coroutine function). ``include``/``exclude`` match ``request.path``.
    """
    rules = PathRules.of(include, exclude)
    front = _Front(
        cache,
        what="aiohttp cache_middleware",
        ttl=ttl,
        identity=identity,
        vary_headers=vary_headers,
        session_cookies=session_cookies,
        public_cookies=public_cookies,
        credential_headers=credential_headers,
        credential_query=credential_query,
        per_credential=per_credential,
        x_cache_header=x_cache_header,
        max_body_bytes=max_body_bytes,
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and not rules.allows(request.path):
            return await handler(request)
        return await front.serve(request, handler)

    return middleware


def invalidation_middleware(cache: Cache) -> Middleware:
    """After every successful unsafe request, invalidate the responses stored in ``cache`` for
    its URL and locations: for apps that cache per handler (:func:`cache_response`) and whose
    unsafe handlers are not decorated. Caches nothing itself."""
    front = _Front(
        cache,
        what="aiohttp invalidation_middleware",
        ttl=60.0,
        identity=None,
        vary_headers=DEFAULT_VARY_HEADERS,
        session_cookies=DEFAULT_SESSION_COOKIES,
        public_cookies=(),
        credential_headers=(),
        per_credential=False,
        x_cache_header=False,
        max_body_bytes=DEFAULT_MAX_BODY_BYTES,
        warn_uncached=False,
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in UNSAFE_METHODS:
            return await front.unsafe(request, handler)
        return await handler(request)

    return middleware


def cache_response(
    cache: Cache,
    *,
    ttl: float = 60.0,
    identity: Identity | None = None,
    tags: Tags | None = None,
    vary_headers: Sequence[str] = DEFAULT_VARY_HEADERS,
    session_cookies: Sequence[str] = DEFAULT_SESSION_COOKIES,
    public_cookies: Sequence[str] = (),
    credential_headers: Sequence[str] = (),
    credential_query: Sequence[str] = (),
    per_credential: bool = False,
    x_cache_header: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Callable[[Handler], Handler]:
    """Cache one handler's responses (``@cache_response(cache=ns, ttl=60)`` above a handler).

    Same rules as :func:`cache_middleware`. ``identity(request)`` runs when the handler would,
    after the app's middlewares (so an auth middleware can set what it reads). ``tags`` (names,
    or a function of the request) are invalidated together by :func:`invalidate_tags`. On an
    unsafe method the handler's successful answer invalidates its URL, locations and tags.
    """
    front = _Front(
        cache,
        what="aiohttp cache_response",
        ttl=ttl,
        identity=identity,
        vary_headers=vary_headers,
        session_cookies=session_cookies,
        public_cookies=public_cookies,
        credential_headers=credential_headers,
        credential_query=credential_query,
        per_credential=per_credential,
        x_cache_header=x_cache_header,
        max_body_bytes=max_body_bytes,
        tags=tags,
    )

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def cached_handler(request: web.Request) -> web.StreamResponse:
            return await front.serve(request, handler)

        return cached_handler

    return decorate
