"""Tags on every backend and stack: invalidation, reads of every kind, atomic updates, export,
raw-store secrecy and failing closed on a missing or damaged tag record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aiocache_secure import MISSING, Cache, CacheManager, ManualClock
from aiocache_secure.tags import RECORD
from tests.contract.conftest import STACKS

pytestmark = pytest.mark.anyio

SECRET_TAG = "tenant:acme-secret-tag"


async def raw_store(manager: CacheManager, ns: Cache) -> dict[bytes, bytes]:
    store = manager.backend_of(ns.name)
    return {k: v async for k, v in store.scan(ns.key_prefix)}


async def test_invalidate_turns_every_tagged_entry_into_a_miss(ns: Cache) -> None:
    await ns.set("a", {"v": 1}, ttl=60, tags=["t1"])
    await ns.set("b", [1, 2], tags=["t1", "t2"])
    await ns.set_many({"c": 3, "d": None}, tags=["t2"])
    assert await ns.add("e", "added", tags=["t1"]) is True
    await ns.set("plain", "untagged")
    keys = ["a", "b", "c", "d", "e", "plain"]
    assert await ns.get_many(keys, MISSING) == [{"v": 1}, [1, 2], 3, None, "added", "untagged"]
    assert [await ns.get(k, MISSING) for k in keys] == [
        {"v": 1},
        [1, 2],
        3,
        None,
        "added",
        "untagged",
    ]
    assert all([await ns.exists(k) for k in keys])
    left = await ns.ttl("a")
    assert left is not None and 0 < left <= 60

    await ns.invalidate_tags(["t1"])
    assert await ns.get_many(keys, MISSING) == [MISSING, MISSING, 3, None, MISSING, "untagged"]
    for key in ("a", "b", "e"):
        assert await ns.get(key, MISSING) is MISSING
        assert await ns.exists(key) is False
        assert await ns.ttl(key) is None
    assert await ns.get("c") == 3

    await ns.set("a", "again", tags=["t1"])  # a new entry takes the tag's new version
    assert await ns.get("a") == "again"
    assert await ns.add("b", "re-added", tags=["t1"]) is True  # the invalidated entry is dead
    await ns.invalidate_tags(["t2", "unused"])
    assert await ns.get_many(keys, MISSING) == [
        "again",
        "re-added",
        MISSING,
        MISSING,
        MISSING,
        "untagged",
    ]


@pytest.mark.not_for("a memory store is private to its namespace object", backend_name=("memory",))
async def test_invalidation_is_seen_at_once_by_another_manager(
    manager: CacheManager, ns: Cache, backend_name: str, backend_url: Any, stack_name: str
) -> None:
    """Another manager on the same store and keys: another process's view, sharing no memo."""
    await ns.set("k", "v", tags=["x"])
    assert await ns.get("k") == "v"  # warm this namespace's memo
    backend = backend_url() if callable(backend_url) else backend_url
    async with CacheManager(
        keyring=manager.keyring, default_backend=backend, clock=ns.clock
    ) as other:
        twin = other.namespace(ns.name, **STACKS[stack_name])
        assert await twin.get("k") == "v"
        await twin.invalidate_tags(["x"])
        assert await ns.get("k", MISSING) is MISSING
        assert await ns.get_many(["k"], MISSING) == [MISSING]
        await ns.set("k", "new", tags=["x"])
        assert await twin.get("k") == "new"
    if not isinstance(backend, str):
        await backend.aclose()


async def test_incr_expire_and_touch_keep_an_entrys_tags(
    make_ns: Callable[..., Cache], clock: ManualClock
) -> None:
    ns = make_ns("tagged-atomic", ttl=100)
    await ns.set("n", 1, ttl=10, tags=["counter"])
    assert await ns.incr("n", 2) == 3
    assert await ns.expire("n", 50) is True
    assert await ns.touch("n") is True
    left = await ns.ttl("n")
    assert left is not None and 99 < left <= 100
    clock.advance(1)
    assert await ns.get("n") == 3
    await ns.invalidate_tags(["counter"])
    assert await ns.get("n", MISSING) is MISSING
    assert await ns.expire("n", 10) is False
    assert await ns.incr("n") == 1  # a new, untagged counter
    await ns.invalidate_tags(["counter"])
    assert await ns.get("n") == 1


async def test_tagged_entries_expire(ns: Cache, clock: ManualClock) -> None:
    await ns.set("k", "v", ttl=5, tags=["t"])
    clock.advance(6)
    assert await ns.get("k", MISSING) is MISSING
    assert await ns.get_many(["k"], MISSING) == [MISSING]


@pytest.mark.not_for("hashed unencrypted namespaces cannot be exported", stack_name=("hashed",))
async def test_export_skips_invalidated_entries_and_tag_records(
    make_ns: Callable[..., Cache], stack_name: str
) -> None:
    ns = make_ns("tagged-export")
    await ns.set("keep", 1, tags=["a"])
    await ns.set("drop", 2, tags=["b"])
    await ns.set("plain", 3)
    await ns.invalidate_tags(["b"])
    assert {k: v async for k, v in ns.items()} == {"keep": 1, "plain": 3}
    assert ns.stats.tampered == 0


async def test_tag_names_never_reach_the_store(manager: CacheManager, ns: Cache) -> None:
    await ns.set("k", "value", tags=[SECRET_TAG])
    await ns.set_many({"m": 1}, tags=[SECRET_TAG, SECRET_TAG + "-2"])
    await ns.invalidate_tags([SECRET_TAG])
    await ns.set("k2", "value", tags=[SECRET_TAG])
    stored = await raw_store(manager, ns)
    assert len(stored) >= 5  # entries and records alike are in the namespace's prefix
    needle = b"acme-secret"
    for key, value in stored.items():
        assert needle not in key and needle not in value
        assert needle.hex().encode() not in key


async def test_a_missing_or_damaged_tag_record_fails_closed(
    manager: CacheManager, ns: Cache
) -> None:
    await ns.set("k", "v", tags=["t"])
    await ns.set("other", "x")
    before = await raw_store(manager, ns)
    await ns.set("other", "x", tags=["u"])
    (record,) = set(await raw_store(manager, ns)) - set(before)  # the one new key: u's record
    store = manager.backend_of(ns.name)
    await store.set(record, b"\x00damaged\x00", ttl=None)
    assert await ns.get("other", MISSING) is MISSING
    assert await ns.get("k") == "v"  # other tags' entries are untouched
    await ns.set("other", "y", tags=["u"])  # a damaged record is replaced by the next write
    assert await ns.get("other") == "y"
    await store.delete(record)
    assert await ns.get("other", MISSING) is MISSING
    assert await ns.get_many(["other", "k"], MISSING) == [MISSING, "v"]


async def test_cleared_records_make_tagged_entries_misses(ns: Cache) -> None:
    await ns.set("k", "v", tags=["t"])
    await ns._stack.delete(RECORD + ns._tags.ids(["t"])[0])  # noqa: SLF001 - evicted record
    assert await ns.get("k", MISSING) is MISSING
    assert await ns.get_many(["k"], MISSING) == [MISSING]
    assert await ns.exists("k") is False


async def test_bad_tags_are_refused_before_any_write(ns: Cache) -> None:
    bad: list[tuple[object, type[Exception]]] = [
        ("user:42", TypeError),
        (b"x", TypeError),
        ([1], TypeError),
        ([None], TypeError),
        ([""], ValueError),
        (["x" * 257], ValueError),
        (["\ud800"], ValueError),
        ([f"t{i}" for i in range(17)], ValueError),
        ({"t": 1}, TypeError),
    ]
    for tags, error in bad:
        with pytest.raises(error) as caught:
            await ns.set("k", 1, tags=tags)  # type: ignore[arg-type]
        assert "user:42" not in str(caught.value)
        with pytest.raises(error):
            await ns.set_many({"k": 1}, tags=tags)  # type: ignore[arg-type]
        with pytest.raises(error):
            await ns.add("k", 1, tags=tags)  # type: ignore[arg-type]
        with pytest.raises(error):
            await ns.invalidate_tags(tags)  # type: ignore[arg-type]
    assert await ns.get("k", MISSING) is MISSING
    await ns.set("k", 1, tags=["é" * 128, "t"])  # 256 bytes: the limit itself is fine
    assert await ns.get("k") == 1
