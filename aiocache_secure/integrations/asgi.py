"""``CacheMiddleware``: a plain ASGI response cache (no framework import).

::

    app = CacheMiddleware(app, cache=manager.namespace("pages", ttl=60), ttl=60)

The rules (what is stored, for whom, for how long) live in :mod:`._http`, the store and its
invalidation in :mod:`._responses`; both are shared with the aiohttp middleware and the per-route
``cache_response``. This module only speaks ASGI: it holds the response start until the first
body message, so that a complete single-message body gets its ETag (and a ``304`` when the
client already has it) on the very first answer; a streamed body is passed through chunk by chunk
as it comes and stored once complete, if it stayed under ``max_body_bytes``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from ..cache import Cache
from ._declared import app_reads, with_reads
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SESSION_COOKIES,
    DEFAULT_VARY_HEADERS,
    UNSAFE_METHODS,
    Headers,
    HttpPolicy,
    PathRules,
    Stored,
    etag_matches,
    header_values,
    lower_pairs,
    not_modified_headers,
    stored_headers,
)
from ._responses import (
    Generations,
    ResponseStore,
    invalidate_tags,
    invalidate_url,
    is_success,
)

__all__ = ["CacheMiddleware", "InvalidationMiddleware", "invalidate_tags", "invalidate_url"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LOCATIONS: Final = (b"location", b"content-location")


def _raw(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def scope_path(scope: Scope) -> tuple[str, str]:
    """``(decoded path, raw path)`` of an HTTP scope: both are keyed, since routers differ on
    which one they route (aiohttp-style routers keep ``%2F``; Starlette decodes)."""
    root = scope.get("root_path", "")
    path = root + scope.get("path", "")
    raw = scope.get("raw_path")
    if not raw:
        return path, path
    # Some servers and test transports leave the query on raw_path; the spec does not.
    return path, root + raw.partition(b"?")[0].decode("latin-1")


def scope_key(
    store: ResponseStore,
    scope: Scope,
    headers: Headers,
    identity: str | None,
    paths: tuple[str, str] | None = None,
    host: str | None = None,
) -> str | None:
    path, raw_path = scope_path(scope) if paths is None else paths
    return store.key(
        scheme=scope.get("scheme", "http"),
        host=", ".join(header_values(headers, "host")) if host is None else host,
        path=path,
        raw_path=raw_path,
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        identity=identity,
    )


class CacheMiddleware:
    """Cache ``GET``/``HEAD`` responses of ``app`` in the namespace ``cache``.

    ``ttl``: the longest an entry lives (a response's ``s-maxage``/``max-age`` can shorten it).
    ``identity(scope) -> str | None``: who the caller is. A credentialed request (any cookie
    outside ``public_cookies``, ``Authorization``, an API-key header or one of
    ``credential_headers``, or a query parameter named by ``credential_query``) is cached under
    its identity when this returns a string, else under
    a keyed hash of its credentials when ``per_credential`` is true, else not at all (the
    default; logged once at start-up).
    ``include``/``exclude``: path globs of the requests cached (default: all).
    ``vary_headers``: request headers always part of the key; a response whose ``Vary`` names
    any other header is not stored. ``x_cache_header``: add ``X-Cache: HIT|MISS``.
    ``max_body_bytes``: larger bodies are served but not stored.

    A successful ``POST``/``PUT``/``PATCH``/``DELETE`` through the middleware invalidates the
    stored responses of its URL and of its same-origin ``Location``/``Content-Location``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: Cache,
        ttl: float = 60.0,
        identity: Callable[[Scope], str | None] | None = None,
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
    ) -> None:
        if not isinstance(cache, Cache):
            raise TypeError("cache must be a namespace (CacheManager.namespace(...))")
        if identity is not None and not callable(identity):
            raise TypeError("identity must be a callable taking the ASGI scope")
        self.app = app
        self.cache = cache
        self.policy = HttpPolicy(
            ttl=ttl,
            vary_headers=tuple(vary_headers),
            session_cookies=tuple(session_cookies),
            public_cookies=tuple(public_cookies),
            credential_headers=tuple(credential_headers),
            per_credential=per_credential,
            max_body_bytes=max_body_bytes,
            credential_query=tuple(credential_query),
        )
        self.rules = PathRules.of(include, exclude)
        self.store = ResponseStore(
            cache, self.policy, what="CacheMiddleware", warn_uncached=identity is None
        )
        self._identity = identity
        self._x_cache = x_cache_header
        self._settled = False

    def _settle(self, scope: Scope) -> None:
        """Key on what any route of the wrapped app reads (:mod:`._declared`), once routes
        exist: at the first request."""
        self._settled = True
        reads = app_reads(self.app, scope.get("app"))
        policy = with_reads(self.policy, reads)
        if policy is not None and policy is not self.policy:
            self.policy = policy
            self.store = ResponseStore(
                self.cache, policy, what="CacheMiddleware", warn_uncached=False
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._settled:
            self._settle(scope)
        if method in UNSAFE_METHODS:
            await self.app(scope, receive, _Invalidator(self.store, scope, send))
            return
        paths = scope_path(scope)
        if method not in ("GET", "HEAD") or not self.rules.allows(paths[0]):
            await self.app(scope, receive, send)
            return
        headers = lower_pairs(scope.get("headers", ()))
        identity = self._identity(scope) if self._identity is not None else None
        host = ", ".join(header_values(headers, "host"))
        key = scope_key(self.store, scope, headers, identity, paths, host)
        if key is None:
            await self.app(scope, receive, send)
            return
        if_none_match = header_values(headers, "if-none-match")
        generation_keys = self.store.generation_keys(host, paths[0])
        found, generations = await self.store.lookup(key, generation_keys)
        if found is not None:
            await self._replay(found, method == "HEAD", if_none_match, send)
            return
        if method == "HEAD" or generations is None:
            # A HEAD answer has no body to store; the next GET fills the entry.
            await self.app(scope, receive, send)
            return
        recorder = _Recorder(self, key, generations, if_none_match, send)
        await self.app(scope, receive, recorder)

    async def _replay(
        self, found: Stored, head: bool, if_none_match: list[str], send: Send
    ) -> None:
        age = ("age", found.age(self.store.now()))
        if if_none_match and etag_matches(if_none_match, found.etag):
            await self._send(send, 304, [*not_modified_headers(found.headers), age], b"", "HIT")
            return
        raw = [*found.raw_headers, (b"age", age[1].encode("ascii"))]
        if self._x_cache:
            raw.append((b"x-cache", b"HIT"))
        await send({"type": "http.response.start", "status": found.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if head else found.body})

    async def _send(
        self, send: Send, status: int, headers: Headers, body: bytes, outcome: str
    ) -> None:
        if self._x_cache:
            headers = [*headers, ("x-cache", outcome)]
        await send({"type": "http.response.start", "status": status, "headers": _raw(headers)})
        await send({"type": "http.response.body", "body": body})


class InvalidationMiddleware:
    """Invalidate, after every successful ``POST``/``PUT``/``PATCH``/``DELETE`` through ``app``,
    the responses stored in ``cache`` for its URL and its same-origin ``Location`` and
    ``Content-Location``: for apps that cache per route (``cache_response``) and whose unsafe
    routes are not decorated. Caches nothing itself. (``CacheMiddleware`` does this already.)
    """

    def __init__(self, app: ASGIApp, *, cache: Cache) -> None:
        self.app = app
        policy = HttpPolicy(ttl=60.0)
        self.store = ResponseStore(
            cache, policy, what="InvalidationMiddleware", warn_uncached=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in UNSAFE_METHODS:
            send = _Invalidator(self.store, scope, send)
        await self.app(scope, receive, send)


class _Invalidator:
    """The ``send`` handed to the app for an unsafe request: a successful answer invalidates
    its URL and locations before it leaves, so the client's next ``GET`` is fresh."""

    __slots__ = ("_scope", "_send", "_store")

    def __init__(self, store: ResponseStore, scope: Scope, send: Send) -> None:
        self._store = store
        self._scope = scope
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and is_success(message["status"]):
            raw = message.get("headers", ())
            locations = [v.decode("latin-1") for k, v in raw if k.lower() in _LOCATIONS]
            headers = lower_pairs(self._scope.get("headers", ()))
            await self._store.invalidate(
                scheme=self._scope.get("scheme", "http"),
                host=", ".join(header_values(headers, "host")),
                path=scope_path(self._scope)[0],
                locations=locations,
            )
        await self._send(message)


class _Recorder:
    """The ``send`` handed to the app on a miss: forwards the response and records it."""

    __slots__ = (
        "_chunks",
        "_generations",
        "_headers",
        "_if_none_match",
        "_key",
        "_middleware",
        "_pending",
        "_send",
        "_size",
        "_status",
        "_ttl",
    )

    def __init__(
        self,
        middleware: CacheMiddleware,
        key: str,
        generations: Generations,
        if_none_match: list[str],
        send: Send,
    ) -> None:
        self._middleware = middleware
        self._key = key
        self._generations = generations
        self._if_none_match = if_none_match
        self._send = send
        self._pending: Message | None = None
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._ttl: float | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = message["status"]
            self._headers = lower_pairs(message.get("headers", ()))
            self._ttl = self._middleware.policy.storable_ttl(self._status, self._headers)
            if self._ttl is None:
                await self._forward_start(message)
            else:
                self._pending = message
            return
        if kind != "http.response.body":
            self._ttl = None
            await self._flush()
            await self._send(message)
            return
        if self._ttl is None:
            await self._send(message)
            return
        chunk: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._pending is not None and not more:
            self._pending = None
            await self._complete_at_once(chunk)
            return
        await self._flush()
        await self._send(message)
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._middleware.policy.max_body_bytes:
            self._ttl, self._chunks = None, []
        elif not more:
            body = b"".join(self._chunks)
            await self._middleware.store.store(
                self._key, self._generations, self._status, self._headers, body, self._ttl
            )

    async def _complete_at_once(self, body: bytes) -> None:
        middleware, ttl = self._middleware, self._ttl
        assert ttl is not None  # noqa: S101 - only called for storable responses
        if len(body) > middleware.policy.max_body_bytes:
            await middleware._send(self._send, self._status, self._headers, body, "MISS")
            return
        kept, etag = stored_headers(self._headers, body)
        if self._if_none_match and etag_matches(self._if_none_match, etag):
            headers = not_modified_headers(kept)
            await middleware._send(self._send, 304, headers, b"", "MISS")
        else:
            headers = self._headers
            if not header_values(headers, "etag"):
                headers = [*headers, ("etag", etag)]
            await middleware._send(self._send, self._status, headers, body, "MISS")
        await middleware.store.store(
            self._key, self._generations, self._status, self._headers, body, ttl
        )

    async def _flush(self) -> None:
        if self._pending is not None:
            start, self._pending = self._pending, None
            await self._forward_start(start)

    async def _forward_start(self, start: Message) -> None:
        if self._middleware._x_cache:
            start = {**start, "headers": [*start.get("headers", ()), (b"x-cache", b"MISS")]}
        await self._send(start)
