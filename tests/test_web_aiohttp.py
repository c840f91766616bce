"""The aiohttp middleware through a real aiohttp server on a loopback port."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from aiocache_secure import CacheManager, Keyring, ManualClock
from aiocache_secure.integrations.aiohttp import (
    MANAGER_KEY,
    cache_middleware,
    namespace,
    setup,
)
from aiocache_secure.testing import FailingBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hits() -> Counter[str]:
    return Counter()


def build_app(hits: Counter[str], middleware: Any) -> web.Application:
    def counted(request: web.Request) -> str:
        hits[request.path] += 1
        return f"{request.path} #{hits[request.path]}"

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(text=counted(request))

    def with_headers(**headers: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(text=counted(request), headers=headers)

        return handler

    async def cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response(text=counted(request))
        response.set_cookie("session", "new")
        return response

    async def by_language(request: web.Request) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(text=f"{counted(request)} {lang}", headers={"Vary": "Accept-Language"})

    async def me(request: web.Request) -> web.StreamResponse:
        who = request.headers.get("Authorization") or request.cookies.get("session") or "anon"
        return web.Response(text=f"{counted(request)} for {who}")

    async def stream(request: web.Request) -> web.StreamResponse:
        number = counted(request)
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(3):
            await response.write(f"{number} chunk {i}\n".encode())
        await response.write_eof()
        return response

    async def constant(request: web.Request) -> web.StreamResponse:
        counted(request)
        return web.Response(text="always the same body")

    async def post(request: web.Request) -> web.StreamResponse:
        return web.Response(text=counted(request))

    app = web.Application(middlewares=[middleware])
    app.router.add_get("/plain", plain)
    app.router.add_get("/no-store", with_headers(**{"Cache-Control": "no-store"}))
    app.router.add_get("/private", with_headers(**{"Cache-Control": "private"}))
    app.router.add_get("/no-cache", with_headers(**{"Cache-Control": "no-cache"}))
    app.router.add_get("/s-maxage", with_headers(**{"Cache-Control": "max-age=99, s-maxage=2"}))
    app.router.add_get("/vary-star", with_headers(Vary="*"))
    app.router.add_get("/cookie", cookie)
    app.router.add_get("/lang", by_language)
    app.router.add_get("/me", me)
    app.router.add_get("/stream", stream)
    app.router.add_get("/constant", constant)
    app.router.add_post("/post", post)
    return app


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


async def start(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(
    manager: CacheManager, hits: Counter[str]
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    middleware = cache_middleware(manager.namespace("pages"), ttl=60, x_cache_header=True)
    client = await start(build_app(hits, middleware))
    try:
        yield client
    finally:
        await client.close()


Client = TestClient[web.Request, web.Application]


async def text(client: Client, path: str, **kw: Any) -> tuple[int, str, CIMultiDict[str]]:
    async with client.get(path, **kw) as response:
        return response.status, await response.text(), response.headers.copy()


async def test_get_is_cached_with_etag_and_304(client: Client, hits: Counter[str]) -> None:
    s1, t1, h1 = await text(client, "/plain")
    s2, t2, h2 = await text(client, "/plain")
    assert s1 == s2 == 200 and t1 == t2 == "/plain #1"
    assert (h1["X-Cache"], h2["X-Cache"]) == ("MISS", "HIT")
    assert h1["ETag"] == h2["ETag"] and h2["Content-Type"].startswith("text/plain")
    s3, t3, h3 = await text(client, "/plain", headers={"If-None-Match": h1["ETag"]})
    assert s3 == 304 and t3 == ""
    assert hits["/plain"] == 1


async def test_304_on_the_first_response(client: Client, hits: Counter[str]) -> None:
    _, _, first = await text(client, "/constant")
    async with client.get("/constant?v=2", headers={"If-None-Match": first["ETag"]}) as r:
        assert r.status == 304
    assert hits["/constant"] == 2


@pytest.mark.parametrize("path", ["/no-store", "/private", "/no-cache", "/vary-star", "/cookie"])
async def test_uncacheable_responses(client: Client, hits: Counter[str], path: str) -> None:
    _, first, _ = await text(client, path)
    _, second, _ = await text(client, path)
    assert first != second
    assert hits[path] == 2


async def test_s_maxage_bounds_the_ttl(
    client: Client, hits: Counter[str], clock: ManualClock
) -> None:
    await text(client, "/s-maxage")
    await text(client, "/s-maxage")
    assert hits["/s-maxage"] == 1
    clock.advance(3)
    await text(client, "/s-maxage")
    assert hits["/s-maxage"] == 2


async def test_vary(client: Client, hits: Counter[str]) -> None:
    _, en, _ = await text(client, "/lang", headers={"Accept-Language": "en"})
    _, fr, _ = await text(client, "/lang", headers={"Accept-Language": "fr"})
    _, en2, _ = await text(client, "/lang", headers={"Accept-Language": "en"})
    assert en == en2 != fr
    assert hits["/lang"] == 2


async def test_credentials_isolated(client: Client, hits: Counter[str]) -> None:
    await text(client, "/me")
    _, alice, h = await text(client, "/me", headers={"Authorization": "Bearer alice"})
    _, bob, _ = await text(client, "/me", headers={"Cookie": "session=bob"})
    assert alice.endswith("for Bearer alice") and bob.endswith("for bob")
    assert "X-Cache" not in h
    assert hits["/me"] == 3


async def test_identity_keys_per_user(manager: CacheManager, hits: Counter[str]) -> None:
    def identity(request: web.Request) -> str | None:
        return request.headers.get("Authorization")

    middleware = cache_middleware(manager.namespace("users"), identity=identity)
    client = await start(build_app(hits, middleware))
    try:
        _, a1, _ = await text(client, "/me", headers={"Authorization": "alice"})
        _, b1, _ = await text(client, "/me", headers={"Authorization": "bob"})
        _, a2, _ = await text(client, "/me", headers={"Authorization": "alice"})
    finally:
        await client.close()
    assert a1 == a2 and a1.endswith("for alice") and b1.endswith("for bob")
    assert hits["/me"] == 2


async def test_request_headers_cannot_bypass(client: Client, hits: Counter[str]) -> None:
    _, first, _ = await text(client, "/plain")
    for headers in ({"Cache-Control": "no-cache"}, {"Pragma": "no-cache"}):
        _, again, h = await text(client, "/plain", headers=headers)
        assert again == first and h["X-Cache"] == "HIT"
    assert hits["/plain"] == 1


async def test_head_and_streams(client: Client, hits: Counter[str]) -> None:
    _, body, _ = await text(client, "/plain")
    async with client.head("/plain") as head:
        assert head.status == 200 and head.headers["X-Cache"] == "HIT"
        assert head.headers["Content-Length"] == str(len(body.encode()))
        assert await head.read() == b""
    _, s1, _ = await text(client, "/stream")
    _, s2, _ = await text(client, "/stream")
    assert s1 == "".join(f"/stream #1 chunk {i}\n" for i in range(3))
    assert s2.startswith("/stream #2")  # streamed responses pass through uncached
    async with client.post("/post") as r:
        assert r.status == 200
    assert hits["/plain"] == 1


async def test_failing_cache_serves_uncached(manager: CacheManager, hits: Counter[str]) -> None:
    middleware = cache_middleware(manager.namespace("down", FailingBackend()))
    client = await start(build_app(hits, middleware))
    try:
        assert (await text(client, "/plain"))[0] == 200
        assert (await text(client, "/plain"))[0] == 200
    finally:
        await client.close()
    assert hits["/plain"] == 2


async def test_setup_closes_the_manager_and_gives_namespaces(clock: ManualClock) -> None:
    manager = CacheManager(clock=clock)
    app = web.Application()
    setup(app, manager)

    async def handler(request: web.Request) -> web.StreamResponse:
        users = namespace(request, "users", ttl=30)
        await users.set("seen", request.path)
        return web.Response(text=str(await users.get("seen")))

    app.router.add_get("/", handler)
    client = await start(app)
    try:
        assert (await text(client, "/"))[1] == "/"
        assert app[MANAGER_KEY] is manager
    finally:
        await client.close()
    assert manager.closed
