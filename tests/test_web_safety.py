"""The response cache's safety rules, through both middlewares: the ASGI one on a Starlette app
(httpx's ASGI transport) and the aiohttp one on a real aiohttp server (AppRunner on loopback).

Credentials of every kind across two users, invalidation by every unsafe method (and by
Location/Content-Location) for every variant and identity, include/exclude, Age, raw paths and
repeated query parameters."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aiocache_secure import Cache, CacheManager, Keyring, ManualClock
from aiocache_secure.backends.memory import MemoryBackend
from aiocache_secure.integrations._http import ENTRY_PREFIX
from aiocache_secure.integrations.aiohttp import cache_middleware
from aiocache_secure.integrations.asgi import CacheMiddleware, invalidate_tags, invalidate_url

from .web_servers import aiohttp_client

pytestmark = pytest.mark.anyio

_NOT_CREDENTIALS = {"host", "accept", "accept-encoding", "connection", "user-agent"}
_NOT_CREDENTIALS |= {"accept-language", "content-length", "content-type"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


def body(hits: Counter[str], path: str, headers: Any, query: str) -> str:
    hits[path] += 1
    sent = sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in _NOT_CREDENTIALS)
    lang = headers.get("accept-language", "-")
    return f"{path} #{hits[path]} lang={lang} q={query} sent={sent}"


def unsafe_status(name: str) -> int:
    return 404 if name == "missing" else 200


def starlette_app(hits: Counter[str]) -> Starlette:
    async def echo(request: Request) -> Response:
        return PlainTextResponse(
            body(hits, request.url.path, request.headers, request.url.query),
            headers={"Vary": "Accept-Language"},
        )

    async def note(request: Request) -> Response:
        if request.method == "GET":
            return await echo(request)
        location = request.query_params.get("location")
        headers = {request.query_params.get("header", "Location"): location} if location else {}
        return PlainTextResponse("done", unsafe_status(request.path_params["name"]), headers)

    return Starlette(
        routes=[
            Route("/me", echo),
            Route("/q", echo),
            Route("/live", echo),
            Route("/cached/{name}", echo),
            Route("/notes/{name}", note, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )


def aiohttp_app(hits: Counter[str], middleware: Any) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=body(hits, request.path, request.headers, request.query_string),
            headers={"Vary": "Accept-Language"},
        )

    async def note(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return await echo(request)
        location = request.query.get("location")
        headers = {request.query.get("header", "Location"): location} if location else {}
        return web.Response(
            text="done", status=unsafe_status(request.match_info["name"]), headers=headers
        )

    app = web.Application(middlewares=[middleware])
    for path in ("/me", "/q", "/live", "/cached/{name}"):
        app.router.add_get(path, echo)
    app.router.add_route("*", "/notes/{name}", note)
    return app


Front = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(params=["asgi", "aiohttp"])
def front(request: pytest.FixtureRequest, hits: Counter[str]) -> Front:
    @asynccontextmanager
    async def make(cache: Cache, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
        if request.param == "asgi":
            app = CacheMiddleware(starlette_app(hits), cache=cache, x_cache_header=True, **options)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client
        else:
            middleware = cache_middleware(cache, x_cache_header=True, **options)
            async with aiohttp_client(aiohttp_app(hits, middleware)) as client:
                yield client

    return make


@pytest.fixture
def hits() -> Counter[str]:
    return Counter()


CREDENTIALS = [
    ("Authorization", "Bearer {}"),
    ("Proxy-Authorization", "Basic {}"),
    ("Cookie", "access_token={}"),
    ("Cookie", "session={}"),
    ("Cookie", "_ga=1; remember={}"),
    ("X-API-Key", "{}"),
    ("X-Auth-Token", "{}"),
    ("Api-Key", "{}"),
    ("X-Tenant-Secret", "{}"),  # named by credential_headers
]


@pytest.mark.parametrize(("header", "template"), CREDENTIALS)
@pytest.mark.parametrize("per_credential", [False, True])
async def test_no_caller_is_served_another_callers_response(
    front: Front,
    manager: CacheManager,
    hits: Counter[str],
    header: str,
    template: str,
    per_credential: bool,
) -> None:
    cache = manager.namespace("pages")
    options = {"credential_headers": ["X-Tenant-Secret"], "per_credential": per_credential}
    async with front(cache, public_cookies=["_ga"], **options) as client:
        anonymous = await client.get("/me")
        seen: dict[str, list[httpx.Response]] = {"alice": [], "bob": []}
        for user in ("alice", "bob", "alice", "bob"):
            response = await client.get("/me", headers={header: template.format(user)})
            seen[user].append(response)
        again = await client.get("/me")
    for user, other in (("alice", "bob"), ("bob", "alice")):
        for response in seen[user]:
            assert user in response.text and other not in response.text
            assert response.text != anonymous.text
    assert again.text == anonymous.text and again.headers["x-cache"] == "HIT"
    if per_credential:
        assert [r.headers["x-cache"] for r in seen["alice"]] == ["MISS", "HIT"]
        assert hits["/me"] == 3
    else:
        assert all("x-cache" not in r.headers for r in seen["alice"] + seen["bob"])
        assert hits["/me"] == 5


@pytest.mark.parametrize("per_credential", [False, True])
async def test_credential_query_parameters(
    front: Front, manager: CacheManager, hits: Counter[str], per_credential: bool
) -> None:
    """A query parameter named by credential_query makes a request credentialed, like a
    credential header, and never enters a key."""
    cache = manager.namespace("pages", encrypt=True)  # encrypted: its keys can be listed
    options = {"credential_query": ["api_key"], "per_credential": per_credential}
    async with front(cache, **options) as client:
        anonymous = await client.get("/me?page=1")
        seen = [
            await client.get(f"/me?page=1&api_key={user}") for user in ("alice", "bob", "alice")
        ]
    assert ["alice" in r.text for r in seen] == [True, False, True]
    assert "bob" in seen[1].text and all(r.text != anonymous.text for r in seen)
    if per_credential:
        assert seen[2].headers["x-cache"] == "HIT" and hits["/me"] == 3
    else:
        assert all("x-cache" not in r.headers for r in seen) and hits["/me"] == 4
    stored = [key async for key, _ in cache.items()]
    assert stored and not any("alice" in key or "bob" in key for key in stored)


async def test_public_cookies_share_the_anonymous_entry(
    front: Front, manager: CacheManager, hits: Counter[str]
) -> None:
    async with front(manager.namespace("pages"), public_cookies=["_ga", "consent"]) as client:
        first = await client.get("/me")
        second = await client.get("/me", headers={"Cookie": "_ga=GA1.2; consent=yes"})
    assert second.text == first.text and second.headers["x-cache"] == "HIT"
    assert hits["/me"] == 1


async def test_identity_shares_one_users_sessions(
    front: Front, manager: CacheManager, hits: Counter[str]
) -> None:
    def identity(source: Any) -> str | None:
        headers = source.headers if hasattr(source, "headers") else Request(source).headers
        token = headers.get("x-api-key", "")
        return token.partition("-")[0] or None  # "alice-phone", "alice-laptop": one user

    async with front(manager.namespace("pages"), identity=identity) as client:
        phone = await client.get("/me", headers={"X-API-Key": "alice-phone"})
        laptop = await client.get("/me", headers={"X-API-Key": "alice-laptop"})
        bob = await client.get("/me", headers={"X-API-Key": "bob-phone"})
    assert laptop.text == phone.text and laptop.headers["x-cache"] == "HIT"
    assert "bob" in bob.text and "alice" not in bob.text
    assert hits["/me"] == 2


async def fill(client: httpx.AsyncClient, path: str) -> list[httpx.Response]:
    """Every variant and identity of ``path``: two languages, anonymous and two API keys."""
    out = []
    for lang in ("en", "fr"):
        for key in (None, "alice", "bob"):
            headers = {"Accept-Language": lang, **({"X-API-Key": key} if key else {})}
            out.append(await client.get(path, headers=headers))
    return out


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_successful_unsafe_request_invalidates_every_variant_and_identity(
    front: Front, manager: CacheManager, hits: Counter[str], method: str
) -> None:
    async with front(manager.namespace("pages"), per_credential=True) as client:
        before = await fill(client, "/notes/a")
        await fill(client, "/notes/a?format=csv")
        await fill(client, "/notes/b")
        cached = await fill(client, "/notes/a")
        assert [r.text for r in cached] == [r.text for r in before]
        assert all(r.headers["x-cache"] == "HIT" for r in cached)
        assert (await client.request(method, "/notes/missing")).status_code == 404
        assert all(r.headers["x-cache"] == "HIT" for r in await fill(client, "/notes/a"))
        assert (await client.request(method, "/notes/a")).status_code == 200
        after = await fill(client, "/notes/a")
        assert all(r.headers["x-cache"] == "MISS" for r in after)
        assert all(
            r.headers["x-cache"] == "MISS" for r in await fill(client, "/notes/a?format=csv")
        )
        assert all(r.headers["x-cache"] == "HIT" for r in await fill(client, "/notes/b"))
    assert {r.text for r in after}.isdisjoint(r.text for r in before)


@pytest.mark.parametrize("header", ["Location", "Content-Location"])
async def test_location_headers_are_invalidated(
    front: Front, manager: CacheManager, header: str
) -> None:
    async with front(manager.namespace("pages")) as client:
        await client.get("/notes/target")
        await client.get("/notes/elsewhere")
        for location in ("/notes/target", "http://other.example/notes/elsewhere"):
            response = await client.post(
                "/notes/new", params={"location": location, "header": header}
            )
            assert response.status_code == 200
        assert (await client.get("/notes/target")).headers["x-cache"] == "MISS"
        # another origin's URL is not this cache's to invalidate
        assert (await client.get("/notes/elsewhere")).headers["x-cache"] == "HIT"


async def test_invalidate_url_and_tags_calls(
    front: Front, manager: CacheManager, hits: Counter[str]
) -> None:
    cache = manager.namespace("pages")
    async with front(cache) as client:
        await client.get("/notes/a?x=1")
        host = str(client.base_url.netloc.decode())
        await invalidate_url(cache, f"{client.base_url.scheme}://{host}/notes/a")
        assert (await client.get("/notes/a?x=1")).headers["x-cache"] == "MISS"
        await invalidate_tags(cache, ["unused"])  # a tag nothing carries: no effect
        assert (await client.get("/notes/a?x=1")).headers["x-cache"] == "HIT"
    with pytest.raises(ValueError):
        await invalidate_url(cache, "/notes/a")
    with pytest.raises(TypeError):
        await invalidate_tags(cache, "user:1")


async def test_a_response_computed_across_an_invalidation_is_not_served(
    manager: CacheManager, hits: Counter[str]
) -> None:
    cache = manager.namespace("pages")

    async def racing(request: Request) -> Response:
        hits["race"] += 1
        await invalidate_url(cache, "http://t/race")  # a write lands while this GET computes
        return PlainTextResponse(f"computed #{hits['race']}")

    app = CacheMiddleware(Starlette(routes=[Route("/race", racing)]), cache=cache)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first, second = await c.get("/race"), await c.get("/race")
    assert (first.text, second.text) == ("computed #1", "computed #2")
    assert "age" not in second.headers


async def test_include_and_exclude(front: Front, manager: CacheManager, hits: Counter[str]) -> None:
    cache = manager.namespace("pages")
    async with front(cache, include=["/cached/*"], exclude=["/cached/live"]) as client:
        for path in ("/cached/a", "/cached/live", "/live"):
            await client.get(path)
            await client.get(path)
    assert hits == Counter({"/cached/a": 1, "/cached/live": 2, "/live": 2})


async def test_hits_carry_age(front: Front, manager: CacheManager, clock: ManualClock) -> None:
    async with front(manager.namespace("pages")) as client:
        miss = await client.get("/live")
        clock.advance(7.5)
        hit = await client.get("/live")
    assert "age" not in miss.headers
    assert hit.headers["age"] == "7" and hit.headers["x-cache"] == "HIT"


async def test_repeated_query_values_keep_their_order(
    front: Front, manager: CacheManager, hits: Counter[str]
) -> None:
    async with front(manager.namespace("pages")) as client:
        one_two = await client.get("/q?v=1&v=2&a=0")
        two_one = await client.get("/q?v=2&v=1&a=0")
        reordered_names = await client.get("/q?a=0&v=1&v=2")
        encoded_name = await client.get("/q?%76=2&v=1&a=0")  # v=[2, 1], one name spelled twice
        encoded_amp = await client.get("/q?v=1%262")  # one value, "1&2"
        two_values = await client.get("/q?v=1&2")
    assert one_two.text != two_one.text and two_one.headers["x-cache"] == "MISS"
    assert reordered_names.text == one_two.text and reordered_names.headers["x-cache"] == "HIT"
    assert encoded_name.headers["x-cache"] == "MISS"
    assert encoded_amp.headers["x-cache"] == two_values.headers["x-cache"] == "MISS"
    assert hits["/q"] == 5


async def test_aiohttp_keys_on_the_path_its_router_routes(
    manager: CacheManager, hits: Counter[str]
) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        hits["page"] += 1
        return web.Response(text=f"page {request.match_info['page']!r} #{hits['page']}")

    async def nested(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"section {request.match_info['section']} / intro/start")

    app = web.Application(middlewares=[cache_middleware(manager.namespace("pages"))])
    app.router.add_get("/docs/{page}", page)
    app.router.add_get("/docs/{section}/start", nested)
    async with aiohttp_client(app) as client:
        poisoned = await client.get("/docs/intro%2Fstart")
        real = await client.get("/docs/intro/start")
        again = await client.get("/docs/intro%2Fstart")
    assert poisoned.text.startswith("page 'intro/start'")
    assert real.text == "section intro / intro/start"
    assert again.text == poisoned.text


async def test_asgi_keys_on_the_raw_path(manager: CacheManager) -> None:
    async def raw_router(scope: Any, receive: Any, send: Any) -> None:
        raw = scope["raw_path"].partition(b"?")[0]
        text = b"page handler" if raw.count(b"/") == 2 else b"nested handler"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text})

    app = CacheMiddleware(raw_router, cache=manager.namespace("pages"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        encoded = await c.get("/docs/intro%2Fstart")
        plain = await c.get("/docs/intro/start")
    assert (encoded.text, plain.text) == ("page handler", "nested handler")


async def test_credential_keys_are_keyed_hashes_shared_by_the_keyring(
    clock: ManualClock, hits: Counter[str]
) -> None:
    """Two managers with one keyring and one store (two processes, in effect) compute the same
    credential keys; the raw token is in no key and no entry."""
    keyring, store = Keyring.generate(), MemoryBackend()
    token = "tok-3f9a1c"
    bearer = {"Authorization": f"Bearer {token}"}
    ages = []
    async with (
        CacheManager(keyring=keyring, clock=clock) as one,
        CacheManager(keyring=keyring, clock=clock) as two,
    ):
        caches = [m.namespace("pages", backend=store, encrypt=True) for m in (one, two)]
        for cache in caches:
            app = CacheMiddleware(starlette_app(hits), cache=cache, per_credential=True)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ages.append((await client.get("/live", headers=bearer)).headers.get("age"))
                other = await client.get("/live", headers={"Cookie": f"sid={token}x"})
                ages.append(other.headers.get("age"))
        stored = [(key, value) async for key, value in caches[0].items()]
    assert ages == [None, None, "0", "0"] and hits["/live"] == 2
    entries = [value for _, value in stored if value.startswith(ENTRY_PREFIX)]
    assert len(entries) == 2 and len(stored) == 3  # two responses and the URL's generation
    for key, value in stored:  # the body is the app's own answer (it echoes the request)
        assert token not in key
        assert token not in value.partition("\n")[0]  # an entry's head, or a generation
    async for raw_key, raw_value in store.scan(b""):
        assert token.encode() not in raw_key and token.encode() not in raw_value


async def test_a_lost_generation_never_revives_invalidated_responses(
    front: Front, manager: CacheManager
) -> None:
    # An evicting store may drop a URL's generation key while its entries survive: those
    # entries must then be misses, never hits again.
    from aiocache_secure.integrations._responses import url_generation_key

    cache = manager.namespace("pages")
    async with front(cache) as client:
        first = await client.get("/notes/a")
        assert (await client.get("/notes/a")).headers["x-cache"] == "HIT"
        assert (await client.put("/notes/a")).status_code == 200
        host = client.base_url.netloc.decode()
        assert await cache.delete(url_generation_key(host, "/notes/a"))  # as an eviction would
        again = await client.get("/notes/a")
        assert again.headers["x-cache"] == "MISS"
        assert again.text != first.text
