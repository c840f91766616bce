"""Starlette/FastAPI helpers: the lifespan opens and closes the manager, dependencies inject
namespaces, and @cached endpoints keep their signature for FastAPI's parameter parsing."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from aiocache_secure import Cache, CacheManager, cached
from aiocache_secure.integrations.asgi import CacheMiddleware
from aiocache_secure.integrations.fastapi import cache_lifespan, namespace_dependency

from .asgi_lifespan import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def per_user(request: Request) -> str:
    return f"user:{request.headers['x-user']}"


Counters = Annotated[Cache, Depends(namespace_dependency("counters", ttl=30))]
Mine = Annotated[Cache, Depends(namespace_dependency(per_user, private=True))]
Pages = Annotated[Cache, Depends(namespace_dependency("pages"))]


async def test_lifespan_dependency_and_cached_endpoint() -> None:
    manager = CacheManager()
    calls: list[int] = []
    app = FastAPI(lifespan=cache_lifespan(manager))

    @app.get("/users/{uid}")
    @cached("profiles", ttl=60, manager=manager)
    async def profile(uid: int, full: bool = False) -> dict[str, Any]:
        calls.append(uid)
        return {"uid": uid, "full": full}

    @app.get("/counter")
    async def counter(ns: Counters) -> int:
        value = int(await ns.get("n", 0)) + 1
        await ns.set("n", value)
        return value

    @app.get("/mine")
    async def mine(ns: Mine) -> str:
        return ns.name

    async with serve(app) as client:
        assert (await client.get("/users/7")).json() == {"uid": 7, "full": False}
        assert (await client.get("/users/7?full=false")).json() == {"uid": 7, "full": False}
        assert (await client.get("/users/7?full=true")).json() == {"uid": 7, "full": True}
        assert (await client.get("/users/abc")).status_code == 422
        assert calls == [7, 7]
        assert [(await client.get("/counter")).json() for _ in range(3)] == [1, 2, 3]
        assert (await client.get("/mine", headers={"x-user": "42"})).json() == "user:42"
        assert manager.namespaces["user:42"].policy.private
        assert "counters" in manager.namespaces
    assert manager.closed


async def test_lifespan_factory_allows_restarts() -> None:
    managers: list[CacheManager] = []

    def factory() -> CacheManager:
        managers.append(CacheManager())
        return managers[-1]

    app = FastAPI(lifespan=cache_lifespan(factory))

    @app.get("/")
    async def index(ns: Pages) -> bool:
        return ns is managers[-1].namespaces["pages"]

    for _ in range(2):
        async with serve(app) as client:
            assert (await client.get("/")).json() is True
    assert len(managers) == 2 and all(m.closed for m in managers)


async def test_middleware_on_fastapi() -> None:
    manager = CacheManager()
    calls: list[str] = []
    app = FastAPI(lifespan=cache_lifespan(manager))
    app.add_middleware(CacheMiddleware, cache=manager.namespace("pages"), ttl=30)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        calls.append("hello")
        return {"hello": "world"}

    async with serve(app) as client:
        first, second = await client.get("/hello"), await client.get("/hello")
        assert first.json() == second.json() == {"hello": "world"}
        assert first.headers["etag"] == second.headers["etag"]
    assert calls == ["hello"]
