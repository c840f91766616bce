"""Hit overhead of ``@cached`` against a bare namespace ``get`` and against peers' decorators.

Run from the project root: ``python -m benchmarks.decorator`` (peers: ``pip install -r
benchmarks/requirements.txt``). Everything is in memory and measured in the same process and
run; figures are the best of several repeats.
Targets: a hit costs at most 3x a bare ``get`` of the namespace, and less than cashews' and
aiocache's decorated hits.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiocache_secure import CacheManager, cached

Op = Callable[[], Awaitable[Any]]


async def measure(op: Op, n: int, repeats: int) -> float:
    """Best ns per call of ``await op()`` over ``repeats`` runs of ``n`` calls."""
    for _ in range(min(n, 1000)):
        await op()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            await op()
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


async def ours(n: int, repeats: int) -> dict[str, float]:
    async with CacheManager() as manager:
        ns = manager.namespace("bench", ttl=600)

        @cached("bench", ttl=600, manager=manager)
        async def load(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        await load(42)
        bare_key = f"{load.__module__}:{load.__qualname__}(i42;)"
        assert await ns.get(bare_key) == {"id": 42}

        async def bare() -> Any:
            return await ns.get(bare_key)

        async def decorated() -> Any:
            return await load(42)

        return {
            "aiocache_secure bare namespace get": await measure(bare, n, repeats),
            "aiocache_secure @cached hit": await measure(decorated, n, repeats),
        }


async def cashews_hit(n: int, repeats: int) -> float | None:
    try:
        from cashews import cache
    except ImportError:
        return None
    cache.setup("mem://")

    @cache(ttl="10m")
    async def load(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    await load(42)
    result = await measure(lambda: load(42), n, repeats)
    await cache.close()
    return result


async def aiocache_hit(n: int, repeats: int) -> float | None:
    try:
        import aiocache
    except ImportError:
        return None

    @aiocache.cached(ttl=600)
    async def load(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    await load(42)
    return await measure(lambda: load(42), n, repeats)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="calls per repeat")
    parser.add_argument("-r", "--repeats", type=int, default=7)
    args = parser.parse_args()

    results = await ours(args.n, args.repeats)
    for name, run in (("cashews @cache hit", cashews_hit), ("aiocache @cached hit", aiocache_hit)):
        figure = await run(args.n, args.repeats)
        if figure is None:
            print(f"({name}: not installed; pip install -r benchmarks/requirements.txt)")
        else:
            results[name] = figure

    bare = results["aiocache_secure bare namespace get"]
    hit = results["aiocache_secure @cached hit"]
    width = max(len(name) for name in results)
    for name, ns_op in results.items():
        print(f"{name:<{width}}  {ns_op:9.0f} ns/op  {ns_op / bare:5.2f}x bare get")
    print()
    print(f"@cached hit / bare get: {hit / bare:.2f}x (target <= 3x)")
    for name in ("cashews @cache hit", "aiocache @cached hit"):
        if name in results:
            print(f"@cached hit / {name}: {hit / results[name]:.2f}x (target < 1x)")


if __name__ == "__main__":
    asyncio.run(main())
