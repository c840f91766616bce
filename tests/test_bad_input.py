"""Every public entry point refuses bad input with a clear, typed error."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from aiocache_secure import (
    MISSING,
    Cache,
    CacheManager,
    ClosedError,
    ConfigurationError,
    Keyring,
    ManualClock,
    SerializationError,
    ValueTooLarge,
    cached,
)
from aiocache_secure.policy import MAX_TTL

pytestmark = pytest.mark.anyio


@pytest.fixture
async def manager() -> Any:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        yield mgr


@pytest.mark.parametrize("key", [1, 1.5, b"bytes", None, ("t",), ["l"], object()])
async def test_non_str_keys(manager: CacheManager, key: Any) -> None:
    ns = manager.namespace("n")
    for call in (
        lambda: ns.get(key),
        lambda: ns.set(key, 1),
        lambda: ns.delete(key),
        lambda: ns.exists(key),
        lambda: ns.ttl(key),
        lambda: ns.get_many([key]),
        lambda: ns.set_many({key: 1}),
        lambda: ns.delete_many([key]),
    ):
        with pytest.raises(TypeError):
            await call()
    assert ns.stats.sets == 0


async def test_oversized_and_invalid_keys(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    with pytest.raises(ValueError, match="4096"):
        await ns.set("k" * 5000, 1)
    with pytest.raises(ValueError, match="unicode"):
        await ns.set("\udc80", 1)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1: "int key"},
        {"s": {(1, object())}},
        bytearray(b"bytes"),
        float("nan"),
        [float("inf")],
        complex(1, 2),
        Decimal("1e999999999"),
    ],
    ids=["object", "int-key", "set-of-object", "bytearray", "nan", "inf", "complex", "decimal"],
)
async def test_unserializable_values(manager: CacheManager, value: Any) -> None:
    ns = manager.namespace("n")
    with pytest.raises(SerializationError):
        await ns.set("k", value)
    with pytest.raises(SerializationError):
        await ns.set_many({"a": 1, "k": value})
    assert await ns.get_many(["k", "a"], default=MISSING) == [MISSING, MISSING]


async def test_circular_value(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        await ns.set("k", loop)


def ttl_entry_points(ns: Cache, manager: CacheManager, ttl: Any) -> list[Callable[[], Any]]:
    """Every call that takes a lifetime, each given ``ttl`` (async ones return an awaitable)."""

    async def function() -> int:
        return 1

    return [
        lambda: ns.set("k", 1, ttl=ttl),
        lambda: ns.set_many({"k": 1}, ttl=ttl),
        lambda: ns.add("new", 1, ttl=ttl),
        lambda: ns.expire("k", ttl),
        lambda: ns.incr("counter", ttl=ttl),
        lambda: manager.namespace("bad-ttl", ttl=ttl),
        lambda: manager.namespace("bad-max-ttl", max_ttl=ttl),
        lambda: cached("n", ttl=ttl)(function),
        lambda: cached("n", ttl=1, stale_ttl=ttl)(function),
    ]


async def refused(call: Callable[[], Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        result = call()
        if inspect.isawaitable(result):
            await result


@pytest.mark.parametrize(
    "ttl",
    [-1, 0, -0.0, math.nan, math.inf, -math.inf, 1e17, 10**400],
    ids=["-1", "0", "-0.0", "nan", "inf", "-inf", "1e17", "10**400"],
)
async def test_bad_ttl_values(manager: CacheManager, ttl: float) -> None:
    ns = manager.namespace("n")
    await ns.set("k", 0)
    for call in ttl_entry_points(ns, manager, ttl):
        await refused(call, ValueError)
    assert await ns.get("k") == 0
    assert await ns.get_many(["new", "counter"], default=MISSING) == [MISSING, MISSING]


@pytest.mark.parametrize("ttl", ["10", True, False, [1], b"1"])
async def test_bad_ttl_types(manager: CacheManager, ttl: Any) -> None:
    ns = manager.namespace("n")
    for call in ttl_entry_points(ns, manager, ttl):
        await refused(call, TypeError)


async def test_ttl_up_to_what_entries_hold(manager: CacheManager) -> None:
    """MAX_TTL is accepted everywhere; beyond it, a namespace's max_ttl still clamps a write,
    and ttl + stale_ttl (the lifetime a stale-while-revalidate entry is stored with) counts."""
    ns = manager.namespace("n")
    await ns.set("k", {"v": 1}, ttl=MAX_TTL)
    assert await ns.get("k") == {"v": 1}
    assert MAX_TTL - 60 < (await ns.ttl("k") or 0) <= MAX_TTL
    assert await ns.expire("k", MAX_TTL)
    clamped = manager.namespace("clamped", max_ttl=60)
    await clamped.set("k", 1, ttl=1e17)
    assert 0 < (await clamped.ttl("k") or 0) <= 60
    assert await clamped.expire("k", 1e17)
    assert manager.namespace("longest", ttl=MAX_TTL, max_ttl=MAX_TTL).policy.ttl == MAX_TTL

    @cached("n", ttl=MAX_TTL, manager=manager)
    async def forever() -> list[int]:
        return [1]

    assert await forever() == [1]
    assert await forever() == [1]
    assert forever.cache.stats.hits == 2
    with pytest.raises(ValueError, match="stale_ttl"):
        cached("n", ttl=MAX_TTL, stale_ttl=1)


async def test_clock_beyond_what_entries_hold() -> None:
    async with CacheManager(keyring=Keyring.generate(), clock=ManualClock(1e17)) as mgr:
        ns = mgr.namespace("n")
        with pytest.raises(ValueError, match="expiry"):
            await ns.set("k", 1, ttl=1)
        await ns.set("never", 1)
        assert await ns.get("never") == 1


async def test_oversized_value_writes_nothing(manager: CacheManager, audit_records: Any) -> None:
    ns = manager.namespace("small", max_value_bytes=100)
    await ns.set("k", "old")
    with pytest.raises(ValueTooLarge) as info:
        await ns.set("k", "x" * 200)
    assert "xxxx" not in str(info.value)
    with pytest.raises(ValueTooLarge):
        await ns.set_many({"a": 1, "k": "x" * 200})
    assert await ns.get("k") == "old"
    assert await ns.get("a", MISSING) is MISSING
    assert any(r.getMessage().startswith("limit_exceeded") for r in audit_records())


async def test_huge_value_refused_by_default(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    with pytest.raises(ValueTooLarge):
        await ns.set("k", "x" * (17 * 1024 * 1024))


@pytest.mark.parametrize(
    "name", ["", " lead", "trail ", "new\nline", "nul\x00", "x" * 201, "__acs_internal"]
)
async def test_invalid_namespace_names(manager: CacheManager, name: str) -> None:
    with pytest.raises(ConfigurationError):
        manager.namespace(name)


@pytest.mark.parametrize("name", [None, 1, b"bytes"])
async def test_namespace_name_types(manager: CacheManager, name: Any) -> None:
    with pytest.raises(TypeError):
        manager.namespace(name)


@pytest.mark.parametrize("url", ["ftp://x", "memory", "", "http://host", "memory://host:1"])
async def test_unknown_backend_urls(manager: CacheManager, url: str) -> None:
    with pytest.raises(ConfigurationError):
        manager.namespace("n", backend=url)


async def test_backend_wrong_type(manager: CacheManager) -> None:
    with pytest.raises(TypeError):
        manager.namespace("n", backend=42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "policy",
    [
        {"max_entries": 0},
        {"max_bytes": -5},
        {"max_value_bytes": 0},
        {"ttl": 100, "max_ttl": 10},
        {"ttl_jitter": 0.9},
        {"serializer": "yaml"},
        {"encrypt": False, "private": True},
    ],
)
async def test_bad_policies(manager: CacheManager, policy: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        manager.namespace("n", **policy)


@pytest.mark.parametrize(
    "policy", [{"max_entries": 1.5}, {"encrypt": "yes"}, {"hash_keys": 1}, {"ttl_jitter": "a"}]
)
async def test_bad_policy_types(manager: CacheManager, policy: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        manager.namespace("n", **policy)


async def test_same_name_different_config(manager: CacheManager) -> None:
    first = manager.namespace("n", ttl=10)
    assert manager.namespace("n", ttl=10) is first
    with pytest.raises(ConfigurationError):
        manager.namespace("n", ttl=20)


@pytest.mark.parametrize(
    "change",
    [{"memo": False}, {"pad_timing": True}, {"serializer": "msgpack"}, {"backend": "memory://x"}],
)
async def test_same_name_compares_every_option(
    manager: CacheManager, change: dict[str, Any]
) -> None:
    first = manager.namespace("n", ttl=10, strict=False)
    # What an option resolves to is what counts: the manager's strict, the default encryption.
    assert manager.namespace("n", ttl=10.0, strict=None, encrypt=None) is first
    with pytest.raises(ConfigurationError, match="different configuration"):
        manager.namespace("n", **{"ttl": 10, **change})


async def test_closed_manager_everywhere() -> None:
    mgr = CacheManager()
    ns = mgr.namespace("n")
    await mgr.aclose()
    await mgr.aclose()  # idempotent
    assert mgr.closed
    for call in (
        lambda: ns.get("k"),
        lambda: ns.set("k", 1),
        lambda: ns.ttl("k"),
        lambda: ns.exists("k"),
        lambda: ns.set_many({"k": 1}),
        lambda: ns.delete_many(["k"]),
        lambda: ns.rotate_keys(),
        lambda: mgr.erase("n"),
        lambda: mgr.rewrap(),
    ):
        with pytest.raises(ClosedError):
            await call()
    with pytest.raises(ClosedError):
        async for _ in ns.items():
            pass
    with pytest.raises(ClosedError):
        async with mgr:
            pass


async def test_shared_store_needs_a_keyring() -> None:
    async with CacheManager() as mgr:
        from aiocache_secure import MemoryBackend

        class Remote(MemoryBackend):
            """Any store that is not this process's memory counts as shared."""

        with pytest.raises(ConfigurationError, match="keyring"):
            mgr.namespace("n", backend=Remote())
        with pytest.raises(ConfigurationError, match="pickle"):
            mgr.namespace("p", backend=Remote(), encrypt=False, serializer="pickle")


async def test_quota_on_instance_is_refused(manager: CacheManager) -> None:
    from aiocache_secure import MemoryBackend

    with pytest.raises(ConfigurationError):
        manager.namespace("n", backend=MemoryBackend(), max_entries=10)


async def test_bad_manager_arguments() -> None:
    with pytest.raises(TypeError):
        CacheManager(keyring="secret")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CacheManager(default_backend="gopher://x")
    with pytest.raises(TypeError):
        CacheManager(strict="yes")  # type: ignore[arg-type]


async def test_set_many_needs_a_mapping(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    with pytest.raises(TypeError):
        await ns.set_many([("a", 1)])  # type: ignore[arg-type]


async def test_ttls_accept_timedelta() -> None:
    from datetime import timedelta

    from aiocache_secure import CacheManager, ManualClock

    clock = ManualClock()
    async with CacheManager(clock=clock) as manager:
        ns = manager.namespace("td", ttl=timedelta(minutes=5), max_ttl=timedelta(hours=1))
        assert manager.namespace("td", ttl=300, max_ttl=3600) is ns  # the same configuration
        await ns.set("a", 1, ttl=timedelta(seconds=30))
        assert await ns.ttl("a") == pytest.approx(30)
        await ns.set_many({"b": 2}, ttl=timedelta(seconds=10))
        assert await ns.expire("a", timedelta(seconds=90))
        assert await ns.ttl("a") == pytest.approx(90)
        await ns.set("c", 3, ttl=timedelta(days=2))
        assert await ns.ttl("c") == pytest.approx(3600)  # clamped by max_ttl
        with pytest.raises(ValueError):
            await ns.set("d", 4, ttl=timedelta(seconds=-1))
