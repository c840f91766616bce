"""Rate limiting on a cache namespace: fixed and sliding windows, a decorator, ASGI middleware.

::

    limits = manager.namespace("ratelimit", backend="redis://127.0.0.1:6379/0")
    limiter = SlidingWindowLimiter(limits, limit=100, window=60)
    decision = await limiter.hit(user_id)      # Decision(allowed, remaining, reset_after)

Counters are ``Cache.incr`` calls, so they are atomic on every backend with atomic updates and
shared by every process using the same store. Identities are cache keys of a namespace that
hashes keys, so who was limited never appears in the store (a limiter refuses a namespace with
``hash_keys=False``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from .cache import Cache
from .clock import Clock
from .errors import CacheError, ConfigurationError

__all__ = [
    "Decision",
    "FixedWindowLimiter",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "SlidingWindowLimiter",
    "rate_limited",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_after: float
    """Seconds until the limit allows this identity again (or the window resets)."""


class RateLimitExceeded(CacheError):
    def __init__(self, decision: Decision) -> None:
        super().__init__(f"rate limit exceeded; retry in {decision.reset_after:.1f}s")
        self.decision = decision


class Limiter(Protocol):
    async def hit(self, identity: str) -> Decision: ...


class _WindowLimiter:
    __slots__ = ("_cache", "_clock", "limit", "window")
    _tag = ""

    def __init__(
        self, cache: Cache, *, limit: int, window: float, clock: Clock | None = None
    ) -> None:
        if not isinstance(cache, Cache):
            raise TypeError("a limiter needs a Cache namespace")
        if not cache.policy.hash_keys:
            raise ConfigurationError("a limiter's namespace must hash keys (identities are PII)")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ConfigurationError("limit must be a positive int")
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not (math.isfinite(window) and window > 0)
        ):
            raise ConfigurationError("window must be a positive number of seconds")
        self._cache = cache
        self._clock = clock or cache.clock
        self.limit = limit
        self.window = float(window)

    def _key(self, identity: str, index: int) -> str:
        if not isinstance(identity, str):
            raise TypeError("identities must be str")
        return f"{self._tag}:{index}:{identity}"


class FixedWindowLimiter(_WindowLimiter):
    """At most ``limit`` hits per identity in each aligned window of ``window`` seconds."""

    __slots__ = ()
    _tag = "fw"

    async def hit(self, identity: str) -> Decision:
        now = self._clock()
        index = math.floor(now / self.window)
        reset_after = (index + 1) * self.window - now
        count = await self._cache.incr(self._key(identity, index), 1, ttl=reset_after + 1)
        return Decision(count <= self.limit, max(0, self.limit - count), reset_after)


class SlidingWindowLimiter(_WindowLimiter):
    """Sliding-window estimate: the previous window's count weighted by its overlap."""

    __slots__ = ()
    _tag = "sw"

    async def hit(self, identity: str) -> Decision:
        now = self._clock()
        index = math.floor(now / self.window)
        into = now - index * self.window
        stored = await self._cache.get(self._key(identity, index - 1), 0)
        previous = stored if isinstance(stored, int) and not isinstance(stored, bool) else 0
        current = await self._cache.incr(
            self._key(identity, index), 1, ttl=2 * self.window - into + 1
        )
        weight = 1.0 - into / self.window
        estimate = previous * weight + current
        allowed = estimate <= self.limit
        if allowed:
            reset_after = self.window - into
        elif previous and current <= self.limit:
            # The estimate falls below the limit once enough of the previous window slid out.
            needed = (estimate - self.limit) / previous * self.window
            reset_after = min(needed, self.window - into)
        else:
            reset_after = self.window - into
        return Decision(allowed, max(0, self.limit - math.ceil(estimate)), max(reset_after, 0.0))


def rate_limited(
    limiter: Limiter, *, identity: Callable[..., str]
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Raise :class:`RateLimitExceeded` before calling the coroutine when ``identity(*args,
    **kwargs)`` is over its limit."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("rate_limited decorates coroutine functions")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            decision = await limiter.hit(identity(*args, **kwargs))
            if not decision.allowed:
                raise RateLimitExceeded(decision)
            return await fn(*args, **kwargs)

        return wrapper

    return decorate


Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class RateLimitMiddleware:
    """Plain ASGI: answers 429 with ``Retry-After`` when ``identity(scope)`` is over its limit.

    ``identity`` defaults to the client address; returning None lets a request through unlimited.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        identity: Callable[[Scope], str | None] = _client_host,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.identity = identity

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        who = self.identity(scope)
        if who is not None:
            decision = await self.limiter.hit(who)
            if not decision.allowed:
                body = b"Too Many Requests"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 429,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(max(1, math.ceil(decision.reset_after))).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
