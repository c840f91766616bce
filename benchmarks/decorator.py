"""Hit overhead of ``@cached`` against a bare namespace ``get`` and against peers' decorators.

Run from the project root: ``python -m benchmarks.decorator`` (peers: ``pip install -r
benchmarks/requirements.txt``). Everything is in memory and measured in the same process and
run; figures are the best of several repeats.
Targets: a hit costs at most 3x a bare ``get`` of the namespace, and less than cashews' and
aiocache's decorated hits; a tagged hit (``tags=lambda user_id: [f"user:{user_id}"]``) at most
1.3x an untagged one in memory and 1.1x on Redis (``--redis``: a private redis-server, started
here, on an encrypted namespace); a Pydantic-model hit against fastapi-cache2's
``PydanticCoder`` hit (in releases without one, its ``JsonCoder`` hit and the caller's
``model_validate``, which is what a caller of such a release writes).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiocache_secure import CacheManager, Keyring, cached

Op = Callable[[], Awaitable[Any]]

try:
    from pydantic import BaseModel

    class Profile(BaseModel):
        id: int
        name: str
        plan: str

except ImportError:  # pydantic is optional
    BaseModel = None  # type: ignore[assignment,misc]


async def measure_together(ops: dict[str, Op], n: int, repeats: int) -> dict[str, float]:
    """:func:`measure` of several ops with their runs interleaved, so that a busy moment of the
    machine weighs on all of them alike (their ratio is what the targets are about)."""
    best = dict.fromkeys(ops, float("inf"))
    for _ in range(repeats):
        for name, op in ops.items():
            best[name] = min(best[name], await measure(op, n, 1))
    return best


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

        @cached("bench", ttl=600, manager=manager, tags=lambda user_id: [f"user:{user_id}"])
        async def load_tagged(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        await load_tagged(42)

        async def tagged() -> Any:
            return await load_tagged(42)

        figures = await measure_together(
            {
                "aiocache_secure bare namespace get": bare,
                "aiocache_secure @cached hit": decorated,
                "aiocache_secure @cached tagged hit": tagged,
            },
            n,
            repeats,
        )
        model = await pydantic_hit(manager, n, repeats)
        if model is not None:
            figures["aiocache_secure @cached -> Model hit"] = model
        return figures


async def pydantic_hit(manager: CacheManager, n: int, repeats: int) -> float | None:
    if BaseModel is None:
        return None

    @cached("bench-models", ttl=600, manager=manager)
    async def load(user_id: int) -> Profile:
        return Profile(id=user_id, name="Ada", plan="pro")

    assert isinstance(await load(42), Profile)
    return await measure(lambda: load(42), n, repeats)


async def fastapi_cache_pydantic_hit(n: int, repeats: int) -> float | None:
    try:
        from fastapi_cache import FastAPICache
        from fastapi_cache import coder as coders
        from fastapi_cache.backends.inmemory import InMemoryBackend
        from fastapi_cache.decorator import cache
    except ImportError:
        return None
    if BaseModel is None:
        return None

    FastAPICache.init(InMemoryBackend(), prefix="bench")

    coder = getattr(coders, "PydanticCoder", coders.JsonCoder)

    @cache(expire=600, coder=coder)
    async def load(user_id: int) -> Profile:
        return Profile(id=user_id, name="Ada", plan="pro")

    await load(42)
    if isinstance(await load(42), Profile):
        return await measure(lambda: load(42), n, repeats)

    # 0.2's hit outside a request is the decoded JSON: the model is built by the caller.
    async def as_model() -> Profile:
        return Profile.model_validate(await load(42))

    return await measure(as_model, n, repeats)


async def redis_tagged(n: int, repeats: int) -> dict[str, float]:
    """Untagged and tagged ``@cached`` hits on an encrypted Redis namespace."""
    from benchmarks._redis import redis_server

    with redis_server() as server:
        async with CacheManager(keyring=Keyring.generate()) as manager:
            manager.namespace("bench-redis", backend=server.url, ttl=600)

            @cached("bench-redis", ttl=600, manager=manager)
            async def load(user_id: int) -> dict[str, int]:
                return {"id": user_id}

            @cached(
                "bench-redis", ttl=600, manager=manager, tags=lambda user_id: [f"user:{user_id}"]
            )
            async def load_tagged(user_id: int) -> dict[str, int]:
                return {"id": user_id}

            await load(42)
            await load_tagged(42)
            return await measure_together(
                {
                    "aiocache_secure @cached hit (redis)": lambda: load(42),
                    "aiocache_secure @cached tagged hit (redis)": lambda: load_tagged(42),
                },
                n,
                repeats,
            )


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
    parser.add_argument("--redis", action="store_true", help="also tagged hits on Redis")
    args = parser.parse_args()

    results = await ours(args.n, args.repeats)
    if args.redis:
        results.update(await redis_tagged(max(args.n // 10, 1000), args.repeats))
    for name, run in (
        ("cashews @cache hit", cashews_hit),
        ("aiocache @cached hit", aiocache_hit),
        ("fastapi-cache2 @cache Pydantic-model hit", fastapi_cache_pydantic_hit),
    ):
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
    tagged = results["aiocache_secure @cached tagged hit"]
    print(f"@cached tagged hit / untagged hit: {tagged / hit:.2f}x (target <= 1.3x)")
    if "aiocache_secure @cached hit (redis)" in results:
        ratio = (
            results["aiocache_secure @cached tagged hit (redis)"]
            / results["aiocache_secure @cached hit (redis)"]
        )
        print(f"@cached tagged hit / untagged hit on Redis: {ratio:.2f}x (target <= 1.1x)")
    model = results.get("aiocache_secure @cached -> Model hit")
    peer = results.get("fastapi-cache2 @cache Pydantic-model hit")
    if model is not None and peer is not None:
        print(f"@cached -> Model hit / fastapi-cache2 Pydantic-model hit: {model / peer:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
