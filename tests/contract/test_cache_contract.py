"""The Cache contract, run over every backend and every layer stack."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from aiocache_secure import MISSING, Cache, CacheError, CacheManager, ManualClock

pytestmark = pytest.mark.anyio

VALUES: list[Any] = [
    {"plan": "pro", "n": [1, 2.5, None, True]},
    [1, "two", {"3": 4}],
    "tëxt ✓",
    "",
    0,
    -(2**70),
    3.25,
    True,
    False,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
async def test_round_trip(ns: Cache, value: Any) -> None:
    await ns.set("k", value)
    assert await ns.get("k", default=MISSING) == value
    assert ns.stats.hits == 1 and ns.stats.sets == 1


async def test_miss_and_default(ns: Cache) -> None:
    assert await ns.get("absent") is None
    assert await ns.get("absent", default=MISSING) is MISSING
    assert await ns.get("absent", default=7) == 7
    assert ns.stats.misses == 3 and ns.stats.hits == 0


async def test_cached_none_is_a_hit(ns: Cache) -> None:
    await ns.set("none", None)
    assert await ns.get("none", default=MISSING) is None
    assert await ns.exists("none")
    assert ns.stats.hits == 1


async def test_overwrite_and_delete(ns: Cache) -> None:
    await ns.set("k", 1)
    await ns.set("k", 2)
    assert await ns.get("k") == 2
    assert await ns.delete("k") is True
    assert await ns.delete("k") is False
    assert await ns.get("k", MISSING) is MISSING
    assert not await ns.exists("k")
    assert ns.stats.deletes == 1


async def test_unicode_and_awkward_keys(ns: Cache) -> None:
    keys = [
        "",
        " ",
        "ключ",
        "a:b",
        "a=b",
        "../../etc/passwd",
        "x\x00y",
        "/abs",
        "..\\win",
        "k" * 4000,
    ]
    for i, key in enumerate(keys):
        await ns.set(key, i)
    for i, key in enumerate(keys):
        assert await ns.get(key) == i


async def test_ttl_and_expiry(ns: Cache, clock: ManualClock) -> None:
    await ns.set("short", "v", ttl=10)
    await ns.set("forever", "v")
    left = await ns.ttl("short")
    assert left is not None and 9 < left <= 10
    assert await ns.ttl("forever") == math.inf
    assert await ns.ttl("absent") is None
    clock.advance(10.5)
    assert await ns.get("short", MISSING) is MISSING
    assert await ns.ttl("short") is None
    assert await ns.get("forever") == "v"


async def test_namespace_default_ttl_and_clamp(
    make_ns: Callable[..., Cache], clock: ManualClock
) -> None:
    ns = make_ns("clamped", ttl=30, max_ttl=60)
    await ns.set("default", 1)
    await ns.set("long", 2, ttl=10_000)
    default_left = await ns.ttl("default")
    long_left = await ns.ttl("long")
    assert default_left is not None and 29 < default_left <= 30
    assert long_left is not None and 59 < long_left <= 60
    clock.advance(61)
    assert await ns.get_many(["default", "long"], default=MISSING) == [MISSING, MISSING]


async def test_batches_keep_order(ns: Cache) -> None:
    await ns.set_many({"a": 1, "b": None, "c": [3]}, ttl=30)
    assert await ns.get_many(["c", "x", "b", "a"], default=MISSING) == [[3], MISSING, None, 1]
    assert await ns.get_many([]) == []
    assert await ns.delete_many(["a", "c", "x"]) == 2
    assert await ns.get_many(["a", "b", "c"], default=MISSING) == [MISSING, None, MISSING]
    assert ns.stats.sets == 3


async def test_batch_expiry(ns: Cache, clock: ManualClock) -> None:
    await ns.set_many({"a": 1, "b": 2}, ttl=5)
    clock.advance(6)
    assert await ns.get_many(["a", "b"], default=MISSING) == [MISSING, MISSING]


async def test_namespaces_are_isolated(make_ns: Callable[..., Cache]) -> None:
    one, two = make_ns("one"), make_ns("two")
    await one.set("k", "one")
    await two.set("k", "two")
    assert await one.get("k") == "one"
    assert await two.get("k") == "two"
    assert await one.clear() == 1
    assert await one.get("k", MISSING) is MISSING
    assert await two.get("k") == "two"


async def test_prefix_lookalike_namespaces(make_ns: Callable[..., Cache]) -> None:
    # Names and keys that would collide under naive "namespace:key" joining.
    a, b = make_ns("a:b"), make_ns("a")
    await a.set("c", 1)
    await b.set("b:c", 2)
    assert await a.get("c") == 1
    assert await b.get("b:c") == 2
    await b.clear()
    assert await a.get("c") == 1


async def test_items_exports_exactly_the_namespace(
    make_ns: Callable[..., Cache], stack_name: str
) -> None:
    mine, other = make_ns("mine"), make_ns("other")
    expected = {f"key-{i}": {"i": i} for i in range(50)}
    await mine.set_many(expected)
    await other.set("key-0", "not mine")
    if stack_name == "hashed":
        with pytest.raises(CacheError):
            [item async for item in mine.items()]
        return
    exported = {key: value async for key, value in mine.items()}
    assert exported == expected


async def test_items_skip_expired(
    make_ns: Callable[..., Cache], clock: ManualClock, stack_name: str
) -> None:
    ns = make_ns("exp")
    await ns.set("old", 1, ttl=1)
    await ns.set("new", 2, ttl=100)
    clock.advance(2)
    if stack_name == "hashed":
        with pytest.raises(CacheError):
            [item async for item in ns.items()]
    else:
        assert {k: v async for k, v in ns.items()} == {"new": 2}


async def test_clear_returns_count(ns: Cache) -> None:
    await ns.set_many({str(i): i for i in range(20)})
    assert await ns.clear() == 20
    assert await ns.get_many([str(i) for i in range(20)], default=MISSING) == [MISSING] * 20


async def test_closed_manager(manager: CacheManager, ns: Cache) -> None:
    from aiocache_secure import ClosedError

    await ns.set("k", 1)
    await manager.aclose()
    for call in (ns.get("k"), ns.set("k", 2), ns.delete("k"), ns.clear(), ns.get_many(["k"])):
        with pytest.raises(ClosedError):
            await call
    with pytest.raises(ClosedError):
        manager.namespace("later")
