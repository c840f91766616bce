"""Key rotation and private namespaces, over every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiocache_secure import MISSING, CacheManager, IntegrityError, Keyring, ManualClock
from aiocache_secure.backend import Backend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def make(backend_url: Any) -> AsyncIterator[Callable[..., CacheManager]]:
    """Managers on the backend under test; backends built by a factory are closed afterwards."""
    built: list[Backend] = []

    def manager(keyring: Keyring, clock: ManualClock, **kw: Any) -> CacheManager:
        backend = backend_url() if callable(backend_url) else backend_url
        if not isinstance(backend, str):
            built.append(backend)
        return CacheManager(keyring=keyring, default_backend=backend, clock=clock, **kw)

    yield manager
    for backend in built:
        await backend.aclose()


async def key_ids(store: Backend, prefix: bytes) -> set[bytes]:
    return {value[1:5] async for _, value in store.scan(prefix)}


@pytest.mark.parametrize("hash_keys", [True, False])
async def test_rotation(
    backend_url: Any, make: Callable[..., CacheManager], clock: ManualClock, hash_keys: bool
) -> None:
    old = Keyring.generate()
    mgr = make(old, clock)
    async with mgr:
        ns = mgr.namespace("rot", encrypt=True, hash_keys=hash_keys)
        await ns.set_many({f"k{i}": i for i in range(20)}, ttl=600)
        await ns.set("forever", "x")
        new = old.rotate()
        assert await mgr.rewrap(new) == 0
        # Written under the old primary, still readable after rotate().
        assert await ns.get("k3") == 3
        await ns.set("fresh", "y")
        store = mgr.backend_of("rot")
        assert await key_ids(store, ns._prefix) == {old.primary_id, new.primary_id}  # noqa: SLF001
        assert await ns.rotate_keys() == 21
        assert await key_ids(store, ns._prefix) == {new.primary_id}  # noqa: SLF001
        assert await ns.rotate_keys() == 0
        left = await ns.ttl("k1")
        assert left is not None and 590 < left <= 600
        assert await ns.ttl("forever") == float("inf")
        assert await ns.get_many([f"k{i}" for i in range(20)]) == list(range(20))


async def test_dropping_old_key_makes_unrotated_entries_misses(
    backend_url: Any, make: Callable[..., CacheManager], clock: ManualClock
) -> None:
    old = Keyring.generate()
    async with make(old, clock) as mgr:
        ns = mgr.namespace("drop", encrypt=True)
        await ns.set("before", 1)
        new = old.rotate()
        await mgr.rewrap(new)
        await ns.set("after", 2)
        await mgr.rewrap(new.without(old.primary_id))
        assert await ns.get("before", MISSING) is MISSING
        assert ns.stats.tampered == 1
        assert await ns.get("after") == 2


async def test_private_namespace_erase(
    backend_url: Any, make: Callable[..., CacheManager], clock: ManualClock
) -> None:
    keyring = Keyring.generate()
    async with make(keyring, clock) as mgr:
        alice = mgr.namespace("user:alice", private=True)
        bob = mgr.namespace("user:bob", private=True)
        await alice.set_many({f"a{i}": i for i in range(10)})
        await bob.set("b", "bob's")
        store = mgr.backend_of("user:alice")
        # A raw copy of alice's entries (a backup, a replica).
        backup = {k: v async for k, v in store.scan(alice._prefix)}  # noqa: SLF001
        assert len(backup) == 10
        assert await mgr.erase("user:alice") is True
        assert await mgr.erase("user:alice") is False
        assert await alice.get("a1", MISSING) is MISSING
        # Restoring the raw copy does not bring anything back.
        for k, v in backup.items():
            await store.set(k, v, ttl=None)
        assert await alice.get_many([f"a{i}" for i in range(10)], default=MISSING) == [MISSING] * 10
        assert {k: v async for k, v in alice.items()} == {}
        assert await bob.get("b") == "bob's"
        # The erased namespace can be used again, with a new data key.
        await alice.set("new", 1)
        assert await alice.get("new") == 1


async def test_private_namespace_rewrap_and_restart(
    backend_url: Any, make: Callable[..., CacheManager], clock: ManualClock
) -> None:
    keyring = Keyring.generate()
    rotated = keyring.rotate()
    async with make(keyring, clock) as mgr:
        ns = mgr.namespace("user:1", private=True)
        await ns.set("k", "v")
        assert await mgr.rewrap(rotated) == 1
        assert await ns.get("k") == "v"
    if backend_url == "memory://":
        return  # memory does not outlive its manager; the rest checks a reload from the store
    # A new process that only holds the new key reads the re-wrapped data key.
    async with make(rotated.without(keyring.primary_id), clock) as mgr2:
        assert await mgr2.namespace("user:1", private=True).get("k") == "v"
    # The old keyring alone cannot unwrap the re-wrapped record: a typed error, and no silent
    # replacement of the data key (which would orphan the namespace's entries).
    async with make(keyring, clock) as mgr3:
        with pytest.raises(IntegrityError):
            await mgr3.namespace("user:1", private=True).get("k")
    async with make(rotated, clock) as mgr4:
        assert await mgr4.namespace("user:1", private=True).get("k") == "v"


async def test_export_exactness_three_users(
    backend_url: Any, make: Callable[..., CacheManager], clock: ManualClock
) -> None:
    async with make(Keyring.generate(), clock) as mgr:
        users = {f"user:{u}": mgr.namespace(f"user:{u}", private=True) for u in range(3)}
        expected = {
            name: {f"{name}/k{i}": {"i": i, "who": name} for i in range(1000)} for name in users
        }
        for name, ns in users.items():
            await ns.set_many(expected[name])
        for name, ns in users.items():
            assert {k: v async for k, v in ns.items()} == expected[name]
        store = mgr.backend_of("user:0")
        backup = {k: v async for k, v in store.scan(users["user:0"].key_prefix)}
        assert await mgr.erase("user:0")
        for k, v in backup.items():
            await store.set(k, v, ttl=None)
        assert {k: v async for k, v in users["user:0"].items()} == {}
        assert users["user:0"].stats.tampered == 1000
        for name in ("user:1", "user:2"):
            assert {k: v async for k, v in users[name].items()} == expected[name]
