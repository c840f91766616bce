"""The limiter's failure modes with its Redis gone: fail closed (503) or open, never a 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.ratelimit import (
    FixedWindowLimiter,
    RateLimitMiddleware,
    RateLimitUnavailable,
    SlidingWindowLimiter,
    rate_limited,
)
from tests import servers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis driver needs asyncio


@pytest.fixture(scope="module")
def stopped_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a private redis-server that ran and was stopped: nothing listens there now."""
    with servers.redis_server(tmp_path_factory.mktemp("redis-stopped")) as (port, proc):
        servers.stop(proc)
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        yield mgr


def _app(limiter: Any, **options: Any) -> httpx.AsyncClient:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = RateLimitMiddleware(Starlette(routes=[Route("/", home)]), limiter=limiter, **options)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_redis_killed_under_a_live_limiter(manager: CacheManager, tmp_path: Path) -> None:
    with servers.redis_server(tmp_path / "redis") as (port, proc):
        url = f"redis://127.0.0.1:{port}/0"
        closed = SlidingWindowLimiter(manager.namespace("closed", backend=url), limit=5, window=60)
        opened = FixedWindowLimiter(
            manager.namespace("open", backend=url), limit=5, window=60, fail_open=True
        )
        assert (await closed.hit("u")).allowed and (await opened.hit("u")).allowed
        proc.kill()
        proc.wait(10)
        with pytest.raises(RateLimitUnavailable):
            await closed.hit("u")
        decision = await opened.hit("u")
        assert decision.allowed and decision.degraded


async def test_fails_closed_by_default(manager: CacheManager, stopped_redis: str) -> None:
    limiter = FixedWindowLimiter(manager.namespace("rl", backend=stopped_redis), limit=5, window=60)
    assert limiter.fail_open is False
    async with _app(limiter) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 503


async def test_namespace_fail_open_is_honoured(
    manager: CacheManager, stopped_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = manager.namespace("rl", backend=stopped_redis, fail_open=True)
    limiter = SlidingWindowLimiter(namespace, limit=5, window=60)
    assert limiter.fail_open is True
    with caplog.at_level(logging.WARNING, logger="aiocache_secure.ratelimit"):
        async with _app(limiter) as client:
            statuses = [(await client.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    burst = [r for r in caplog.records if r.name == "aiocache_secure.ratelimit"]
    assert len(burst) == 1 and "letting requests through" in burst[0].getMessage()


async def test_middleware_and_decorator_override(manager: CacheManager, stopped_redis: str) -> None:
    closed = FixedWindowLimiter(manager.namespace("c", backend=stopped_redis), limit=5, window=60)
    opened = FixedWindowLimiter(
        manager.namespace("o", backend=stopped_redis), limit=5, window=60, fail_open=True
    )
    async with _app(closed, fail_open=True) as client:
        assert (await client.get("/")).status_code == 200
    async with _app(opened, fail_open=False) as client:
        assert (await client.get("/")).status_code == 503

    calls: list[str] = []

    async def action(user: str) -> None:
        calls.append(user)

    with pytest.raises(RateLimitUnavailable):
        await rate_limited(closed, identity=lambda user: user)(action)("a")
    await rate_limited(opened, identity=lambda user: user)(action)("b")
    await rate_limited(closed, identity=lambda user: user, fail_open=True)(action)("c")
    with pytest.raises(RateLimitUnavailable):
        await rate_limited(opened, identity=lambda user: user, fail_open=False)(action)("d")
    assert calls == ["b", "c"]
