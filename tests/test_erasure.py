"""Erasure of private namespaces reaches every process, and leaves nothing behind in this one."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from aiocache_secure import MISSING, CacheManager, ConfigurationError, Keyring
from aiocache_secure.clock import ManualClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis driver needs asyncio; the bookkeeping is runtime-independent


@pytest.fixture(params=["file", "redis", "mongo"])
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


async def test_erase_reaches_another_process_through_a_separate_key_vault(
    file_url: str, redis_url: str
) -> None:
    keyring, clock = Keyring.generate(), ManualClock()

    def manager() -> CacheManager:
        return CacheManager(
            keyring=keyring, default_backend=redis_url, key_vault=file_url, clock=clock
        )

    async with manager() as eraser, manager() as stale:
        await eraser.namespace("user:1", private=True).set("k", "v")
        theirs = stale.namespace("user:1", private=True)
        assert await theirs.get("k") == "v"
        store = eraser.backend_of("user:1")
        backup = {k: v async for k, v in store.scan(theirs.key_prefix)}
        assert await eraser.erase("user:1")
        for key, value in backup.items():
            await store.set(key, value, ttl=None)
        clock.advance(1.0)
        assert await theirs.get("k", MISSING) is MISSING
        await theirs.set("after", 1)
    async with manager() as fresh:
        assert await fresh.namespace("user:1", private=True).get("after") == 1


def test_key_check_interval_validation() -> None:
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError):
            CacheManager(key_check_interval=bad)
    with pytest.raises(TypeError):
        CacheManager(key_check_interval="1")  # type: ignore[arg-type]


async def test_private_namespace_with_timing_padding() -> None:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        ns = mgr.namespace("user:1", private=True, pad_timing=True)
        await ns.set("a", 1)
        assert await ns.get("a") == 1
        assert await ns.get("b", MISSING) is MISSING
        assert await mgr.erase("user:1")
        assert await ns.get("a", MISSING) is MISSING
        await ns.set("a", 2)
        assert await ns.get("a") == 2


async def test_erased_and_idle_private_namespaces_are_released() -> None:
    async with CacheManager(keyring=Keyring.generate(), max_private_namespaces=3) as mgr:
        erased = mgr.namespace("user:erased", private=True)
        await erased.set("k", 1)
        assert await mgr.erase("user:erased")
        assert "user:erased" in mgr.namespaces  # still held here, and usable
        del erased
        gc.collect()
        assert "user:erased" not in mgr.namespaces
        held = mgr.namespace("user:0", private=True)
        await held.set("k", 0)
        for u in range(1, 6):
            await mgr.namespace(f"user:{u}", private=True).set("k", u)
        gc.collect()
        # The three most recently requested stay open; older idle ones are let go, except one
        # the application still holds: it keeps working, is found again by name, and is erased
        # like any other.
        assert set(mgr.namespaces) == {"user:0", "user:3", "user:4", "user:5"}
        assert mgr.namespace("user:0", private=True) is held
        assert await held.get("k") == 0
        assert await mgr.erase("user:0")
        assert await held.get("k", MISSING) is MISSING
    with pytest.raises(ConfigurationError):
        CacheManager(max_private_namespaces=0)


def _stats_records(prefix: bytes) -> bytes:
    return prefix[:-1] + b"!stats:"


async def test_forged_stats_records_are_ignored(
    file_url: str, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    clock = ManualClock()
    async with CacheManager(
        keyring=Keyring.generate(), default_backend=file_url, clock=clock
    ) as mgr:
        users, other = mgr.namespace("users"), mgr.namespace("other")
        await users.set("a", 1)
        await users.get("a")
        assert await mgr.publish_stats(ttl=60) == 2
        assert (await mgr.read_stats("users"))["hits"] == 1
        store = mgr.backend_of("users")
        prefix = _stats_records(users.key_prefix)
        ((key, genuine),) = [item async for item in store.scan(prefix)]
        forged = json.dumps({"hits": 1000, "published_at": clock()}).encode()
        await store.set(prefix + b"forged", forged, ttl=None)
        await store.set(prefix + b"edited", genuine.replace(b'"hits":1', b'"hits":9'), ttl=None)
        moved = _stats_records(other.key_prefix) + key[len(prefix) :]
        await store.set(moved, genuine, ttl=None)  # users' record offered as other's
        assert (await mgr.read_stats("users"))["hits"] == 1
        assert users.stats.tampered == 2
        assert await mgr.read_stats("other") == {}
        assert other.stats.tampered == 1
        # A genuine record replayed past its authenticated expiry is not believed either.
        clock.advance(61)
        for record_key in (key, prefix + b"forged", prefix + b"edited"):
            await store.delete(record_key)
        await store.set(key, genuine, ttl=None)
        assert await mgr.read_stats("users") == {}
        reasons = [
            r.audit["reason"] for r in audit_records() if r.audit["event"] == "tamper_detected"
        ]
        assert reasons == ["stats_record"] * 3


@pytest.mark.parametrize("fail_open", [True, False])
async def test_an_unreadable_vault_at_lease_end_fails_like_the_store(
    tmp_path: Any, fail_open: bool
) -> None:
    """When the lease runs out and the vault cannot be read, the key is never used again: a
    fail-open namespace answers misses and drops writes, a fail-closed one raises."""
    import os

    from aiocache_secure import BackendUnavailable

    vault, clock = tmp_path / "vault", ManualClock()
    manager = CacheManager(keyring=Keyring.generate(), key_vault=f"file://{vault}", clock=clock)
    async with manager:
        ns = manager.namespace("user:3", private=True, fail_open=fail_open)
        await ns.set("k", "v")
        assert await ns.get("k") == "v"
        os.rename(vault, tmp_path / "moved")
        os.symlink(tmp_path / "moved", vault)  # the vault path no longer names our directory
        clock.advance(1.0)
        if fail_open:
            assert await ns.get("k", MISSING) is MISSING
            assert await ns.get_many(["k"], MISSING) == [MISSING]
            await ns.set("k2", "w")  # a no-op
            assert await ns.delete("k") is False
            assert ns.stats.errors >= 1
        else:
            with pytest.raises(BackendUnavailable):
                await ns.get("k")
            with pytest.raises(BackendUnavailable):
                await ns.set("k2", "w")
