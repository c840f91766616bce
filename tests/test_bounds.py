"""Memory bounds, static rules and event-loop health."""

from __future__ import annotations

import ast
import gc
import os
from pathlib import Path

import pytest

from aiocache_secure import CacheManager, ValueTooLarge

PACKAGE = Path(__file__).resolve().parent.parent / "aiocache_secure"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_flooding_a_bounded_namespace_keeps_rss_near_its_limit() -> None:
    limit = 32 * 1024 * 1024
    async with CacheManager() as mgr:
        ns = mgr.namespace("flood", max_bytes=limit)
        value = "x" * 10_000
        for i in range(200):  # warm-up: allocator pools, code paths
            await ns.set(f"warm{i}", value)
        gc.collect()
        before = rss_bytes()
        peak = before
        for i in range(8 * limit // 10_000):
            await ns.set(f"k{i}", value)
            if i % 500 == 0:
                peak = max(peak, rss_bytes())
        gc.collect()
        peak = max(peak, rss_bytes())
        store = mgr.backend_of("flood")
        assert store.used_bytes <= limit  # type: ignore[attr-defined]
        assert ns.stats.evictions > 0
        assert peak - before <= 1.25 * limit, (peak - before) / limit


@pytest.mark.anyio
async def test_a_million_tiny_keys() -> None:
    async with CacheManager() as mgr:
        ns = mgr.namespace("tiny")
        batch: dict[str, int] = {}
        for i in range(1_000_000):
            batch[str(i)] = i
            if len(batch) == 20_000:
                await ns.set_many(batch)
                batch.clear()
        assert len(mgr.backend_of("tiny")) == 1_000_000  # type: ignore[arg-type]
        assert await ns.get_many(["0", "999999", "500000", "x"]) == [0, 999999, 500000, None]
        with pytest.raises(ValueTooLarge):
            await ns.set("big", "x" * (17 * 1024 * 1024))


def test_pickle_is_imported_only_by_the_opt_in_serializer() -> None:
    importers = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(
                n.split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal") for n in names
            ):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert importers and set(importers) == {"serializers.py"}
