from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiocache_secure import (
    BackendTimeout,
    CacheManager,
    ConfigurationError,
    ContentionError,
    Keyring,
    ManualClock,
    MemoryBackend,
)
from aiocache_secure.ratelimit import (
    Decision,
    FixedWindowLimiter,
    RateLimitExceeded,
    RateLimitMiddleware,
    SlidingWindowLimiter,
    problem_response,
    rate_limited,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000_000.0)


@pytest.fixture
async def manager(clock: ManualClock) -> Any:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


async def test_fixed_window(manager: CacheManager, clock: ManualClock) -> None:
    limiter = FixedWindowLimiter(manager.namespace("rl"), limit=3, window=10)
    decisions = [await limiter.hit("alice") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 0 < decisions[-1].reset_after <= 10
    assert (await limiter.hit("bob")).allowed
    clock.advance(decisions[-1].reset_after + 0.001)
    assert (await limiter.hit("alice")).allowed


async def test_sliding_window(manager: CacheManager, clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(manager.namespace("sl"), limit=10, window=60)
    for _ in range(10):
        assert (await limiter.hit("ip")).allowed
    denied = await limiter.hit("ip")
    assert not denied.allowed and denied.remaining == 0
    # Half of the next window: the previous window still weighs half (10 * 0.5 + new hits).
    clock.advance(60 + 30 - (clock.now % 60))
    results = [(await limiter.hit("ip")).allowed for _ in range(6)]
    assert results == [True, True, True, True, False, False]
    clock.advance(60)
    assert (await limiter.hit("ip")).allowed


async def test_identities_never_stored(clock: ManualClock) -> None:
    store = MemoryBackend(clock=clock)
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        limiter = FixedWindowLimiter(mgr.namespace("rl", backend=store), limit=5, window=10)
        await limiter.hit("alice@example.com")
        raw = b"".join([k + v async for k, v in store.scan(b"")])
        assert b"alice" not in raw
        with pytest.raises(ConfigurationError):
            FixedWindowLimiter(mgr.namespace("plainkeys", hash_keys=False), limit=1, window=1)
        with pytest.raises(ConfigurationError):
            FixedWindowLimiter(mgr.namespace("rl", backend=store), limit=0, window=1)
        with pytest.raises(TypeError):
            await limiter.hit(42)  # type: ignore[arg-type]


async def test_decorator(manager: CacheManager) -> None:
    limiter = FixedWindowLimiter(manager.namespace("dec"), limit=2, window=60)
    calls: list[str] = []

    @rate_limited(limiter, identity=lambda user: user)
    async def action(user: str) -> str:
        calls.append(user)
        return user

    assert await action("u") == "u"
    assert await action("u") == "u"
    with pytest.raises(RateLimitExceeded) as info:
        await action("u")
    assert not info.value.decision.allowed
    assert calls == ["u", "u"]


async def test_asgi_middleware_429(manager: CacheManager) -> None:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    limiter = FixedWindowLimiter(manager.namespace("web"), limit=2, window=30)
    app = RateLimitMiddleware(Starlette(routes=[Route("/", home)]), limiter=limiter)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/")).status_code == 200
        limited = await client.get("/")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 30


async def test_refuses_namespaces_that_forget_counters(manager: CacheManager) -> None:
    """Each forgotten counter is a fresh allowance: 5 an hour would become 5 a minute."""
    cases = [
        (FixedWindowLimiter, {"max_ttl": 60}, "max_ttl"),
        (FixedWindowLimiter, {"max_ttl": 3599}, "max_ttl"),
        (SlidingWindowLimiter, {"max_ttl": 7199}, "max_ttl"),  # enough for a fixed window only
        (FixedWindowLimiter, {"ttl_jitter": 0.1}, "ttl_jitter"),
        (FixedWindowLimiter, {"max_entries": 1000}, "max_entries"),
        (SlidingWindowLimiter, {"max_bytes": 1_000_000}, "max_bytes"),
        (FixedWindowLimiter, {"backend": MemoryBackend(max_entries=1000)}, "max_entries"),
    ]
    for index, (cls, options, fix) in enumerate(cases):
        namespace = manager.namespace(f"forgetful{index}", **options)
        with pytest.raises(ConfigurationError, match=fix):
            cls(namespace, limit=5, window=3600)
    assert FixedWindowLimiter(manager.namespace("ok1", max_ttl=3600), limit=5, window=3600)
    assert SlidingWindowLimiter(manager.namespace("ok2", max_ttl=7200), limit=5, window=3600)


async def test_limiters_with_different_names_count_apart(manager: CacheManager) -> None:
    ns = manager.namespace("shared")
    login = FixedWindowLimiter(ns, limit=1, window=60, name="login")
    search = FixedWindowLimiter(ns, limit=1, window=60, name="search")
    assert (await login.hit("u")).allowed and (await search.hit("u")).allowed
    assert not (await login.hit("u")).allowed
    with pytest.raises(ConfigurationError):
        FixedWindowLimiter(ns, limit=1, window=60, name='bad"name')


async def test_ratelimit_header_fields(manager: CacheManager) -> None:
    limiter = FixedWindowLimiter(manager.namespace("hdr"), limit=3, window=60, name="api")
    decision = await limiter.hit("u")
    fields = dict(decision.headers())
    assert fields["RateLimit-Policy"] == '"api";q=3;w=60'
    assert fields["RateLimit"] == f'"api";r=2;t={decision.retry_after}'
    assert Decision(True, 1, 1.0).headers() == []  # a custom limiter that names no policy
    degraded = Decision(True, 0, 0.0, limit=3, window=60, degraded=True)
    assert degraded.headers() == []


async def test_problem_document_429(manager: CacheManager) -> None:
    limiter = FixedWindowLimiter(manager.namespace("pb"), limit=1, window=30)
    await limiter.hit("u")
    status, fields, body = problem_response(RateLimitExceeded(await limiter.hit("u")))
    headers = dict(fields)
    problem = json.loads(body)
    assert status == 429 and headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
    assert problem["type"] == "about:blank" and 1 <= problem["retry_after"] <= 30
    assert headers["Retry-After"] == str(problem["retry_after"])
    assert headers["Content-Length"] == str(len(body))


async def test_asgi_middleware_fields_and_problem_body(manager: CacheManager) -> None:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    limiter = FixedWindowLimiter(manager.namespace("web2"), limit=1, window=30, name="site")
    app = RateLimitMiddleware(Starlette(routes=[Route("/", home)]), limiter=limiter)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        allowed = await client.get("/")
        assert allowed.text == "ok"
        assert allowed.headers["ratelimit-policy"] == '"site";q=1;w=30'
        assert allowed.headers["ratelimit"].startswith('"site";r=0;t=')
        limited = await client.get("/")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["status"] == 429
    assert limited.headers["ratelimit"].startswith('"site";r=0;t=')


class _OutOfStore:
    """A custom limiter (the Limiter protocol) whose own store keeps failing."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def hit(self, identity: str) -> Decision:
        raise self.error


@pytest.mark.parametrize("error", [BackendTimeout("slow"), ContentionError("raced")])
async def test_custom_limiter_failures_are_503_or_open(error: Exception) -> None:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    statuses = []
    for fail_open in (None, True):
        app = RateLimitMiddleware(
            Starlette(routes=[Route("/", home)]), limiter=_OutOfStore(error), fail_open=fail_open
        )
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses.append((await client.get("/")).status_code)
    assert statuses == [503, 200]
