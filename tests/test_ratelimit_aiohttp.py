"""aiohttp limits through a real aiohttp server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.integrations.ratelimit_aiohttp import rate_limit, rate_limit_middleware
from aiocache_secure.ratelimit import FixedWindowLimiter
from tests import servers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def stopped_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with servers.redis_server(tmp_path_factory.mktemp("redis-stopped")) as (port, proc):
        servers.stop(proc)
        yield f"redis://127.0.0.1:{port}/0"


async def hello(request: web.Request) -> web.StreamResponse:
    return web.Response(text="hello")


async def test_per_handler_and_app_limits(manager: CacheManager) -> None:
    limits = manager.namespace("limits")
    login = FixedWindowLimiter(limits, limit=1, window=60, name="login")
    site = FixedWindowLimiter(limits, limit=3, window=60, name="site")
    app = web.Application(middlewares=[rate_limit_middleware(site)])
    app.router.add_get("/", hello)
    app.router.add_post(
        "/login", rate_limit(login, key=lambda request: request.headers.get("x-account"))(hello)
    )
    async with TestClient(TestServer(app)) as client:
        first = await client.post("/login", headers={"x-account": "a"})
        second = await client.post("/login", headers={"x-account": "a"})
        third = await client.get("/")
        over = await client.get("/")
        assert first.status == 200 and second.status == 429
        assert first.headers.getall("RateLimit-Policy") == ['"login";q=1;w=60', '"site";q=3;w=60']
        assert second.headers["Content-Type"] == "application/problem+json"
        assert (await second.json(content_type=None))["status"] == 429
        assert 1 <= int(second.headers["Retry-After"]) <= 60
        assert third.status == 200 and third.headers["RateLimit"].startswith('"site";r=0;t=')
        assert over.status == 429


async def test_store_outage(manager: CacheManager, stopped_redis: str) -> None:
    limiter = FixedWindowLimiter(
        manager.namespace("down", backend=stopped_redis), limit=5, window=9
    )
    app = web.Application()
    app.router.add_get("/closed", rate_limit(limiter)(hello))
    app.router.add_get("/open", rate_limit(limiter, fail_open=True)(hello))
    async with TestClient(TestServer(app)) as client:
        closed = await client.get("/closed")
        opened = await client.get("/open")
        assert closed.status == 503 and closed.headers["Retry-After"] == "5"
        assert (await closed.json(content_type=None))["status"] == 503
        assert opened.status == 200 and await opened.text() == "hello"
