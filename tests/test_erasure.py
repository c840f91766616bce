"""Erasure of private namespaces reaches every process, and leaves nothing behind in this one."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from aiocache_secure import MISSING, CacheManager, ConfigurationError, Keyring
from aiocache_secure.clock import ManualClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis driver needs asyncio; the bookkeeping is runtime-independent


@pytest.fixture(params=["file", "redis"])
def shared_url(request: pytest.FixtureRequest) -> Any:
    """A store that two managers (two processes, as far as the cache can tell) share."""
    return request.getfixturevalue(f"{request.param}_url")


async def test_erase_reaches_a_process_that_had_loaded_the_key(shared_url: str) -> None:
    keyring, clock = Keyring.generate(), ManualClock()
    eraser = CacheManager(keyring=keyring, default_backend=shared_url, clock=clock)
    stale = CacheManager(keyring=keyring, default_backend=shared_url, clock=clock)
    async with eraser, stale:
        mine = eraser.namespace("user:1", private=True)
        await mine.set_many({"k": "v", "j": "w"})
        theirs = stale.namespace("user:1", private=True)
        assert await theirs.get("k") == "v"  # the data key is loaded, the entry memoized
        assert await theirs.get_many(["k", "j"]) == ["v", "w"]
        store = eraser.backend_of("user:1")
        backup = {k: v async for k, v in store.scan(mine.key_prefix)}
        assert await eraser.erase("user:1")
        for key, value in backup.items():  # a backup restored after the erasure
            await store.set(key, value, ttl=None)
        clock.advance(1.0)  # the default key_check_interval
        assert await theirs.get_many(["k", "j"], default=MISSING) == [MISSING, MISSING]
        assert await theirs.get("k", MISSING) is MISSING
        # Writes after the erasure use a fresh data key, which every process can read.
        await theirs.set("after", 2)
        assert await mine.get("after") == 2
    async with CacheManager(keyring=keyring, default_backend=shared_url, clock=clock) as fresh:
        ns = fresh.namespace("user:1", private=True)
        assert await ns.get("after") == 2
        assert await ns.get("k", MISSING) is MISSING


async def test_key_check_interval_is_configurable(file_url: str) -> None:
    keyring, clock = Keyring.generate(), ManualClock()
    eraser = CacheManager(keyring=keyring, default_backend=file_url, clock=clock)
    stale = CacheManager(
        keyring=keyring, default_backend=file_url, clock=clock, key_check_interval=30.0
    )
    async with eraser, stale:
        await eraser.namespace("user:1", private=True).set("k", "v")
        theirs = stale.namespace("user:1", private=True)
        assert await theirs.get("k") == "v"
        store = eraser.backend_of("user:1")
        backup = {k: v async for k, v in store.scan(theirs.key_prefix)}
        assert await eraser.erase("user:1")
        for key, value in backup.items():
            await store.set(key, value, ttl=None)
        clock.advance(29.0)  # within the lease, the loaded key is still trusted (documented)
        assert await theirs.get("k") == "v"
        clock.advance(1.0)
        assert await theirs.get("k", MISSING) is MISSING


def test_key_check_interval_validation() -> None:
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError):
            CacheManager(key_check_interval=bad)
    with pytest.raises(TypeError):
        CacheManager(key_check_interval="1")  # type: ignore[arg-type]
