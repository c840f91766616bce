"""CacheMiddleware through a real Starlette app, driven by httpx's ASGI transport."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from aiocache_secure import CacheManager, Keyring, ManualClock
from aiocache_secure.integrations.asgi import CacheMiddleware
from aiocache_secure.testing import FailingBackend

pytestmark = pytest.mark.anyio


def build_app(hits: Counter[str]) -> Starlette:
    def counted(request: Request) -> str:
        hits[request.url.path] += 1
        return f"{request.url.path} #{hits[request.url.path]}"

    async def plain(request: Request) -> Response:
        return PlainTextResponse(counted(request) + f" q={sorted(request.query_params.items())}")

    def with_headers(**headers: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return PlainTextResponse(counted(request), headers=headers)

        return endpoint

    async def cookie(request: Request) -> Response:
        response = PlainTextResponse(counted(request))
        response.set_cookie("session", "new-session-value")
        return response

    async def by_language(request: Request) -> Response:
        lang = request.headers.get("accept-language", "none")
        return PlainTextResponse(f"{counted(request)} {lang}", headers={"Vary": "Accept-Language"})

    async def me(request: Request) -> Response:
        who = request.headers.get("authorization") or request.cookies.get("session") or "anon"
        return PlainTextResponse(f"{counted(request)} for {who}")

    async def stream(request: Request) -> Response:
        number = counted(request)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"{number} chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def big(request: Request) -> Response:
        return PlainTextResponse(counted(request) + "x" * 5000)

    async def missing(request: Request) -> Response:
        return PlainTextResponse(counted(request), status_code=404)

    async def constant(request: Request) -> Response:
        counted(request)
        return PlainTextResponse("always the same body")

    async def post(request: Request) -> Response:
        return PlainTextResponse(counted(request))

    routes = [
        Route("/plain", plain),
        Route("/no-store", with_headers(**{"Cache-Control": "no-store"})),
        Route("/private", with_headers(**{"Cache-Control": "private, max-age=60"})),
        Route("/no-cache", with_headers(**{"Cache-Control": "no-cache"})),
        Route("/max-age", with_headers(**{"Cache-Control": "public, max-age=5"})),
        Route("/s-maxage", with_headers(**{"Cache-Control": "max-age=100, s-maxage=2"})),
        Route("/max-age-zero", with_headers(**{"Cache-Control": "max-age=0"})),
        Route("/vary-star", with_headers(Vary="*")),
        Route("/vary-other", with_headers(Vary="X-Tenant")),
        Route("/own-etag", with_headers(ETag='"v1"')),
        Route("/cookie", cookie),
        Route("/lang", by_language),
        Route("/me", me),
        Route("/stream", stream),
        Route("/big", big),
        Route("/missing", missing),
        Route("/constant", constant),
        Route("/post", post, methods=["POST", "GET"]),
    ]
    return Starlette(routes=routes)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


@pytest.fixture
def hits() -> Counter[str]:
    return Counter()


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(manager: CacheManager, hits: Counter[str]) -> AsyncIterator[httpx.AsyncClient]:
    app = CacheMiddleware(
        build_app(hits),
        cache=manager.namespace("pages"),
        ttl=60,
        x_cache_header=True,
        max_body_bytes=4096,
    )
    async with client_for(app) as c:
        yield c


async def twice(client: httpx.AsyncClient, path: str, **kw: Any) -> tuple[httpx.Response, ...]:
    return (await client.get(path, **kw), await client.get(path, **kw))


async def test_get_is_cached(client: httpx.AsyncClient, hits: Counter[str]) -> None:
    first, second = await twice(client, "/plain")
    assert first.status_code == second.status_code == 200
    assert first.text == second.text == "/plain #1 q=[]"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith("text/plain")
    assert second.headers["content-length"] == str(len(second.content))
    assert hits["/plain"] == 1


async def test_query_order_does_not_matter(client: httpx.AsyncClient, hits: Counter[str]) -> None:
    a = await client.get("/plain?b=2&a=1")
    b = await client.get("/plain?a=1&b=2")
    c = await client.get("/plain?a=1&b=3")
    assert a.text == b.text != c.text
    assert hits["/plain"] == 2


async def test_long_and_odd_urls_are_cached(client: httpx.AsyncClient, hits: Counter[str]) -> None:
    long_query = "/constant?" + "&".join(f"k{i}={'v' * 50}" for i in range(200))
    first, second = await twice(client, long_query)
    assert first.status_code == 200 and first.text == second.text
    assert hits["/constant"] == 1
    odd = "/plain?name=%ED%A0%80%FF&x=caf%C3%A9"
    third, fourth = await twice(client, odd)
    assert third.status_code == 200 and third.text == fourth.text
    assert hits["/plain"] == 1


@pytest.mark.parametrize("path", ["/no-store", "/private", "/no-cache", "/max-age-zero"])
async def test_cache_control_forbids_storing(
    client: httpx.AsyncClient, hits: Counter[str], path: str
) -> None:
    first, second = await twice(client, path)
    assert first.text != second.text
    assert hits[path] == 2
    assert "etag" not in second.headers


async def test_max_age_bounds_the_ttl(
    client: httpx.AsyncClient, hits: Counter[str], clock: ManualClock
) -> None:
    await twice(client, "/max-age")
    assert hits["/max-age"] == 1
    clock.advance(6)
    await client.get("/max-age")
    assert hits["/max-age"] == 2


async def test_s_maxage_wins_over_max_age(
    client: httpx.AsyncClient, hits: Counter[str], clock: ManualClock
) -> None:
    await twice(client, "/s-maxage")
    assert hits["/s-maxage"] == 1
    clock.advance(3)
    await client.get("/s-maxage")
    assert hits["/s-maxage"] == 2


async def test_default_ttl(
    client: httpx.AsyncClient, hits: Counter[str], clock: ManualClock
) -> None:
    await twice(client, "/plain")
    clock.advance(59)
    await client.get("/plain")
    assert hits["/plain"] == 1
    clock.advance(2)
    await client.get("/plain")
    assert hits["/plain"] == 2


async def test_vary_values_are_part_of_the_key(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    en = await client.get("/lang", headers={"Accept-Language": "en"})
    fr = await client.get("/lang", headers={"Accept-Language": "fr"})
    en2 = await client.get("/lang", headers={"Accept-Language": "en"})
    assert en.text.endswith(" en") and fr.text.endswith(" fr")
    assert en2.text == en.text and en2.headers["x-cache"] == "HIT"
    assert hits["/lang"] == 2


@pytest.mark.parametrize("path", ["/vary-star", "/vary-other"])
async def test_vary_on_unkeyed_headers_is_not_stored(
    client: httpx.AsyncClient, hits: Counter[str], path: str
) -> None:
    await twice(client, path)
    assert hits[path] == 2


async def test_set_cookie_is_never_stored(client: httpx.AsyncClient, hits: Counter[str]) -> None:
    first, second = await twice(client, "/cookie")
    assert "set-cookie" in first.headers and "set-cookie" in second.headers
    assert hits["/cookie"] == 2


async def test_other_statuses_and_methods_pass_through(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    await twice(client, "/missing")
    assert hits["/missing"] == 2
    await client.get("/post")
    await client.post("/post")
    assert hits["/post"] == 2
    await client.post("/post")
    assert hits["/post"] == 3


async def test_request_headers_cannot_bypass_or_refill(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    first = await client.get("/plain")
    for headers in (
        {"Cache-Control": "no-cache"},
        {"Cache-Control": "no-store, max-age=0"},
        {"Pragma": "no-cache"},
        {"Clear-Site-Data": '"cache"'},
    ):
        again = await client.get("/plain", headers=headers)
        assert again.text == first.text and again.headers["x-cache"] == "HIT"
    assert hits["/plain"] == 1


async def test_credentials_are_not_cached_by_default(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    alice = await client.get("/me", headers={"Authorization": "Bearer alice"})
    bob = await client.get("/me", headers={"Authorization": "Bearer bob"})
    assert alice.text.endswith("for Bearer alice") and bob.text.endswith("for Bearer bob")
    cookie_a = await client.get("/me", headers={"Cookie": "session=sess-a"})
    cookie_b = await client.get("/me", headers={"Cookie": "theme=dark; sessionid=sess-b"})
    anon = await client.get("/me")
    assert cookie_a.text.endswith("for sess-a") and cookie_b.text.endswith("for anon")
    assert anon.text.endswith("for anon") and "x-cache" in anon.headers
    assert hits["/me"] == 5
    assert "x-cache" not in alice.headers  # bypassed entirely


async def test_anonymous_entry_is_never_served_to_credentialed_requests(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    await twice(client, "/me")
    assert hits["/me"] == 1
    alice = await client.get("/me", headers={"Authorization": "Bearer alice"})
    assert alice.text.endswith("for Bearer alice")
    assert hits["/me"] == 2


async def test_identity_keys_entries_per_user(manager: CacheManager, hits: Counter[str]) -> None:
    def identity(scope: Any) -> str | None:
        headers = dict(scope["headers"])
        token = headers.get(b"authorization", b"").decode()
        return token.removeprefix("Bearer ") or None

    app = CacheMiddleware(build_app(hits), cache=manager.namespace("per-user"), identity=identity)
    async with client_for(app) as client:
        a1 = await client.get("/me", headers={"Authorization": "Bearer alice"})
        b1 = await client.get("/me", headers={"Authorization": "Bearer bob"})
        a2 = await client.get("/me", headers={"Authorization": "Bearer alice"})
        b2 = await client.get("/me", headers={"Authorization": "Bearer bob"})
        # a session cookie without an Authorization header: identity is None → not cached
        c1 = await client.get("/me", headers={"Cookie": "session=s"})
        c2 = await client.get("/me", headers={"Cookie": "session=s"})
    assert "x-cache" not in a2.headers  # off by default
    assert a1.text == a2.text and a1.text.endswith("for Bearer alice")
    assert b1.text == b2.text and b1.text.endswith("for Bearer bob")
    assert c1.text != c2.text
    assert hits["/me"] == 4


async def test_etag_and_304(client: httpx.AsyncClient, hits: Counter[str]) -> None:
    first = await client.get("/plain")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    second = await client.get("/plain")
    assert second.headers["etag"] == etag
    not_modified = await client.get("/plain", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    weak = await client.get("/plain", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    other = await client.get("/plain", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.text == first.text
    assert hits["/plain"] == 1


async def test_304_on_the_first_uncached_response(
    client: httpx.AsyncClient, hits: Counter[str], manager: CacheManager, clock: ManualClock
) -> None:
    first = await client.get("/constant")
    await manager.namespace("pages").clear()
    again = await client.get("/constant", headers={"If-None-Match": first.headers["etag"]})
    assert hits["/constant"] == 2
    assert again.status_code == 304 and again.headers["x-cache"] == "MISS"
    assert again.content == b""
    served = await client.get("/constant")
    assert served.headers["x-cache"] == "HIT" and served.status_code == 200
    assert served.text == "always the same body"


async def test_etag_depends_on_the_body_only(manager: CacheManager, hits: Counter[str]) -> None:
    tags = []
    for name in ("one", "two"):
        app = CacheMiddleware(build_app(Counter()), cache=manager.namespace(name))
        async with client_for(app) as client:
            tags.append((await client.get("/plain")).headers["etag"])
    assert tags[0] == tags[1]


async def test_apps_own_etag_is_kept(client: httpx.AsyncClient) -> None:
    first, second = await twice(client, "/own-etag")
    assert first.headers["etag"] == second.headers["etag"] == '"v1"'
    assert (await client.get("/own-etag", headers={"If-None-Match": '"v1"'})).status_code == 304


async def test_head_is_served_from_the_get_entry(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    head_miss = await client.head("/plain")
    assert head_miss.status_code == 200 and head_miss.content == b""
    get = await client.get("/plain")
    head = await client.head("/plain")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["etag"] == get.headers["etag"]
    assert hits["/plain"] == 2


async def test_streamed_body_is_passed_through_and_stored(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    chunks: list[bytes] = []
    async with client.stream("GET", "/stream") as response:
        assert response.headers["x-cache"] == "MISS"
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    body = b"".join(chunks)
    assert body == b"".join(f"/stream #1 chunk {i}\n".encode() for i in range(5))
    again = await client.get("/stream")
    assert again.content == body and again.headers["x-cache"] == "HIT"
    assert "etag" in again.headers
    assert hits["/stream"] == 1


async def test_large_bodies_are_served_not_stored(
    client: httpx.AsyncClient, hits: Counter[str]
) -> None:
    first, second = await twice(client, "/big")
    assert len(first.content) > 4096 and first.text != second.text
    assert hits["/big"] == 2


async def test_failing_cache_serves_uncached(manager: CacheManager, hits: Counter[str]) -> None:
    app = CacheMiddleware(build_app(hits), cache=manager.namespace("down", FailingBackend()))
    async with client_for(app) as client:
        first, second = await twice(client, "/plain")
    assert first.status_code == second.status_code == 200
    assert hits["/plain"] == 2


async def test_other_scopes_pass_through(manager: CacheManager) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = CacheMiddleware(app, cache=manager.namespace("pages"))
    await middleware({"type": "lifespan"}, _never, _never)
    assert seen == ["lifespan"]


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")


async def test_bad_configuration(manager: CacheManager) -> None:
    ns = manager.namespace("pages")
    with pytest.raises(TypeError):
        CacheMiddleware(_never, cache="pages")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CacheMiddleware(_never, cache=ns, ttl=0)
    with pytest.raises(ValueError):
        CacheMiddleware(_never, cache=ns, vary_headers=["*"])
    with pytest.raises(ValueError):
        CacheMiddleware(_never, cache=ns, max_body_bytes=0)
