"""The examples run as written: each app is loaded from its file and driven in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from .asgi_lifespan import serve

pytestmark = pytest.mark.anyio
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_fastapi_example() -> None:
    example = load("fastapi_app")
    alice = {"Authorization": "Bearer alice"}
    async with serve(example.app) as client:
        miss, hit = await client.get("/profiles/7"), await client.get("/profiles/7")
        assert miss.json() == hit.json() == {"id": 7, "name": "user 7"}
        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert "age" in hit.headers
        assert (await client.put("/profiles/7")).status_code == 200
        assert (await client.get("/profiles/7")).headers["x-cache"] == "MISS"
        assert (await client.post("/me/notes?text=hi", headers=alice)).json() == ["hi"]
        assert (await client.get("/me/notes", headers=alice)).json() == ["hi"]
        bob = await client.get("/me/notes", headers={"Authorization": "Bearer bob"})
        assert bob.json() == []
        assert (await client.delete("/me", headers=alice)).json() == {"erased": True}
        assert (await client.get("/me/notes", headers=alice)).json() == []
        assert (await client.get("/me/notes")).status_code == 401
    assert example.manager.closed


async def test_aiohttp_example() -> None:
    example = load("aiohttp_app")
    alice = {"Authorization": "Bearer alice"}
    client = TestClient(TestServer(example.make_app(), host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.get("/profiles/7") as miss, client.get("/profiles/7") as hit:
            assert await miss.json() == await hit.json() == {"id": 7, "name": "user 7"}
            assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
        async with client.post("/me/notes?text=hi", headers=alice) as response:
            assert await response.json() == ["hi"]
        async with client.get("/me/notes", headers={"Authorization": "Bearer bob"}) as response:
            assert await response.json() == []
        async with client.delete("/me", headers=alice) as response:
            assert await response.json() == {"erased": True}
        async with client.get("/me/notes", headers=alice) as response:
            assert await response.json() == []
    finally:
        await client.close()
    assert example.manager.closed
