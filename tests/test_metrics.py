from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aiocache_secure import Cache, CacheManager, Keyring, MemoryBackend
from aiocache_secure.metrics import MeteredCache
from aiocache_secure.metrics.otel import OpenTelemetryMetrics

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
        assert duration >= 0
        self.rows.append((operation, namespace, outcome))


async def test_hook_sees_outcomes_never_keys() -> None:
    hook = Recorder()
    store = MemoryBackend()
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        ns = mgr.namespace("m", backend=store, encrypt=True, metrics=hook)
        plain = mgr.namespace("plain")
        assert type(ns) is MeteredCache and type(plain) is Cache
        await ns.set("secret-key", 1)
        await ns.get("secret-key")
        await ns.get("absent")
        async for key, value in store.scan(b""):
            await store.set(key, value[:-1] + bytes([value[-1] ^ 1]), ttl=None)
        await ns.get("secret-key")
        await ns.incr("n")
        with pytest.raises(TypeError):
            await ns.set(1, 1)  # type: ignore[arg-type]
    assert hook.rows == [
        ("set", "m", "ok"),
        ("get", "m", "hit"),
        ("get", "m", "miss"),
        ("get", "m", "tampered"),
        ("incr", "m", "ok"),
        ("set", "m", "error"),
    ]
    assert all("secret" not in part for row in hook.rows for part in row)


async def test_opentelemetry_in_memory_reader() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with CacheManager() as mgr:
        ns = mgr.namespace("otel", metrics=OpenTelemetryMetrics(provider))
        await ns.set("k", 1)
        for _ in range(3):
            await ns.get("k")
        await ns.get("nope")
    data = reader.get_metrics_data()
    points: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    counts = {
        (p.attributes["operation"], p.attributes["outcome"]): p.value
        for p in points["aiocache_secure.operations"]
    }
    assert counts == {("set", "ok"): 1, ("get", "hit"): 3, ("get", "miss"): 1}
    assert all(p.attributes["namespace"] == "otel" for p in points["aiocache_secure.operations"])
    durations = points["aiocache_secure.operation.duration"]
    assert sum(p.count for p in durations) == 5
    provider.shutdown()


async def test_metrics_hook_type_checked() -> None:
    async with CacheManager() as mgr:
        with pytest.raises(TypeError):
            mgr.namespace("x", metrics=object())  # type: ignore[arg-type]


async def test_published_stats_sum_across_managers() -> None:
    store = MemoryBackend()
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
        a = one.namespace("shared", backend=store)
        b = two.namespace("shared", backend=store)
        await a.set("k", 1)
        await a.get("k")
        await b.get("k")
        await b.get("nope")
        assert await one.publish_stats() == 1
        assert await two.publish_stats() == 1
        totals = await one.read_stats("shared")
        assert totals["hits"] == 2 and totals["misses"] == 1 and totals["sets"] == 1
        await a.clear()  # entries only: published counters stay
        assert (await two.read_stats("shared"))["hits"] == 2
        await one.erase("shared")
        assert await two.read_stats("shared") == {}
        with pytest.raises(ValueError):
            await one.publish_stats(ttl=-1)
        with pytest.raises(KeyError):
            await one.read_stats("unknown")
