"""Per-route limits through a FastAPI app: the dependency, its fields, 429 and 503 answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.integrations.ratelimit_fastapi import add_rate_limit_handlers, rate_limit
from aiocache_secure.ratelimit import Decision, FixedWindowLimiter, SlidingWindowLimiter
from tests import servers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and the Redis driver need asyncio


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def stopped_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with servers.redis_server(tmp_path_factory.mktemp("redis-stopped")) as (port, proc):
        servers.stop(proc)
        yield f"redis://127.0.0.1:{port}/0"


def _app(manager: CacheManager, *, handlers: bool = True) -> FastAPI:
    limits = manager.namespace("limits")
    login = FixedWindowLimiter(limits, limit=2, window=60, name="login")
    search = SlidingWindowLimiter(limits, limit=4, window=60, name="search")
    app = FastAPI()
    if handlers:
        add_rate_limit_handlers(app)

    def account(request: Request) -> str:
        return request.headers.get("x-account", "anonymous")

    @app.post("/login", dependencies=[Depends(rate_limit(login, key=account))])
    async def do_login() -> dict[str, bool]:
        return {"ok": True}

    searching = Depends(rate_limit(search))

    @app.get("/search")
    async def do_search(decision: Decision = searching) -> dict[str, int]:
        return {"remaining": decision.remaining}

    return app


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_per_route_limits(manager: CacheManager) -> None:
    async with _client(_app(manager)) as client:
        logins = [await client.post("/login", headers={"x-account": "a"}) for _ in range(3)]
        other = await client.post("/login", headers={"x-account": "b"})
        searches = [await client.get("/search") for _ in range(5)]
    assert [r.status_code for r in logins] == [200, 200, 429]
    assert other.status_code == 200  # per identity
    assert [r.status_code for r in searches] == [200, 200, 200, 200, 429]  # own counter, own limit
    assert [r.json()["remaining"] for r in searches[:4]] == [3, 2, 1, 0]
    assert logins[0].headers["ratelimit-policy"] == '"login";q=2;w=60'
    assert logins[0].headers["ratelimit"].startswith('"login";r=1;t=')
    assert searches[0].headers["ratelimit-policy"] == '"search";q=4;w=60'
    limited = logins[2]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["title"] == "Too Many Requests"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit"].startswith('"login";r=0;t=')


async def test_no_handlers_still_429_not_500(manager: CacheManager) -> None:
    async with _client(_app(manager, handlers=False)) as client:
        responses = [await client.post("/login") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert "retry-after" in responses[2].headers and "ratelimit" in responses[2].headers


@pytest.mark.parametrize("handlers", [True, False])
async def test_store_outage_is_503(
    manager: CacheManager, stopped_redis: str, handlers: bool
) -> None:
    limiter = FixedWindowLimiter(
        manager.namespace("down", backend=stopped_redis), limit=5, window=9
    )
    app = FastAPI()
    if handlers:
        add_rate_limit_handlers(app)

    @app.get("/", dependencies=[Depends(rate_limit(limiter))])
    async def home() -> str:
        return "ok"

    @app.get("/open", dependencies=[Depends(rate_limit(limiter, fail_open=True))])
    async def home_open() -> str:
        return "ok"

    async with _client(app) as client:
        closed = await client.get("/")
        opened = await client.get("/open")
    assert closed.status_code == 503 and closed.headers["retry-after"] == "5"
    assert opened.status_code == 200 and "ratelimit" not in opened.headers


async def test_over_a_real_socket(manager: CacheManager) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(manager), log_level="warning", lifespan="off", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [(await client.post("/login")).status_code for _ in range(3)]
    finally:
        server.should_exit = True
        await serving
        sock.close()
    assert statuses == [200, 200, 429]


async def test_two_limits_on_one_route(manager: CacheManager) -> None:
    limits = manager.namespace("two")
    burst = FixedWindowLimiter(limits, limit=2, window=1, name="burst")
    hourly = FixedWindowLimiter(limits, limit=100, window=3600, name="hourly")
    app = FastAPI()

    @app.get("/", dependencies=[Depends(rate_limit(burst)), Depends(rate_limit(hourly))])
    async def home() -> str:
        return "ok"

    async with _client(app) as client:
        response = await client.get("/")
    assert response.headers.get_list("ratelimit-policy") == [
        '"burst";q=2;w=1',
        '"hourly";q=100;w=3600',
    ]


def test_offered_from_the_ratelimit_module_without_importing_fastapi() -> None:
    import subprocess
    import sys

    from aiocache_secure import ratelimit

    assert ratelimit.rate_limit is rate_limit
    assert ratelimit.add_rate_limit_handlers is add_rate_limit_handlers
    probe = "import sys, aiocache_secure.ratelimit; print('fastapi' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
