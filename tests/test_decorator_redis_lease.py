"""@cached(lock=True) on a real Redis server: two managers (two "processes") compute once."""

from __future__ import annotations

import anyio
import pytest

from aiocache_secure import CacheManager, Keyring, cached

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_lease_shared_across_managers(redis_url: str) -> None:
    keyring = Keyring.generate()
    calls: list[int] = []

    def make(manager: CacheManager) -> object:
        manager.namespace("reports", backend=redis_url, ttl=60)

        # A closure over mutable state (calls) gets a key space of its own unless key= names
        # it: the two "processes" must agree on their keys to share one computation.
        @cached(namespace="reports", manager=manager, lock=True, key="report:{report_id}")
        async def build(report_id: int) -> dict[str, int]:
            calls.append(report_id)
            await anyio.sleep(0.3)
            return {"id": report_id}

        return build

    async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
        first, second = make(one), make(two)
        results: list[object] = []

        async def call(fn: object) -> None:
            results.append(await fn(7))  # type: ignore[operator]

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, first)
            await anyio.sleep(0.05)
            tg.start_soon(call, second)
        assert results == [{"id": 7}, {"id": 7}]
        assert calls == [7]
