"""add / incr / expire / touch on every backend and stack, including concurrent sums."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from aiocache_secure import MISSING, Cache, ManualClock

pytestmark = pytest.mark.anyio


async def test_add_only_if_absent(ns: Cache, clock: ManualClock) -> None:
    assert await ns.add("k", "first", ttl=10) is True
    assert await ns.add("k", "second") is False
    assert await ns.get("k") == "first"
    clock.advance(11)
    assert await ns.add("k", "third") is True
    assert await ns.get("k") == "third"
    await ns.set("none", None)
    assert await ns.add("none", 1) is False


async def test_incr(ns: Cache, clock: ManualClock) -> None:
    assert await ns.incr("c") == 1
    assert await ns.incr("c", 5) == 6
    assert await ns.incr("c", -10) == -4
    assert await ns.get("c") == -4
    assert await ns.incr("t", ttl=5) == 1
    assert await ns.incr("t") == 2
    left = await ns.ttl("t")
    assert left is not None and 0 < left <= 5  # an existing counter keeps its expiry
    clock.advance(6)
    assert await ns.incr("t") == 1
    await ns.set("text", "abc")
    with pytest.raises(TypeError):
        await ns.incr("text")
    with pytest.raises(TypeError):
        await ns.incr("c", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ns.incr("c", True)


async def test_expire_and_touch(make_ns: Callable[..., Cache], clock: ManualClock) -> None:
    ns = make_ns("exp", ttl=100)
    await ns.set("k", {"v": 1}, ttl=5)
    assert await ns.expire("k", 50) is True
    left = await ns.ttl("k")
    assert left is not None and 49 < left <= 50
    clock.advance(20)
    assert await ns.touch("k") is True
    left = await ns.ttl("k")
    assert left is not None and 99 < left <= 100
    assert await ns.get("k") == {"v": 1}
    assert await ns.expire("absent", 10) is False
    with pytest.raises(ValueError):
        await ns.expire("k", -1)
    assert await ns.expire("k", 1) is True
    clock.advance(2)
    assert await ns.get("k", MISSING) is MISSING


async def test_concurrent_increments_sum_exactly(ns: Cache) -> None:
    async def worker() -> None:
        for _ in range(50):
            await ns.incr("hits")

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    assert await ns.get("hits") == 1000
    assert ns._updating == {}  # noqa: SLF001 - the per-key queues are gone with their users


async def test_concurrent_add_has_one_winner(ns: Cache) -> None:
    winners: list[int] = []

    async def worker(n: int) -> None:
        if await ns.add("lock", n):
            winners.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(worker, n)
    assert len(winners) == 1
    assert await ns.get("lock") == winners[0]
