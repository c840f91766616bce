"""``cache_response`` per route: FastAPI (dependencies, response models, returned Responses),
Starlette endpoints and aiohttp handlers, against real uvicorn and aiohttp servers where it
matters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from aiohttp import web
from fastapi import Body, Cookie, Depends, FastAPI, Header, HTTPException, Request, Security
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from aiocache_secure import Cache, CacheManager, Keyring, ManualClock
from aiocache_secure.integrations import aiohttp as aiohttp_cache
from aiocache_secure.integrations.asgi import CacheMiddleware, InvalidationMiddleware
from aiocache_secure.integrations.fastapi import (
    cache_lifespan,
    cache_response,
    invalidate_tags,
)

from .web_servers import aiohttp_client, uvicorn_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


class Note(BaseModel):
    name: str
    body: str


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    scheme, _, name = authorization.partition(" ")
    if scheme != "Bearer" or not name:
        raise HTTPException(status_code=401)
    return name


User = Annotated[str, Depends(current_user)]


def notes_app(cache: Cache, hits: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/notes/{name}", response_model=Note)
    @cache_response(cache=cache, ttl=60, identity=Depends(current_user), tags=["notes"])
    async def read(name: str, user: User, verbose: bool = False) -> dict[str, Any]:
        hits[name] += 1
        # "owner_secret" is not in the response model: it must never reach a client
        return {"name": name, "body": f"{user} #{hits[name]} {verbose}", "owner_secret": user}

    @cache_response(cache=cache)
    async def write(name: str, user: User) -> dict[str, bool]:
        if name == "missing":
            raise HTTPException(status_code=404)
        return {"written": True}

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        app.add_api_route("/notes/{name}", write, methods=[method], operation_id=method)

    @app.get("/text")
    @cache_response(cache=cache, ttl=60)
    async def text() -> Response:
        hits["text"] += 1
        return PlainTextResponse(f"text #{hits['text']}", headers={"X-Extra": "kept"})

    @app.get("/live")
    async def live() -> int:
        hits["live"] += 1
        return hits["live"]

    return app


@pytest.fixture
def hits() -> Counter[str]:
    return Counter()


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


async def test_identity_from_a_dependency_over_uvicorn(
    manager: CacheManager, hits: Counter[str], clock: ManualClock
) -> None:
    app = notes_app(manager.namespace("pages"), hits)
    async with uvicorn_client(app) as client:
        a1 = await client.get("/notes/a", headers=bearer("alice"))
        b1 = await client.get("/notes/a", headers=bearer("bob"))
        clock.advance(3)
        a2 = await client.get("/notes/a", headers=bearer("alice"))
        b2 = await client.get("/notes/a", headers=bearer("bob"))
        anonymous = await client.get("/notes/a")
    assert a1.json() == a2.json() == {"name": "a", "body": "alice #1 False"}
    assert b1.json() == b2.json() == {"name": "a", "body": "bob #2 False"}
    assert (a2.headers["age"], "age" in a1.headers) == ("3", False)
    assert a2.headers["etag"] == a1.headers["etag"]
    assert anonymous.status_code == 401  # the dependency ran before the cache
    assert hits["a"] == 2


async def test_response_model_query_and_invalidation(
    manager: CacheManager, hits: Counter[str]
) -> None:
    cache = manager.namespace("pages")
    async with asgi(notes_app(cache, hits)) as client:
        plain = await client.get("/notes/a", headers=bearer("alice"))
        verbose = await client.get("/notes/a?verbose=true", headers=bearer("alice"))
        hit = await client.get("/notes/a", headers=bearer("alice"))
        assert "owner_secret" not in plain.text and "owner_secret" not in hit.text
        assert verbose.json()["body"].endswith("True") and hit.json() == plain.json()
        bad = await client.get("/notes/a?verbose=maybe", headers=bearer("alice"))
        assert bad.status_code == 422
        assert hits["a"] == 2
        assert (await client.put("/notes/a", headers=bearer("bob"))).json() == {"written": True}
        assert (await client.get("/notes/a", headers=bearer("alice"))).json()["body"] == (
            "alice #3 False"
        )
        await invalidate_tags(cache, ["notes"])
        assert (await client.get("/notes/a", headers=bearer("alice"))).json()["body"] == (
            "alice #4 False"
        )
        params = app_params(notes_app(cache, hits))
    assert params == ["name", "verbose", "authorization"]


def app_params(app: FastAPI) -> list[str]:
    operation = app.openapi()["paths"]["/notes/{name}"]["get"]
    return [param["name"] for param in operation["parameters"]]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_unsafe_routes_invalidate_every_variant_and_identity(
    manager: CacheManager, hits: Counter[str], method: str
) -> None:
    variants = [(user, query) for user in ("alice", "bob") for query in ("", "?verbose=true")]

    async def fill(client: httpx.AsyncClient) -> list[str]:
        return [
            (await client.get(f"/notes/a{query}", headers=bearer(user))).headers.get("age", "")
            for user, query in variants
        ]

    async with asgi(notes_app(manager.namespace("pages"), hits)) as client:
        assert await fill(client) == [""] * 4
        assert await fill(client) == ["0"] * 4
        response = await client.request(method, "/notes/missing", headers=bearer("bob"))
        assert response.status_code == 404
        assert await fill(client) == ["0"] * 4
        response = await client.request(method, "/notes/a", headers=bearer("bob"))
        assert response.status_code == 200
        assert await fill(client) == [""] * 4
    assert hits["a"] == 8


async def test_returned_responses_and_per_route_opt_in(
    manager: CacheManager, hits: Counter[str]
) -> None:
    async with asgi(notes_app(manager.namespace("pages"), hits)) as client:
        first, second = await client.get("/text"), await client.get("/text")
        live = [(await client.get("/live")).json() for _ in range(2)]
        not_modified = await client.get("/text", headers={"If-None-Match": first.headers["etag"]})
    assert first.text == second.text == "text #1"
    assert second.headers["x-extra"] == "kept" and "age" in second.headers
    assert second.headers["content-type"].startswith("text/plain")
    assert live == [1, 2]  # an undecorated route is never cached
    assert not_modified.status_code == 304 and not_modified.content == b""


async def test_identity_callable_reads_what_a_dependency_set(
    manager: CacheManager, hits: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()

    async def authenticate(request: Request, x_api_key: Annotated[str, Header()] = "") -> None:
        request.state.user_id = x_api_key.partition(".")[0] or None

    with caplog.at_level(logging.WARNING, logger="aiocache_secure"):
        decorator = cache_response(
            cache=manager.namespace("pages"), identity=lambda request: request.state.user_id
        )
    assert "never cached" not in caplog.text

    @app.get("/me", dependencies=[Depends(authenticate)])
    @decorator
    async def me(request: Request) -> dict[str, str]:
        hits["me"] += 1
        return {"for": request.headers.get("x-api-key", ""), "n": str(hits["me"])}

    async with asgi(app) as client:
        one = await client.get("/me", headers={"X-API-Key": "u1.key-a"})
        same_user = await client.get("/me", headers={"X-API-Key": "u1.key-b"})
        other = await client.get("/me", headers={"X-API-Key": "u2.key"})
    assert same_user.json() == one.json() == {"for": "u1.key-a", "n": "1"}
    assert other.json() == {"for": "u2.key", "n": "2"}


async def test_credentialed_requests_bypass_without_identity_and_say_so(
    manager: CacheManager, hits: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aiocache_secure"):
        app = notes_app(manager.namespace("pages-warned"), hits)
    assert caplog.text.count("never cached") == 1  # once per namespace, not per route
    async with asgi(app) as client:
        for token in ("a", "b", "a"):
            response = await client.get("/text", headers={"Cookie": f"access_token={token}"})
            assert "age" not in response.headers
    assert hits["text"] == 3


class TenantHeaders(BaseModel):
    x_region: str = "eu"


def tenant_of(x_org: Annotated[str, Header()] = "") -> str:
    return x_org


async def test_headers_and_cookies_a_route_declares_are_keyed_over_uvicorn(
    manager: CacheManager, hits: Counter[str]
) -> None:
    """A response that depends on a declared header (in the endpoint, a dependency, a header
    model or under an alias) is never served to a request sending another value of it; a
    declared cookie is never public on that route."""
    cache = manager.namespace("pages")
    app = FastAPI()

    @app.get("/direct")
    @cache_response(cache=cache, public_cookies=["theme"])
    async def direct(x_tenant: Annotated[str, Header()] = "") -> dict[str, str]:
        hits["direct"] += 1
        return {"seen": x_tenant}

    @app.get("/nested")
    @cache_response(cache=cache)
    async def nested(org: Annotated[str, Depends(tenant_of)]) -> dict[str, str]:
        hits["nested"] += 1
        return {"seen": org}

    @app.get("/model")
    @cache_response(cache=cache)
    async def model(headers: Annotated[TenantHeaders, Header()]) -> dict[str, str]:
        hits["model"] += 1
        return {"seen": headers.x_region}

    @app.get("/alias")
    @cache_response(cache=cache)
    async def alias(shard: Annotated[str, Header(alias="X-Shard")] = "") -> dict[str, str]:
        hits["alias"] += 1
        return {"seen": shard}

    @app.get("/body")
    @cache_response(cache=cache)
    async def body(query: Annotated[dict[str, str], Body()]) -> dict[str, str]:
        hits["body"] += 1
        return {"seen": query.get("q", "")}

    @app.get("/cookie")
    @cache_response(cache=cache, public_cookies=["theme"])
    async def cookie(theme: Annotated[str, Cookie()] = "") -> dict[str, str]:
        hits["cookie"] += 1
        return {"seen": theme}

    cases = [
        ("/direct", "X-Tenant"),
        ("/nested", "X-Org"),
        ("/model", "X-Region"),
        ("/alias", "X-Shard"),
    ]
    async with uvicorn_client(app) as client:
        for path, header in cases:
            seen = [
                (await client.get(path, headers={header: value})).json()["seen"]
                for value in ("a", "b", "a", "b")
            ]
            assert seen == ["a", "b", "a", "b"], path
            assert hits[path.strip("/")] == 2, path  # each value is still cached
        ignored = [
            await client.get("/direct", headers={"X-Tenant": "a", "Cookie": f"theme={t}"})
            for t in ("dark", "light")
        ]
        bodies = [
            (await client.request("GET", "/body", json={"q": q})).json()["seen"]
            for q in ("a", "b", "a")
        ]
        themes = [
            (await client.get("/cookie", headers={"Cookie": f"theme={t}"})).json()["seen"]
            for t in ("dark", "light", "dark")
        ]
    # a public cookie the route does not declare still leaves the entry shared
    assert [r.json()["seen"] for r in ignored] == ["a", "a"] and hits["direct"] == 2
    assert "age" in ignored[1].headers
    assert bodies == ["a", "b", "a"] and hits["body"] == 3  # no key covers a body: never cached
    assert themes == ["dark", "light", "dark"]  # declared: a credential here, not cached
    assert hits["cookie"] == 3


API_KEYS = {"k1": "alice", "k1b": "alice", "k2": "bob"}


def key_holder(scheme: Any = None) -> Any:
    """A dependency naming the holder of an API key (``X-Secret`` unless ``scheme`` says)."""
    from fastapi.security import APIKeyHeader

    chosen = APIKeyHeader(name="X-Secret") if scheme is None else scheme

    def user(key: str = Security(chosen)) -> str:  # noqa: B008 - local names, resolved late
        if key not in API_KEYS:
            raise HTTPException(status_code=403)
        return API_KEYS[key]

    return user


@pytest.mark.parametrize("where", ["header", "cookie", "query"])
async def test_api_key_schemes_are_credentials(
    manager: CacheManager, hits: Counter[str], where: str
) -> None:
    """What FastAPI's API-key schemes read is a credential: one user's response is never served
    to another, with or without an identity, and a query key never enters the cache key."""
    from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery

    scheme = {
        "header": APIKeyHeader(name="X-Secret"),
        "cookie": APIKeyCookie(name="pass"),
        "query": APIKeyQuery(name="key"),
    }[where]

    user = key_holder(scheme)

    cache = manager.namespace("pages", encrypt=True)  # encrypted: its keys can be listed
    app = FastAPI()

    @app.get("/anonymous")
    @cache_response(cache=cache, public_cookies=["pass"])
    async def anonymous(who: str = Depends(user)) -> dict[str, str]:  # noqa: B008
        hits["anonymous"] += 1
        return {"me": who}

    @app.get("/identified")
    @cache_response(cache=cache, identity=Depends(user), public_cookies=["pass"])
    async def identified(who: str = Depends(user)) -> dict[str, str]:  # noqa: B008
        hits["identified"] += 1
        return {"me": who, "n": str(hits["identified"])}

    def sent(path: str, key: str) -> dict[str, Any]:
        if where == "header":
            return {"url": path, "headers": {"X-Secret": key}}
        if where == "cookie":
            return {"url": path, "headers": {"Cookie": f"pass={key}"}}
        return {"url": f"{path}?key={key}"}

    async with asgi(app) as client:
        plain = [(await client.get(**sent("/anonymous", k))).json()["me"] for k in API_KEYS]
        named = [(await client.get(**sent("/identified", k))).json() for k in API_KEYS]
    assert plain == ["alice", "alice", "bob"]
    assert hits["anonymous"] == 3  # credentialed without an identity: never cached
    # under an identity: alice's two keys share her entry, bob has his own
    assert named == [
        {"me": "alice", "n": "1"},
        {"me": "alice", "n": "1"},
        {"me": "bob", "n": "2"},
    ]
    stored = [key async for key, _ in cache.items()]
    assert any("/identified" in key for key in stored)
    assert not any("k1" in key or "k2" in key for key in stored)  # no raw key in a cache key


async def test_the_middleware_keys_on_what_any_route_reads_over_uvicorn(
    manager: CacheManager, hits: Counter[str]
) -> None:
    """CacheMiddleware runs before routing, so it keys on what any route of the app reads:
    declared headers (also of an included router) and what API-key schemes take credentials
    from."""
    from fastapi import APIRouter

    user = key_holder()

    app = FastAPI()
    app.add_middleware(CacheMiddleware, cache=manager.namespace("pages"), per_credential=True)
    router = APIRouter()

    @app.get("/me")
    async def me(who: str = Depends(user)) -> dict[str, str]:  # noqa: B008
        hits["me"] += 1
        return {"me": who}

    @router.get("/tenant")
    async def tenant(x_tenant: Annotated[str, Header()] = "") -> dict[str, str]:
        hits["tenant"] += 1
        return {"seen": x_tenant}

    app.include_router(router)
    async with uvicorn_client(app) as client:
        mine = [(await client.get("/me", headers={"X-Secret": k})).json()["me"] for k in API_KEYS]
        again = await client.get("/me", headers={"X-Secret": "k2"})
        tenants = [
            (await client.get("/tenant", headers={"X-Tenant": t})).json()["seen"]
            for t in ("a", "b", "a")
        ]
    assert mine == ["alice", "alice", "bob"] and again.json() == {"me": "bob"}
    assert hits["me"] == 3 and "age" in again.headers  # per credential: each key its entry
    assert tenants == ["a", "b", "a"] and hits["tenant"] == 2


async def test_a_routers_api_key_dependency_is_seen(
    manager: CacheManager, hits: Counter[str]
) -> None:
    """An API-key check that comes from ``include_router(dependencies=...)`` counts too."""
    from fastapi import APIRouter

    user = key_holder()

    keyed = APIRouter()

    @keyed.get("/keyed")
    @cache_response(cache=manager.namespace("pages"))
    async def keyed_route() -> dict[str, int]:
        hits["keyed"] += 1
        return {"n": hits["keyed"]}

    app = FastAPI()
    app.include_router(keyed, dependencies=[Depends(user)])
    async with asgi(app) as client:
        seen = [(await client.get("/keyed", headers={"X-Secret": k})).json()["n"] for k in API_KEYS]
        public = await client.get("/keyed")
    assert seen == [1, 2, 3]  # credentialed, no identity: never cached, never shared
    assert public.status_code in (401, 403)  # refused by the key check, never served


async def test_starlette_endpoint(manager: CacheManager, hits: Counter[str]) -> None:
    @cache_response(cache=manager.namespace("pages"), x_cache_header=True)
    async def homepage(request: Any) -> Response:
        hits["home"] += 1
        return Response(f"home #{hits['home']}", media_type="text/plain")

    app = Starlette(routes=[Route("/", homepage)])
    async with asgi(app) as client:
        first, second = await client.get("/"), await client.get("/")
        head = await client.head("/")
    assert first.text == second.text == "home #1"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert head.status_code == 200 and head.content == b"" and head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == str(len(first.content))


async def test_lifespan_with_decorated_routes(hits: Counter[str]) -> None:
    manager = CacheManager()
    app = FastAPI(lifespan=cache_lifespan(manager))

    @app.get("/n")
    @cache_response(cache=manager.namespace("pages"))
    def sync_endpoint() -> int:  # run in the threadpool like any sync endpoint
        hits["n"] += 1
        return hits["n"]

    async with uvicorn_client(app) as client:
        assert [(await client.get("/n")).json() for _ in range(2)] == [1, 1]
    assert manager.closed


async def test_aiohttp_cache_response(manager: CacheManager, hits: Counter[str]) -> None:
    cache = manager.namespace("pages")

    async def identity(request: web.Request) -> str | None:
        return request.headers.get("X-Auth-Token")

    @aiohttp_cache.cache_response(cache=cache, ttl=30, identity=identity, tags=["items"])
    async def item(request: web.Request) -> web.StreamResponse:
        hits["item"] += 1
        who = request.headers.get("X-Auth-Token", "anonymous")
        return web.Response(text=f"item {request.match_info['id']} for {who} #{hits['item']}")

    @aiohttp_cache.cache_response(cache=cache)
    async def update(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location="/items/2")

    async def live(request: web.Request) -> web.StreamResponse:
        hits["live"] += 1
        return web.Response(text=str(hits["live"]))

    app = web.Application()
    app.router.add_get("/items/{id}", item)
    app.router.add_post("/items/{id}", update)
    app.router.add_get("/live", live)
    async with aiohttp_client(app) as client:
        a = [await client.get("/items/1", headers={"X-Auth-Token": "a"}) for _ in range(2)]
        b = await client.get("/items/1", headers={"X-Auth-Token": "b"})
        await client.get("/items/2")
        assert [(await client.get("/live")).text for _ in range(2)] == ["1", "2"]
        assert a[0].text == a[1].text == "item 1 for a #1" and "age" in a[1].headers
        assert b.text == "item 1 for b #2"
        redirect = await client.post("/items/1")
        assert redirect.status_code == 302
        assert (await client.get("/items/1", headers={"X-Auth-Token": "a"})).text.endswith("#4")
        assert (await client.get("/items/2")).text.endswith("#5")  # its Location
        await invalidate_tags(cache, ["items"])
        assert (await client.get("/items/2")).text.endswith("#6")


async def test_invalidation_middleware_covers_undecorated_unsafe_routes(
    manager: CacheManager, hits: Counter[str]
) -> None:
    cache = manager.namespace("pages")
    app = FastAPI()
    app.add_middleware(InvalidationMiddleware, cache=cache)

    @app.get("/items/{name}")
    @cache_response(cache, ttl=60)  # the namespace may be positional too
    async def read(name: str) -> dict[str, int]:
        hits[name] += 1
        return {name: hits[name]}

    @app.delete("/items/{name}")
    async def remove(name: str) -> None:
        return None

    async with asgi(app) as client:
        assert [(await client.get("/items/a")).json() for _ in range(2)] == [{"a": 1}] * 2
        assert (await client.delete("/items/a")).status_code == 200
        assert (await client.get("/items/a")).json() == {"a": 2}


async def test_aiohttp_invalidation_middleware(manager: CacheManager, hits: Counter[str]) -> None:
    cache = manager.namespace("pages")

    @aiohttp_cache.cache_response(cache, ttl=60)
    async def read(request: web.Request) -> web.StreamResponse:
        hits["read"] += 1
        return web.Response(text=str(hits["read"]))

    async def write(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    app = web.Application(middlewares=[aiohttp_cache.invalidation_middleware(cache)])
    app.router.add_get("/item", read)
    app.router.add_patch("/item", write)
    async with aiohttp_client(app) as client:
        assert [(await client.get("/item")).text for _ in range(2)] == ["1", "1"]
        assert (await client.patch("/item")).status_code == 204
        assert (await client.get("/item")).text == "2"


async def test_bad_arguments(manager: CacheManager) -> None:
    cache = manager.namespace("pages")
    with pytest.raises(TypeError):
        cache_response(cache="pages")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cache_response(cache=cache, identity="user")
    with pytest.raises(TypeError):
        cache_response(cache=cache, tags="notes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cache_response(cache=cache, vary_headers=["authorization"])
    with pytest.raises(ValueError):
        aiohttp_cache.cache_response(cache=cache, public_cookies=["session"])
