"""Tags beyond the contract suite: @cached(tags=...), fail_open, padding, erasure, closed
managers, metrics, and the decorator's single batch read."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aiocache_secure import (
    MISSING,
    BackendUnavailable,
    CacheManager,
    ClosedError,
    Keyring,
    cached,
)
from aiocache_secure.backends.memory import MemoryBackend
from aiocache_secure.metrics import MetricsHook

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingStore(MemoryBackend):
    """The memory backend, counting its read calls; ``down`` makes batch calls fail."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.batches = 0
        self.down = False

    async def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return await super().get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.batches += 1
        if self.down:
            raise BackendUnavailable("test store is down")
        return await super().get_many(keys)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        if self.down:
            raise BackendUnavailable("test store is down")
        await super().set_many(items, ttl=ttl)


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), breaker=None) as mgr:
        yield mgr


async def test_cached_with_tags_list_and_callable(manager: CacheManager) -> None:
    calls: list[int] = []

    @cached(namespace="profiles", ttl=60, manager=manager, tags=lambda user_id: [f"user:{user_id}"])
    async def load_profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "n": len(calls)}

    @cached(namespace="lists", ttl=60, manager=manager, tags=["catalog"])
    async def catalog() -> list[int]:
        calls.append(0)
        return [len(calls)]

    first = await load_profile(42)
    assert await load_profile(42) == first
    await load_profile(7)
    assert await catalog() == await catalog()
    assert calls == [42, 7, 0]
    await load_profile.cache.invalidate_tags(["user:42"])
    assert (await load_profile(42))["n"] == 4
    assert await load_profile(7) == {"id": 7, "n": 2}
    await catalog.cache.invalidate_tags(["catalog"])
    assert await catalog() == [5]
    assert calls == [42, 7, 0, 42, 0]


async def test_cached_tagged_hit_is_one_batch_read(manager: CacheManager) -> None:
    store = CountingStore()
    manager.namespace("one-trip", backend=store, encrypt=True)

    @cached(namespace="one-trip", ttl=60, manager=manager, tags=lambda k: [f"t:{k}", "all"])
    async def load(k: str) -> str:
        return k * 2

    assert await load("a") == "aa"
    store.gets = store.batches = 0
    for _ in range(5):
        assert await load("a") == "aa"
    assert (store.gets, store.batches) == (0, 5)


async def test_cached_treats_an_untagged_entry_as_predating_its_tags(
    manager: CacheManager,
) -> None:
    calls: list[str] = []

    @cached(namespace="upgrade", ttl=60, manager=manager, key="k:{k}", tags=["t"])
    async def load(k: str) -> str:
        calls.append(k)
        return "computed"

    await manager.namespace("upgrade").set("k:x", "old, untagged")
    assert await load("x") == "computed"
    assert await load("x") == "computed"
    assert calls == ["x"]


async def test_cached_bad_tags(manager: CacheManager) -> None:
    for bad in ("user", [1], [""], ["x" * 300], 5):
        with pytest.raises((TypeError, ValueError)):
            cached(namespace="bad", manager=manager, tags=bad)  # type: ignore[arg-type]

    @cached(namespace="bad", manager=manager, tags=lambda k: k)
    async def junk(k: Any) -> int:
        return 1

    with pytest.raises(TypeError, match="tags= function"):
        await junk("not a list")
    with pytest.raises(ValueError, match="tags= function"):
        await junk([""])

    def explode(k: int) -> list[str]:
        raise LookupError("no tags for you")

    @cached(namespace="bad", manager=manager, tags=explode)
    async def raising(k: int) -> int:
        return k

    with pytest.raises(LookupError):
        await raising(1)


async def test_fail_open_unreadable_record_is_a_miss_never_a_stale_hit() -> None:
    store = CountingStore()
    async with CacheManager(keyring=Keyring.generate(), breaker=None) as manager:
        ns = manager.namespace("fo", backend=store, encrypt=True, fail_open=True)
        await ns.set("k", "v", tags=["t"])
        await ns.set("plain", "p")
        store.down = True
        assert await ns.get("k", MISSING) is MISSING
        assert await ns.exists("k") is False
        assert await ns.get("plain") == "p"  # untagged entries need no record
        assert ns.stats.errors >= 2
        with pytest.raises(BackendUnavailable):
            await ns.invalidate_tags(["t"])  # never skipped silently
        store.down = False
        assert await ns.get("k") == "v"  # kept: only its check failed

        closed = manager.namespace("fc", backend=store, encrypt=True)
        await closed.set("k", "v", tags=["t"])
        store.down = True
        with pytest.raises(BackendUnavailable):
            await closed.get("k")


async def test_padded_tag_invalidated_miss_costs_what_a_hit_costs(
    manager: CacheManager,
) -> None:
    store = CountingStore()
    ns = manager.namespace("padded", backend=store, encrypt=True, pad_timing=True)
    value = {"blob": "x" * 2000}
    await ns.set("hit", value, tags=["keep"])
    await ns.set("gone", value, tags=["drop"])
    await ns.invalidate_tags(["drop"])

    def reads() -> tuple[int, int]:
        return store.gets, store.batches

    async def timed(key: str) -> float:
        started = time.perf_counter_ns()
        await ns.get(key)
        return time.perf_counter_ns() - started

    before = reads()
    assert await ns.get("hit") == value
    hit_reads = tuple(b - a for a, b in zip(before, reads(), strict=True))
    before = reads()
    assert await ns.get("gone") is None
    miss_reads = tuple(b - a for a, b in zip(before, reads(), strict=True))
    assert hit_reads == miss_reads == (1, 1)  # the entry, then its records: same work
    hits, misses = [], []
    for _ in range(200):
        hits.append(await timed("hit"))
        misses.append(await timed("hit"))  # warm-up symmetry for the store's LRU
    for _ in range(100):
        await ns.set("gone", value, tags=["drop"])
        await ns.invalidate_tags(["drop"])
        misses.append(await timed("gone"))
        hits.append(await timed("hit"))
    ratio = statistics.median(misses[-100:]) / statistics.median(hits[-100:])
    assert 0.5 < ratio < 2.0


async def test_erase_shreds_tag_records(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'cache'}"
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring) as manager:
        private = manager.namespace("user:9", backend=url, private=True)
        await private.set("k", "v", tags=["t"])
        store = manager.backend_of("user:9")
        assert len([k async for k, _ in store.scan(private.key_prefix)]) == 2
        assert await manager.erase("user:9") is True
        assert [k async for k, _ in store.scan(private.key_prefix)] == []
        again = manager.namespace("user:9", backend=url, private=True)
        assert await again.get("k") is None
        await again.set("k", "new", tags=["t"])
        assert await again.get("k") == "new"


async def test_closed_manager_refuses_tags(manager: CacheManager) -> None:
    ns = manager.namespace("closing")
    await manager.aclose()
    with pytest.raises(ClosedError):
        await ns.set("k", 1, tags=["t"])
    with pytest.raises(ClosedError):
        await ns.invalidate_tags(["t"])
    with pytest.raises(ClosedError):
        await ns.set_many({"k": 1}, tags=["t"])


async def test_metered_namespaces_pass_tags_on() -> None:
    recorded: list[tuple[str, str]] = []

    class Hook(MetricsHook):
        def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
            recorded.append((operation, outcome))

    async with CacheManager() as manager:
        ns = manager.namespace("metered", metrics=Hook())
        await ns.set("k", 1, tags=["t"])
        await ns.set_many({"m": 2}, tags=["t"])
        assert await ns.add("a", 3, tags=["t"]) is True
        await ns.invalidate_tags(["t"])
        assert await ns.get_many(["k", "m", "a"]) == [None, None, None]
    assert ("invalidate_tags", "ok") in recorded


TAGS_PAGE = (Path(__file__).resolve().parent.parent / "docs" / "tags.md").read_text()


async def test_the_tags_page_example_runs() -> None:
    import re

    page = TAGS_PAGE
    (code,) = re.findall(r"<!-- snippet: tags -->\n```python\n(.*?)```", page, re.S)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/tags.md", "exec"), scope)  # noqa: S102 - the project's own page
    async with scope["manager"]:
        users = scope["users"]
        await scope["store_profile"](42, {"name": "Ada"})
        assert await users.get("profile:42") == {"name": "Ada"}
        await scope["on_permissions_changed"](42)
        assert await users.get_many(["profile:42", "roles:42", "first-login:42"]) == [None] * 3
        assert await scope["load_profile"](7) == {"id": "7"}
        await scope["on_profile_changed"](7)
        assert await scope["load_profile"].cache.get_many(["x"]) == [None]


async def test_tags_on_a_store_without_atomic_updates() -> None:
    from aiocache_secure.testing import SwitchableBackend

    store = SwitchableBackend()
    async with CacheManager(keyring=Keyring.generate(), breaker=None) as manager:
        ns = manager.namespace("switch", backend=store, encrypt=True, fail_open=True)
        await ns.set("k", "v", tags=["t"])
        assert await ns.get("k") == "v"
        store.down = True
        assert await ns.get("k", MISSING) is MISSING
        store.down = False
        await ns.invalidate_tags(["t"])
        assert await ns.get("k", MISSING) is MISSING
