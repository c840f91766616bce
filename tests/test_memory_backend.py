from __future__ import annotations

import pytest

from aiocache_secure import CacheManager, ConfigurationError, ManualClock, MemoryBackend
from aiocache_secure.backends.memory import ENTRY_OVERHEAD

pytestmark = pytest.mark.anyio


async def test_lru_eviction_by_entries() -> None:
    evicted: list[int] = []
    mem = MemoryBackend(max_entries=3, on_evict=evicted.append)
    for key in (b"a", b"b", b"c"):
        await mem.set(key, b"v", ttl=None)
    assert await mem.get(b"a") == b"v"  # a becomes most recently used
    await mem.set(b"d", b"v", ttl=None)
    assert await mem.get(b"b") is None
    assert [await mem.get(k) for k in (b"a", b"c", b"d")] == [b"v"] * 3
    assert mem.evictions == 1 and evicted == [1]


async def test_byte_budget_counts_overhead() -> None:
    mem = MemoryBackend(max_bytes=3 * (ENTRY_OVERHEAD + 2 + 10))
    for i in range(10):
        await mem.set(b"k%d" % i, b"x" * 10, ttl=None)
        assert mem.used_bytes <= 3 * (ENTRY_OVERHEAD + 2 + 10)
    assert len(mem) == 3
    await mem.set(b"huge", b"x" * 10_000, ttl=None)
    assert await mem.get(b"huge") is None
    assert len(mem) == 3


async def test_expiry_lazy_and_active() -> None:
    clock = ManualClock()
    mem = MemoryBackend(clock=clock)
    await mem.set(b"a", b"1", ttl=5)
    await mem.set(b"b", b"2", ttl=50)
    clock.advance(6)
    assert len(mem) == 2
    await mem.set(b"c", b"3", ttl=None)  # a write sweeps what has expired
    assert len(mem) == 2
    assert await mem.get(b"a") is None
    clock.advance(100)
    assert await mem.get(b"b") is None
    assert len(mem) == 1


async def test_overwrite_keeps_accounting_and_expiry() -> None:
    clock = ManualClock()
    mem = MemoryBackend(clock=clock)
    await mem.set(b"k", b"x" * 100, ttl=5)
    await mem.set(b"k", b"y", ttl=None)
    assert mem.used_bytes == 1 + 1 + ENTRY_OVERHEAD
    clock.advance(10)
    await mem.set(b"other", b"z", ttl=None)
    assert await mem.get(b"k") == b"y"
    for _ in range(1000):
        await mem.set(b"k", b"x", ttl=1000)
    assert len(mem._heap) < 2 * len(mem) + 100  # noqa: SLF001 - stale deadlines are compacted


async def test_prefix_ops_and_scan() -> None:
    mem = MemoryBackend()
    await mem.set_many([(b"p:1", b"a"), (b"p:2", b"b"), (b"q:1", b"c")], ttl=None)
    assert sorted([kv async for kv in mem.scan(b"p:")]) == [(b"p:1", b"a"), (b"p:2", b"b")]
    assert await mem.delete_prefix(b"p:") == 2
    assert await mem.get_many([b"p:1", b"q:1"]) == [None, b"c"]
    await mem.aclose()
    assert len(mem) == 0 and mem.used_bytes == 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_bad_limits(limit: object) -> None:
    with pytest.raises(ConfigurationError):
        MemoryBackend(max_entries=limit)  # type: ignore[arg-type]


async def test_namespace_quota_isolated_and_counted() -> None:
    async with CacheManager() as mgr:
        small = mgr.namespace("small", max_entries=10)
        big = mgr.namespace("big")
        await big.set_many({f"k{i}": i for i in range(100)})
        for i in range(100):
            await small.set(f"k{i}", i)
        assert small.stats.evictions == 90
        assert sum(v is not None for v in await small.get_many([f"k{i}" for i in range(100)])) == 10
        assert await big.get_many([f"k{i}" for i in range(100)]) == list(range(100))


async def test_many_concurrent_tasks() -> None:
    import anyio

    async with CacheManager() as mgr:
        ns = mgr.namespace("conc", max_entries=500)

        async def worker(n: int) -> None:
            for i in range(200):
                await ns.set(f"{n}:{i}", [n, i])
                value = await ns.get(f"{n}:{i}")
                assert value in (None, [n, i])

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(worker, n)
        assert len(mgr.backend_of("conc")) == 500  # type: ignore[arg-type]
