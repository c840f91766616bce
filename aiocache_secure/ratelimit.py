"""Rate limiting on a cache namespace: fixed and sliding windows, a decorator, ASGI middleware.

::

    limits = manager.namespace("ratelimit", backend="redis://127.0.0.1:6379/0")
    limiter = SlidingWindowLimiter(limits, limit=100, window=60)
    decision = await limiter.hit(user_id)      # Decision(allowed, remaining, reset_after, ...)

Counters are ``Cache.incr`` calls, so they are atomic on every backend with atomic updates and
shared by every process using the same store. Identities are cache keys of a namespace that
hashes keys, so who was limited never appears in the store (a limiter refuses a namespace with
``hash_keys=False``).

A limiter also refuses namespaces that would quietly forget its counters, since each forgotten
counter is a fresh allowance: a ``max_ttl`` shorter than the counters must live, ``ttl_jitter``
(which shortens lifetimes at random), and an evicting store (``max_entries``/``max_bytes``).

Failure mode. When the store fails (``BackendError``, or an update that keeps losing its race),
a limiter either lets the request through (``fail_open=True``: the decision is ``degraded``) or
raises :class:`RateLimitUnavailable`, which the web layers answer with ``503`` and
``Retry-After``. Both are logged once per burst of failures. ``fail_open`` defaults to the
namespace's own ``fail_open``, which defaults to False: an outage of the store must not switch
off the protection a limiter exists for (brute force, credential stuffing, cost control), so
letting traffic through unlimited is a choice someone has to write down.

:func:`enforce` is the one place that turns a limiter's answer into "go on", a
:class:`RateLimitExceeded` (429) or a :class:`RateLimitUnavailable` (503); the decorator, the
ASGI middleware, the FastAPI dependency (:mod:`aiocache_secure.integrations.ratelimit_fastapi`)
and the aiohttp middleware and decorator (:mod:`aiocache_secure.integrations.ratelimit_aiohttp`)
all call it. :func:`problem_response` renders either exception as an RFC 9457
``application/problem+json`` answer with the ``RateLimit``/``RateLimit-Policy`` fields of the
IETF httpapi ratelimit-headers draft and ``Retry-After``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from . import audit
from .cache import Cache
from .clock import Clock
from .errors import (
    BackendError,
    BackendUnavailable,
    CacheError,
    ConfigurationError,
    ContentionError,
)

__all__ = [
    "Decision",
    "FixedWindowLimiter",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "RateLimitUnavailable",
    "SlidingWindowLimiter",
    "enforce",
    "problem_response",
    "rate_limited",
]

P = ParamSpec("P")
R = TypeVar("R")

LOGGER: Final = logging.getLogger("aiocache_secure.ratelimit")
UNAVAILABLE_RETRY_AFTER: Final = 5
"""``Retry-After`` seconds of a 503 answered while the limiter's store is unavailable."""
_BURST_SECONDS: Final = 10.0
_POLICY_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_after: float
    """Seconds until the limit allows this identity again (or the window resets)."""
    limit: int = 0
    """The quota of the policy (0 when a custom limiter does not say)."""
    window: float = 0.0
    """The policy's window in seconds (0 when a custom limiter does not say)."""
    policy: str = "default"
    """The policy's name, as in the ``RateLimit-Policy`` field."""
    degraded: bool = False
    """The store failed and the limiter, failing open, let this request through uncounted."""

    @property
    def retry_after(self) -> int:
        """Whole seconds for a ``Retry-After`` field (at least 1)."""
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers), when
        the decision knows its policy; none for a degraded decision, which counted nothing."""
        if self.degraded or self.limit <= 0:
            return []
        window = f";w={math.ceil(self.window)}" if self.window > 0 else ""
        reset = max(0, math.ceil(self.reset_after))
        return [
            ("RateLimit-Policy", f'"{self.policy}";q={self.limit}{window}'),
            ("RateLimit", f'"{self.policy}";r={self.remaining};t={reset}'),
        ]


class RateLimitExceeded(CacheError):
    """The identity is over its limit: answer 429 with :meth:`headers` (web layers do)."""

    status = 429

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"rate limit exceeded; retry in {decision.reset_after:.1f}s")
        self.decision = decision

    @property
    def retry_after(self) -> int:
        """Whole seconds until the identity may try again (the ``Retry-After`` value)."""
        return self.decision.retry_after

    def headers(self) -> list[tuple[str, str]]:
        """The ``RateLimit``, ``RateLimit-Policy`` and ``Retry-After`` headers of the 429."""
        return [*self.decision.headers(), ("Retry-After", str(self.retry_after))]


class RateLimitUnavailable(BackendUnavailable):
    """The limiter's store failed and the limiter fails closed: answer 503 (web layers do)."""

    status = 503
    retry_after = UNAVAILABLE_RETRY_AFTER

    def __init__(self) -> None:
        super().__init__("the rate limiter's store is unavailable")

    def headers(self) -> list[tuple[str, str]]:
        """The ``Retry-After`` header of the 503."""
        return [("Retry-After", str(self.retry_after))]


class Limiter(Protocol):
    async def hit(self, identity: str) -> Decision: ...


class _Burst:
    """Logs the first failure of a burst, then stays quiet until failures pause for a while."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = -math.inf

    def failed(self, exc: BaseException, *, namespace: str, fail_open: bool) -> None:
        now = time.monotonic()
        quiet = now - self.last >= _BURST_SECONDS
        self.last = now
        if not quiet:
            return
        outcome = "letting requests through unlimited" if fail_open else "refusing requests (503)"
        LOGGER.warning("rate limiter store failed (%s); %s", type(exc).__name__, outcome)
        audit.emit(
            "backend_error", namespace=namespace, error=type(exc).__name__, fail_open=fail_open
        )


_UNKNOWN_LIMITER_BURST: Final = _Burst()


class _WindowLimiter:
    __slots__ = ("_burst", "_cache", "_clock", "fail_open", "limit", "name", "window")
    _tag = ""

    def __init__(
        self,
        cache: Cache,
        *,
        limit: int,
        window: float,
        clock: Clock | None = None,
        fail_open: bool | None = None,
        name: str = "default",
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
        if fail_open is not None and not isinstance(fail_open, bool):
            raise TypeError("fail_open must be True, False or None (the namespace's setting)")
        if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
            raise ConfigurationError("a limiter's name is 1-64 letters, digits, '_', '.' or '-'")
        self._cache = cache
        self._clock = clock or cache.clock
        self.limit = limit
        self.window = float(window)
        self.name = name
        self.fail_open = cache.policy.fail_open if fail_open is None else fail_open
        self._burst = _Burst()
        self._refuse_forgetful(cache)

    def _needed_ttl(self) -> float:
        """How long a counter must live for the limit to hold (a current window's counter)."""
        return self.window

    def _refuse_forgetful(self, cache: Cache) -> None:
        policy = cache.policy
        needed = self._needed_ttl()
        if policy.max_ttl is not None and policy.max_ttl < needed:
            raise ConfigurationError(
                f"the namespace's max_ttl ({policy.max_ttl:g}s) would expire this limiter's "
                f"counters early; give the limiter a namespace with no max_ttl or "
                f"max_ttl >= {math.ceil(needed)}"
            )
        if policy.ttl_jitter:
            raise ConfigurationError(
                "ttl_jitter would expire this limiter's counters early; "
                "give the limiter a namespace with ttl_jitter=0"
            )
        if cache.store_evicts:
            raise ConfigurationError(
                "an evicting store (max_entries/max_bytes) would drop this limiter's counters; "
                "give the limiter a namespace without max_entries and max_bytes"
            )

    def _key(self, identity: str, index: int) -> str:
        if not isinstance(identity, str):
            raise TypeError("identities must be str")
        return f"{self._tag}:{self.name}:{index}:{identity}"

    def _decision(self, allowed: bool, remaining: int, reset_after: float) -> Decision:
        return Decision(allowed, remaining, reset_after, self.limit, self.window, self.name)

    async def hit(self, identity: str) -> Decision:
        """Count one hit of ``identity``; raises :class:`RateLimitUnavailable` when the store
        fails and the limiter fails closed."""
        if not isinstance(identity, str):
            raise TypeError("identities must be str")
        try:
            return await self._count(identity)
        except (BackendError, ContentionError) as exc:
            self._burst.failed(exc, namespace=self._cache.name, fail_open=self.fail_open)
            if not self.fail_open:
                raise RateLimitUnavailable from exc
            return Decision(True, 0, 0.0, self.limit, self.window, self.name, degraded=True)

    async def _count(self, identity: str) -> Decision:
        raise NotImplementedError


class FixedWindowLimiter(_WindowLimiter):
    """At most ``limit`` hits per identity in each aligned window of ``window`` seconds."""

    __slots__ = ()
    _tag = "fw"

    async def _count(self, identity: str) -> Decision:
        now = self._clock()
        index = math.floor(now / self.window)
        reset_after = (index + 1) * self.window - now
        count = await self._cache.incr(self._key(identity, index), 1, ttl=reset_after + 1)
        return self._decision(count <= self.limit, max(0, self.limit - count), reset_after)


class SlidingWindowLimiter(_WindowLimiter):
    """Sliding-window estimate: the previous window's count weighted by its overlap."""

    __slots__ = ()
    _tag = "sw"

    def _needed_ttl(self) -> float:
        # The previous window's counter still weighs in until the end of the current one.
        return 2 * self.window

    async def _count(self, identity: str) -> Decision:
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
        remaining = max(0, self.limit - math.ceil(estimate))
        return self._decision(allowed, remaining, max(reset_after, 0.0))


async def enforce(limiter: Limiter, identity: str, *, fail_open: bool | None = None) -> Decision:
    """Count one hit; the decision when the request may go on.

    Raises :class:`RateLimitExceeded` over the limit and :class:`RateLimitUnavailable` when the
    store failed and the request may not go on. ``fail_open=None`` follows the limiter (a
    degraded decision goes on, a failure it raises does not); True or False overrides it.
    """
    try:
        decision = await limiter.hit(identity)
    except (BackendError, ContentionError) as exc:
        if not fail_open:
            if isinstance(exc, RateLimitUnavailable):
                raise
            _burst_of(limiter).failed(exc, namespace="-", fail_open=False)
            raise RateLimitUnavailable from exc
        _burst_of(limiter).failed(exc, namespace="-", fail_open=True)
        return Decision(True, 0, 0.0, degraded=True)
    if decision.degraded and fail_open is False:
        raise RateLimitUnavailable
    if not decision.allowed:
        raise RateLimitExceeded(decision)
    return decision


def _burst_of(limiter: Limiter) -> _Burst:
    burst = getattr(limiter, "_burst", None)
    return burst if isinstance(burst, _Burst) else _UNKNOWN_LIMITER_BURST


def problem_response(
    exc: RateLimitExceeded | RateLimitUnavailable,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)``: an RFC 9457 ``application/problem+json`` answer."""
    if isinstance(exc, RateLimitExceeded):
        problem: dict[str, object] = {
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": f"Rate limit exceeded; retry in {exc.retry_after} seconds.",
            "retry_after": exc.retry_after,
        }
        if exc.decision.limit > 0:
            problem["policy"] = exc.decision.policy
    else:
        problem = {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "Rate limiting is unavailable; retry later.",
            "retry_after": exc.retry_after,
        }
    body = json.dumps(problem, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *exc.headers(),
    ]
    return exc.status, headers, body


def rate_limited(
    limiter: Limiter, *, identity: Callable[..., str], fail_open: bool | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Count ``identity(*args, **kwargs)`` before calling the coroutine.

    Raises :class:`RateLimitExceeded` over the limit and :class:`RateLimitUnavailable` when the
    limiter's store failed and the call may not go on (see :func:`enforce` for ``fail_open``).
    """

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("rate_limited decorates coroutine functions")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            await enforce(limiter, identity(*args, **kwargs), fail_open=fail_open)
            return await fn(*args, **kwargs)

        return wrapper

    return decorate


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class RateLimitMiddleware:
    """Plain ASGI: 429 over the limit, 503 when the limiter's store is unavailable and it fails
    closed, both RFC 9457 problem documents with ``Retry-After``; allowed responses carry the
    ``RateLimit``/``RateLimit-Policy`` fields (``headers=False`` leaves them out).

    ``identity`` defaults to the client address; returning None lets a request through
    unlimited. ``fail_open``: see :func:`enforce` (None follows the limiter).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        identity: Callable[[Scope], str | None] = _client_host,
        fail_open: bool | None = None,
        headers: bool = True,
    ) -> None:
        if fail_open is not None and not isinstance(fail_open, bool):
            raise TypeError("fail_open must be True, False or None (the limiter's setting)")
        self.app = app
        self.limiter = limiter
        self.identity = identity
        self.fail_open = fail_open
        self.headers = headers

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
        if who is None:
            await self.app(scope, receive, send)
            return
        try:
            decision = await enforce(self.limiter, who, fail_open=self.fail_open)
        except (RateLimitExceeded, RateLimitUnavailable) as exc:
            status, fields, body = problem_response(exc)
            await send(
                {"type": "http.response.start", "status": status, "headers": _encoded(fields)}
            )
            await send({"type": "http.response.body", "body": body})
            return
        extra = _encoded(decision.headers()) if self.headers else []
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_fields)


def __getattr__(name: str) -> Any:
    # The FastAPI dependency lives with the integrations (it imports FastAPI); it is offered here
    # too without importing FastAPI for everyone who imports this module.
    if name in {"rate_limit", "add_rate_limit_handlers"}:
        from .integrations import ratelimit_fastapi

        return getattr(ratelimit_fastapi, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
