"""Rate limits per route for FastAPI (and Starlette's exception handlers).

::

    limiter = SlidingWindowLimiter(limits, limit=5, window=60, name="login")
    app = FastAPI()
    add_rate_limit_handlers(app)        # 429/503 as application/problem+json

    @app.post("/login", dependencies=[Depends(rate_limit(limiter))])
    async def login(...): ...

``key`` is a dependency itself: a function FastAPI can call (it may take ``request: Request``
or depend on the app's authentication dependency) returning the identity to count, or None to
let the request through unlimited. A one-argument function without annotations is called with
the request. It defaults to the client address.

Over the limit the dependency raises :class:`~aiocache_secure.ratelimit.RateLimitExceeded`; when
the limiter's store is unavailable and it fails closed,
:class:`~aiocache_secure.ratelimit.RateLimitUnavailable`. :func:`add_rate_limit_handlers` turns
both into RFC 9457 problem documents with ``Retry-After`` and the ``RateLimit`` fields. An app
without a handler for them still answers 429/503 with the same fields (FastAPI's own
``{"detail": ...}`` body), never a 500. Allowed responses carry ``RateLimit`` and
``RateLimit-Policy`` unless the route returns a ``Response`` object itself (FastAPI then drops
headers set by dependencies).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import CacheError
from ..ratelimit import (
    Decision,
    Limiter,
    RateLimitExceeded,
    RateLimitUnavailable,
    enforce,
    problem_response,
)

__all__ = [
    "add_rate_limit_handlers",
    "client_host",
    "rate_limit",
    "rate_limit_exception_handler",
]


def client_host(request: Request) -> str | None:
    """The client address (behind a proxy, run the server with its forwarded-headers option)."""
    return request.client.host if request.client else None


def _as_dependency(key: Callable[..., Any]) -> Callable[..., Any]:
    if not callable(key):
        raise TypeError("key must be a callable")
    params = list(inspect.signature(key).parameters.values())
    if len(params) != 1 or params[0].annotation is not inspect.Parameter.empty:
        return key

    async def by_request(request: Request) -> str | None:
        who = key(request)
        if inspect.isawaitable(who):
            who = await who
        return who  # type: ignore[no-any-return]

    return by_request


def _handled(app: Any, exc: CacheError) -> bool:
    handlers = getattr(app, "exception_handlers", None) or {}
    return any(cls in handlers for cls in type(exc).__mro__ if issubclass(cls, CacheError))


def rate_limit(
    limiter: Limiter,
    *,
    key: Callable[..., Any] = client_host,
    fail_open: bool | None = None,
    headers: bool = True,
) -> Callable[..., Awaitable[Decision | None]]:
    """A dependency counting one hit of ``key``'s identity (``Depends(rate_limit(limiter))``).

    Returns the :class:`~aiocache_secure.ratelimit.Decision` (None when ``key`` gave None).
    ``fail_open``: see :func:`~aiocache_secure.ratelimit.enforce` (None follows the limiter).
    ``headers=False`` leaves the ``RateLimit`` fields off allowed responses.
    """
    if fail_open is not None and not isinstance(fail_open, bool):
        raise TypeError("fail_open must be True, False or None (the limiter's setting)")
    identity = _as_dependency(key)

    async def dependency(
        request: Request, response: Response, who: str | None = Depends(identity)
    ) -> Decision | None:
        if who is None:
            return None
        try:
            decision = await enforce(limiter, who, fail_open=fail_open)
        except (RateLimitExceeded, RateLimitUnavailable) as exc:
            if _handled(request.app, exc):
                raise
            raise HTTPException(exc.status, str(exc), dict(exc.headers())) from exc
        if headers:
            for name, value in decision.headers():
                response.headers.append(name, value)  # list fields: one member per limit
        return decision

    return dependency


async def rate_limit_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette/FastAPI handler: 429 or 503 as ``application/problem+json``."""
    if not isinstance(exc, RateLimitExceeded | RateLimitUnavailable):
        raise exc
    status, fields, body = problem_response(exc)
    response = Response(body, status_code=status)
    for name, value in fields:
        response.headers[name] = value
    return response


def add_rate_limit_handlers(app: Any) -> None:
    """Register :func:`rate_limit_exception_handler` for both rate-limit exceptions, so a
    ``RateLimitExceeded`` raised anywhere in a route (``@rate_limited`` service code too)
    becomes a 429 problem document."""
    app.add_exception_handler(RateLimitExceeded, rate_limit_exception_handler)
    app.add_exception_handler(RateLimitUnavailable, rate_limit_exception_handler)
