"""Every snippet in docs/web.md runs as written, against real Starlette, FastAPI and aiohttp
objects, and does what the page says it does."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .asgi_lifespan import serve
from .web_servers import aiohttp_client

pytestmark = pytest.mark.anyio
PAGE = (Path(__file__).resolve().parent.parent / "docs" / "web.md").read_text()
SNIPPETS = dict(re.findall(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", PAGE, re.S))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_every_python_block_is_a_tested_snippet() -> None:
    assert len(SNIPPETS) == PAGE.count("```python") == len(SCENARIOS)
    assert set(SNIPPETS) == set(SCENARIOS)


@asynccontextmanager
async def run(name: str) -> AsyncIterator[dict[str, Any]]:
    namespace: dict[str, Any] = {"__name__": f"docs_web_{name.replace('-', '_')}"}
    exec(compile(SNIPPETS[name], f"docs/web.md:{name}", "exec"), namespace)  # noqa: S102
    try:
        yield namespace
    finally:
        manager = namespace.get("manager")
        if manager is not None and not manager.closed:
            await manager.aclose()


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def fastapi_routes() -> None:
    async with run("fastapi-routes") as ns, serve(ns["app"]) as client:
        first, second = await client.get("/notes/a"), await client.get("/notes/a")
        assert first.json() == second.json() == {"name": "a", "text": "first note"}
        assert "age" in second.headers and "age" not in first.headers
        assert (await client.put("/notes/a", params={"text": "new"})).status_code == 200
        assert (await client.get("/notes/a")).json()["text"] == "new"


async def identity_dependency() -> None:
    async with run("identity-dependency") as ns, asgi(ns["app"]) as client:
        alice = [await client.get("/me/inbox", headers={"Authorization": "Bearer alice"})]
        alice.append(await client.get("/me/inbox", headers={"Authorization": "Bearer alice"}))
        bob = await client.get("/me/inbox", headers={"Authorization": "Bearer bob"})
        assert [r.json() for r in alice] == [{"inbox of": "alice"}] * 2
        assert "age" in alice[1].headers
        assert bob.json() == {"inbox of": "bob"} and "age" not in bob.headers
        assert (await client.get("/me/inbox")).status_code == 401


async def starlette_auth() -> None:
    async with run("starlette-auth") as ns, asgi(ns["app"]) as client:
        anonymous = [await client.get("/hello") for _ in range(2)]
        alice = [await client.get("/hello", headers={"Authorization": "Bearer alice"})]
        alice.append(await client.get("/hello", headers={"Authorization": "Bearer alice"}))
        bob = await client.get("/hello", headers={"Authorization": "Bearer bob"})
    assert [r.status_code for r in anonymous + alice] == [200] * 4
    assert [r.text for r in anonymous] == ["hello stranger"] * 2 and "age" in anonymous[1].headers
    assert [r.text for r in alice] == ["hello alice"] * 2 and "age" in alice[1].headers
    assert bob.text == "hello bob"


async def aiohttp_snippet() -> None:
    async with run("aiohttp") as ns:
        for factory in ("make_cached_app", "make_app"):  # make_app closes the manager
            async with aiohttp_client(ns[factory]()) as client:
                first, second = await client.get("/articles/x"), await client.get("/articles/x")
                assert first.json() == second.json() == {"article": "x"}
                assert "age" in second.headers
                if factory == "make_app":
                    live = await client.get("/live")
                    assert live.text == "never cached" and "age" not in live.headers


async def middleware() -> None:
    async with run("middleware") as ns, asgi(ns["app"]) as client:
        await client.get("/catalog/book")
        hit = await client.get("/catalog/book", headers={"Cookie": "_ga=GA1.1"})
        assert hit.json() == {"item": "book"} and "age" in hit.headers
        await client.get("/catalog/stock/book")
        assert "age" not in (await client.get("/catalog/stock/book")).headers
        await client.get("/catalog/book", headers={"Cookie": "sid=1"})
        assert "age" not in (await client.get("/catalog/book", headers={"Cookie": "sid=1"})).headers


async def invalidate() -> None:
    async with run("invalidate") as ns:
        await ns["after_import"]()
        assert callable(ns["catalog"])


async def helpers() -> None:
    async with run("helpers") as ns, serve(ns["app"]) as client:
        assert (await client.get("/users/7")).json() == {"uid": 7}
    assert ns["manager"].closed


SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    "fastapi-routes": fastapi_routes,
    "identity-dependency": identity_dependency,
    "starlette-auth": starlette_auth,
    "aiohttp": aiohttp_snippet,
    "middleware": middleware,
    "invalidate": invalidate,
    "helpers": helpers,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_snippet(name: str) -> None:
    await SCENARIOS[name]()
