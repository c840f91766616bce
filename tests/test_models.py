"""Models through the facade and the decorator: Pydantic v2 models, dataclasses and containers
of them come back as instances of the declared type, on stores that leave the process too."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any
from uuid import UUID

import anyio
import pydantic
import pytest

from aiocache_secure import MISSING, CacheManager, Keyring, cached

pytestmark = pytest.mark.anyio


class Profile(pydantic.BaseModel):
    id: int
    name: str
    joined: datetime.date
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.datetime
    ref: UUID


PROFILE = Profile(id=1, name="ann", joined=datetime.date(2024, 5, 6), tags=("a", "b"))
POINT = Point(3, datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC), UUID(int=7))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "file", "redis"])
def url(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_url")


async def test_cached_functions_return_instances_of_their_declared_type(url: str) -> None:
    calls: list[str] = []
    async with CacheManager(keyring=Keyring.generate(), default_backend=url) as manager:

        @cached(namespace="models", ttl=60, manager=manager, key="profile:{user_id}")
        async def profile(user_id: int) -> Profile:
            calls.append("profile")
            return PROFILE

        @cached(namespace="models", ttl=60, manager=manager, key="many")
        async def many() -> list[Profile]:
            calls.append("many")
            return [PROFILE, PROFILE]

        @cached(namespace="models", ttl=60, manager=manager, key="by-name")
        async def by_name() -> dict[str, Point]:
            calls.append("by_name")
            return {"p": POINT}

        @cached(namespace="models", ttl=60, manager=manager, key="maybe:{found}")
        async def maybe(found: bool) -> Profile | None:
            calls.append("maybe")
            return PROFILE if found else None

        for _ in range(2):
            assert await profile(1) == PROFILE and type(await profile(1)) is Profile
            assert await many() == [PROFILE, PROFILE]
            assert all(type(p) is Profile for p in await many())
            got = await by_name()
            assert got == {"p": POINT} and type(got["p"]) is Point
            assert await maybe(True) == PROFILE and await maybe(False) is None
        assert sorted(calls) == ["by_name", "many", "maybe", "maybe", "profile"]


async def test_callers_sharing_a_computation_get_their_own_instances(memory_url: str) -> None:
    async with CacheManager(default_backend=memory_url) as manager:
        release = anyio.Event()

        @cached(namespace="models", ttl=60, manager=manager)
        async def slow() -> Profile:
            await release.wait()
            return PROFILE.model_copy()

        results: list[Profile] = []

        async def call() -> None:
            results.append(await slow())

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(call)
            await anyio.sleep(0.01)
            release.set()
        assert len(results) == 3 and all(r == PROFILE and type(r) is Profile for r in results)
        assert len({id(r) for r in results}) == 3


async def test_an_entry_that_no_longer_fits_the_declared_type_is_a_miss(memory_url: str) -> None:
    async with CacheManager(default_backend=memory_url) as manager:
        ns = manager.namespace("models")
        await ns.set("profile", {"id": "not a number", "name": 5})

        @cached(namespace="models", ttl=60, manager=manager, key="profile")
        async def profile() -> Profile:
            return PROFILE

        assert await profile() == PROFILE
        assert await ns.get("profile", type=Profile) == PROFILE  # recomputed and stored


def test_a_return_type_the_cache_cannot_store_is_refused_at_decoration() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="cannot be stored|not storable"):

        @cached(namespace="models", key="k")
        async def load() -> Opaque:
            return Opaque()


async def test_a_forward_reference_resolves_at_the_first_call(memory_url: str) -> None:
    async with CacheManager(default_backend=memory_url) as manager:
        cached_late = cached(namespace="models", manager=manager, key="late")(_late)
        assert await cached_late() == LaterModel(v=1)
        assert type(await cached_late()) is LaterModel


async def _late() -> LaterModel:
    return LaterModel(v=1)


class LaterModel(pydantic.BaseModel):
    v: int


async def test_the_facade_reads_a_declared_type(url: str) -> None:
    async with CacheManager(keyring=Keyring.generate(), default_backend=url) as manager:
        ns = manager.namespace("models")
        await ns.set("p", PROFILE)  # a model is stored as its fields
        await ns.set("pt", POINT)
        assert await ns.get("p") == PROFILE.model_dump()
        assert await ns.get("p", type=Profile) == PROFILE
        assert await ns.get("nope", MISSING, type=Profile) is MISSING
        assert await ns.get("pt", type=Point) == POINT
        assert await ns.get_many(["p", "nope"], type=Profile) == [PROFILE, None]
        assert await ns.get("pt", "bad", type=Profile) == "bad"  # does not fit: a miss


async def test_bad_type_arguments_are_type_errors(memory_url: str) -> None:
    async with CacheManager(default_backend=memory_url) as manager:
        ns = manager.namespace("models")
        await ns.set("k", 1)
        with pytest.raises(TypeError):
            await ns.get("k", type="Profile")  # an unresolved name is not a type


async def test_export_writes_tagged_values_instead_of_failing(tmp_path: Any) -> None:
    import json

    from aiocache_secure.serializers import export_form

    value = {"when": POINT.at, "raw": b"\x00\x01", "pair": (1, 2), "plain": [1, "a"]}
    async with CacheManager(keyring=Keyring.generate()) as manager:
        ns = manager.namespace("export", encrypt=True)
        await ns.set("v", value)
        await ns.set("plain", {"a": [1, 2]})
        out = tmp_path / "export.jsonl"
        assert await ns.export(out) == 2
    rows = {row["key"]: row["value"] for row in map(json.loads, out.read_text().splitlines())}
    assert rows["plain"] == {"a": [1, 2]}  # plain JSON is exported as it is
    assert rows["v"] == export_form(value) and "$dt" in json.dumps(rows["v"])
