"""The response store's hit path: shared reads, the stored entry format, the parsed-entry memo."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import orjson
import pytest

from aiocache_secure import CacheManager, Keyring, ManualClock
from aiocache_secure.backends.memory import MemoryBackend
from aiocache_secure.integrations import _responses
from aiocache_secure.integrations._http import (
    ENTRY_PREFIX,
    HttpPolicy,
    Stored,
    pack_entry,
    unpack_entry,
)
from aiocache_secure.integrations._responses import ResponseStore, invalidate_url

pytestmark = pytest.mark.anyio

HOST = "t"
HEADERS = [("content-type", "application/json"), ("cache-control", "max-age=60")]


class CountedMemory(MemoryBackend):
    """A real memory store that counts batch reads and can hold the next one in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: anyio.Event | None = None
        self.entered = anyio.Event()

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.reads += 1
        hold, self.hold = self.hold, None
        values = await super().get_many(keys)  # read now, answer once released
        if hold is not None:
            self.entered.set()
            await hold.wait()
        return values


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def backend() -> CountedMemory:
    return CountedMemory()


@pytest.fixture
async def store(backend: CountedMemory) -> AsyncIterator[ResponseStore]:
    async with CacheManager(keyring=Keyring.generate(), clock=ManualClock()) as manager:
        cache = manager.namespace("pages", backend=backend, encrypt=True)
        store = ResponseStore(cache, HttpPolicy(ttl=60), what="test", warn_uncached=False)
        assert not store._share_reads  # an in-process store: nothing to gain
        store._share_reads = True  # as on a store across the network, with reads counted here
        yield store


async def filled(store: ResponseStore, body: bytes = b'{"a":1}') -> tuple[str, list[str]]:
    key = store.key(
        scheme="http", host=HOST, path="/a", raw_path="/a", query="", headers=[], identity=None
    )
    assert key is not None
    generation_keys = store.generation_keys(HOST, "/a")
    found, generations = await store.lookup(key, generation_keys)
    assert found is None and generations is not None
    await store.store(key, generations, 200, HEADERS, body, 60)
    return key, generation_keys


async def test_concurrent_lookups_share_one_read(
    store: ResponseStore, backend: CountedMemory
) -> None:
    key, generation_keys = await filled(store)
    backend.reads = 0
    results: list[tuple[Stored | None, object]] = []

    async def look() -> None:
        results.append(await store.lookup(key, generation_keys))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(look)
    assert backend.reads == 1
    assert len(results) == 10 and all(found is not None for found, _ in results)
    assert {found.body for found, _ in results if found is not None} == {b'{"a":1}'}
    generations = [g for _, g in results]
    assert all(g == generations[0] for g in generations)
    assert len({id(g) for g in generations}) == 10  # each caller its own list


async def test_a_lookup_after_the_read_was_issued_reads_again_and_sees_invalidation(
    store: ResponseStore, backend: CountedMemory
) -> None:
    key, generation_keys = await filled(store)
    backend.reads = 0
    backend.hold = release = anyio.Event()
    first: list[Stored | None] = []

    async def early() -> None:
        first.append((await store.lookup(key, generation_keys))[0])

    async with anyio.create_task_group() as tg:
        tg.start_soon(early)
        await backend.entered.wait()  # the shared read is issued and in flight
        await invalidate_url(store.cache, f"http://{HOST}/a")
        late, _ = await store.lookup(key, generation_keys)
        assert late is None  # it did not join the read issued before the invalidation
        release.set()
    assert backend.reads == 2 and first[0] is not None


async def test_joiners_of_a_cancelled_read_read_alone(
    store: ResponseStore, backend: CountedMemory
) -> None:
    key, generation_keys = await filled(store)
    backend.reads = 0
    backend.hold = anyio.Event()  # never set: the leader's read stays in flight
    joined: list[Stored | None] = []

    async def leader(scope: anyio.CancelScope) -> None:
        with scope:
            await store.lookup(key, generation_keys)

    async def joiner() -> None:
        joined.append((await store.lookup(key, generation_keys))[0])

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(leader, scope)
        tg.start_soon(joiner)
        await backend.entered.wait()
        scope.cancel()
    assert backend.reads == 2 and joined[0] is not None and joined[0].body == b'{"a":1}'


async def test_reads_of_a_redis_namespace_are_shared(redis_url: str) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        cache = manager.namespace("pages", backend=redis_url)
        store = ResponseStore(cache, HttpPolicy(ttl=60), what="test", warn_uncached=False)
        assert store._share_reads
        key, generation_keys = await filled(store)
        results: list[Stored | None] = []

        async def look() -> None:
            results.append((await store.lookup(key, generation_keys))[0])

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(look)
        assert [r.body if r else None for r in results] == [b'{"a":1}'] * 5


async def test_a_hit_reuses_the_parsed_entry_until_it_changes(store: ResponseStore) -> None:
    key, generation_keys = await filled(store)
    one, generations = await store.lookup(key, generation_keys)
    two, _ = await store.lookup(key, generation_keys)
    assert one is not None and one is two
    assert generations is not None
    await store.store(key, generations, 200, HEADERS, b'{"a":2}', 60)
    three, _ = await store.lookup(key, generation_keys)
    assert three is not None and three is not one and three.body == b'{"a":2}'


async def test_the_parsed_entries_stay_within_their_budget(
    store: ResponseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_responses, "PARSED_BUDGET", 4000)
    _, generations_of = await filled(store)
    for name in range(20):
        key = f"k{name}"
        found, generations = await store.lookup(key, generations_of)
        assert found is None and generations is not None
        await store.store(key, generations, 200, HEADERS, b"x" * 500, 60)
        assert (await store.lookup(key, generations_of))[0] is not None
    assert store._parsed_size <= 4000 and len(store._parsed) < 20
    big, generations = await store.lookup("big", generations_of)
    assert generations is not None
    await store.store("big", generations, 200, HEADERS, b"y" * 2000, 60)  # over a quarter
    assert (await store.lookup("big", generations_of))[0] is not None
    assert "big" not in store._parsed


def test_entries_round_trip_text_and_binary_bodies() -> None:
    for body in (b'{"a":"\xc3\xa9"}', b"\x00\xff\xfe binary"):
        entry, etag = pack_entry(200, HEADERS, body, generations=["g1"], stored_at=5.0)
        assert entry.startswith(ENTRY_PREFIX)
        found = unpack_entry(entry)
        assert found is not None
        assert (found.status, found.body, found.etag, found.stored_at) == (200, body, etag, 5.0)
        assert found.generations == ("g1",)
        assert (b"content-length", str(len(body)).encode()) in found.raw_headers
        assert (b"etag", etag.encode()) in found.raw_headers


def _head(**fields: object) -> str:
    head = {"s": 200, "h": [], "g": [], "t": 0.0, "e": "u"} | fields
    return ENTRY_PREFIX + orjson.dumps(head).decode() + "\nbody"


@pytest.mark.parametrize(
    "entry",
    [
        None,
        42,
        {"s": 200},
        b"w1{}\nbody",
        "x1{}\nbody",
        ENTRY_PREFIX + '{"s":200}',  # no newline
        ENTRY_PREFIX + "{not json\nbody",
        ENTRY_PREFIX + "[1,2]\nbody",
        _head(s="200"),
        _head(s=True),
        _head(h={"a": "b"}),
        _head(h=[["a"]]),
        _head(h=[["a", 1]]),
        _head(h=[["\u0100", "b"]]),  # not latin-1: no HTTP header
        _head(g="g1"),
        _head(g=[1]),
        _head(t=True),
        _head(t="0"),
        _head(e="z"),
        ENTRY_PREFIX + '{"s":200,"h":[],"g":[],"t":0,"e":"b"}\n!!!',
    ],
)
def test_malformed_entries_are_misses(entry: object) -> None:
    assert unpack_entry(entry) is None
