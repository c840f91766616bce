"""Many private namespaces share one backend and stay small."""

from __future__ import annotations

import tracemalloc

import pytest

from aiocache_secure import CacheManager, Keyring, MemoryBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # runtime-independent bookkeeping; the contract suite covers trio


async def test_ten_thousand_private_namespaces_one_backend() -> None:
    store = MemoryBackend()
    async with CacheManager(keyring=Keyring.generate(), default_backend=store) as mgr:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for u in range(10_000):
            ns = mgr.namespace(f"user:{u}", private=True)
            await ns.set("profile", {"u": u})
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert {id(mgr.backend_of(f"user:{u}")) for u in range(0, 10_000, 97)} == {id(store)}
        # Entry + wrapped data key + namespace handle: a few KiB each, not megabytes.
        assert used / 10_000 < 16 * 1024, used
        assert await mgr.namespace("user:9999", private=True).get("profile") == {"u": 9999}
        assert len(store) == 20_000


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


async def test_pickle_and_msgpack_opt_in() -> None:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        pickled = mgr.namespace("p", serializer="pickle", encrypt=True)
        await pickled.set("pt", Point(3))
        assert await pickled.get("pt") == Point(3)
        packed = mgr.namespace("m", serializer="msgpack")
        await packed.set("b", {"raw": b"\x00\xff", "n": [1, 2]})
        assert await packed.get("b") == {"raw": b"\x00\xff", "n": [1, 2]}
