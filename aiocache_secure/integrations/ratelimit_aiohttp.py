"""Rate limits for aiohttp: a middleware for a whole app, a decorator per handler.

::

    limiter = FixedWindowLimiter(limits, limit=5, window=60, name="login")
    app = web.Application(middlewares=[rate_limit_middleware(site_limiter)])

    @rate_limit(limiter, key=lambda request: request.headers.get("X-Account"))
    async def login(request: web.Request) -> web.StreamResponse: ...

Both answer like the ASGI middleware (:mod:`aiocache_secure.ratelimit`): 429 over the limit and
503 when the limiter's store is unavailable and it fails closed, as RFC 9457 problem documents
with ``Retry-After``; allowed responses carry ``RateLimit-Policy`` and ``RateLimit`` (not a
response the handler already started streaming). ``identity``/``key`` returns the identity to
count, or None to let the request through unlimited; it defaults to the peer address.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..ratelimit import (
    Decision,
    Limiter,
    RateLimitExceeded,
    RateLimitUnavailable,
    enforce,
    problem_response,
)

__all__ = ["rate_limit", "rate_limit_middleware", "remote"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Key = Callable[[web.Request], str | None | Awaitable[str | None]]


def remote(request: web.Request) -> str | None:
    """The peer address (behind a proxy, resolve it first, e.g. with aiohttp-remotes)."""
    return request.remote


async def _identity(key: Key, request: web.Request) -> str | None:
    who = key(request)
    if inspect.isawaitable(who):
        return await who
    return who


async def _guarded(
    limiter: Limiter,
    key: Key,
    fail_open: bool | None,
    headers: bool,
    request: web.Request,
    handler: Handler,
) -> web.StreamResponse:
    who = await _identity(key, request)
    if who is None:
        return await handler(request)
    try:
        decision: Decision = await enforce(limiter, who, fail_open=fail_open)
    except (RateLimitExceeded, RateLimitUnavailable) as exc:
        status, fields, body = problem_response(exc)
        return web.Response(
            status=status,
            body=body,
            headers=[(name, value) for name, value in fields if name != "Content-Length"],
        )
    response = await handler(request)
    if headers and not response.prepared:
        for name, value in decision.headers():
            response.headers.add(name, value)  # list fields: an app limit and a route limit
    return response


def _check(fail_open: bool | None, key: object) -> None:
    if fail_open is not None and not isinstance(fail_open, bool):
        raise TypeError("fail_open must be True, False or None (the limiter's setting)")
    if not callable(key):
        raise TypeError("the identity must be a callable taking the request")


def rate_limit_middleware(
    limiter: Limiter,
    *,
    identity: Key = remote,
    fail_open: bool | None = None,
    headers: bool = True,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """One limit for every request of the app (``web.Application(middlewares=[...])``)."""
    _check(fail_open, identity)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _guarded(limiter, identity, fail_open, headers, request, handler)

    return middleware


def rate_limit(
    limiter: Limiter,
    *,
    key: Key = remote,
    fail_open: bool | None = None,
    headers: bool = True,
) -> Callable[[Handler], Handler]:
    """A per-handler limit: decorate the handler function a route points to."""
    _check(fail_open, key)

    def decorate(handler: Handler) -> Handler:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError("rate_limit decorates coroutine handlers")

        @functools.wraps(handler)
        async def limited(request: web.Request) -> web.StreamResponse:
            return await _guarded(limiter, key, fail_open, headers, request, handler)

        return limited

    return decorate
