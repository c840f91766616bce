"""GET / SET / get_many throughput on Redis: raw redis.asyncio vs aiocache vs cashews vs ours.

Run from the repository root (it starts its own redis-server on a free loopback port)::

    python -m benchmarks.redis [--seconds 0.5] [--rounds 3] [--case get_many ...]

(not ``python benchmarks/redis.py``: that would shadow the ``redis`` package).

Every contender talks to the same private server in the same run; ratios are against raw
redis.asyncio (hiredis parser). With two CPUs or more, the server runs on the last and this
process on the first, so they never queue for one CPU (``--no-pin`` leaves it to the OS).
"secure" is a full aiocache_secure namespace (hashed keys, AES-256-GCM encryption, size limit)
with its verified-read memo at the default 8 MiB, then the same with the memo off, so that every
read hashes its key and decrypts its entry, then the same with ``near_cache=True`` (hot reads
from process memory, kept coherent by Redis invalidation), beside cashews' own client-side cache
(``client_side=True``); "backend" is our RedisBackend alone (bytes in, bytes
out). Every contender reads the same 1,000 keys over and over: a hot set, which the memo serves
whole for 100 B values; it never keeps 10 KB ones.
Peers: ``pip install -r benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.backends.redis import RedisBackend

from ._redis import redis_server

KEYS = 1000
Op = Callable[[int], Awaitable[Any]]


class Contender:
    """get(i), set(i), get_many(i) over keys 0..KEYS-1 of one value size."""

    name = ""

    async def open(self, port: int, size: int) -> None: ...

    async def close(self) -> None: ...


class Raw(Contender):
    name = "raw redis.asyncio"

    async def open(self, port: int, size: int) -> None:
        self.client = redis.asyncio.Redis(port=port, max_connections=64)
        self.keys = [f"raw:{i}".encode() for i in range(KEYS)]
        self.value = b"x" * size
        await self.client.mset(dict.fromkeys(self.keys, self.value))

    async def get(self, i: int) -> Any:
        return await self.client.get(self.keys[i])

    async def set(self, i: int) -> Any:
        return await self.client.set(self.keys[i], self.value)

    async def get_many(self, i: int) -> Any:
        return await self.client.mget(self.keys[i : i + 100])

    async def close(self) -> None:
        await self.client.aclose()


class Backend(Contender):
    name = "ours: RedisBackend"

    async def open(self, port: int, size: int) -> None:
        self.store = RedisBackend(f"redis://127.0.0.1:{port}/0")
        self.keys = [f"backend:{i}".encode() for i in range(KEYS)]
        self.value = b"x" * size
        await self.store.set_many([(k, self.value) for k in self.keys], ttl=None)

    async def get(self, i: int) -> Any:
        return await self.store.get(self.keys[i])

    async def set(self, i: int) -> Any:
        return await self.store.set(self.keys[i], self.value, ttl=None)

    async def get_many(self, i: int) -> Any:
        return await self.store.get_many(self.keys[i : i + 100])

    async def close(self) -> None:
        await self.store.aclose()


class Secure(Contender):
    name = "ours: secure namespace"
    memo_bytes = 8 * 2**20  # the default

    async def open(self, port: int, size: int) -> None:
        self.manager = CacheManager(keyring=Keyring.generate(), memo_bytes=self.memo_bytes)
        self.ns = self.manager.namespace(
            "bench", backend=f"redis://127.0.0.1:{port}/0", max_value_bytes=1_000_000
        )
        self.keys = [f"secure:{i}" for i in range(KEYS)]
        self.value = "x" * size
        await self.ns.set_many(dict.fromkeys(self.keys, self.value))

    async def get(self, i: int) -> Any:
        return await self.ns.get(self.keys[i])

    async def set(self, i: int) -> Any:
        return await self.ns.set(self.keys[i], self.value)

    async def get_many(self, i: int) -> Any:
        return await self.ns.get_many(self.keys[i : i + 100])

    async def close(self) -> None:
        await self.manager.aclose()


class SecureNoMemo(Secure):
    name = "ours: secure, memo off"
    memo_bytes = 0


class SecureNear(Secure):
    name = "ours: secure, near cache"

    async def open(self, port: int, size: int) -> None:
        self.manager = CacheManager(keyring=Keyring.generate(), memo_bytes=self.memo_bytes)
        self.ns = self.manager.namespace(
            "near",
            backend=f"redis://127.0.0.1:{port}/0",
            max_value_bytes=1_000_000,
            near_cache=True,
        )
        self.keys = [f"near:{i}" for i in range(KEYS)]
        self.value = "x" * size
        await self.ns.set_many(dict.fromkeys(self.keys, self.value))
        await self.ns.get_many(self.keys)  # starts tracking; the warm-up fills the near cache


class Aiocache(Contender):
    name = "aiocache RedisCache"

    async def open(self, port: int, size: int) -> None:
        from aiocache import RedisCache

        self.cache = RedisCache(endpoint="127.0.0.1", port=port, pool_max_size=64)
        self.keys = [f"aiocache:{i}" for i in range(KEYS)]
        self.value = "x" * size
        await self.cache.multi_set([(k, self.value) for k in self.keys])

    async def get(self, i: int) -> Any:
        return await self.cache.get(self.keys[i])

    async def set(self, i: int) -> Any:
        return await self.cache.set(self.keys[i], self.value)

    async def get_many(self, i: int) -> Any:
        return await self.cache.multi_get(self.keys[i : i + 100])

    async def close(self) -> None:
        await self.cache.close()


class Cashews(Contender):
    name = "cashews redis://"

    async def open(self, port: int, size: int) -> None:
        from cashews import Cache

        self.cache = Cache()
        self.cache.setup(f"redis://127.0.0.1:{port}/0", max_connections=64)
        self.keys = [f"cashews:{i}" for i in range(KEYS)]
        self.value = "x" * size
        await self.cache.set_many(dict.fromkeys(self.keys, self.value))

    async def get(self, i: int) -> Any:
        return await self.cache.get(self.keys[i])

    async def set(self, i: int) -> Any:
        return await self.cache.set(self.keys[i], self.value)

    async def get_many(self, i: int) -> Any:
        return await self.cache.get_many(*self.keys[i : i + 100])

    async def close(self) -> None:
        await self.cache.close()


class CashewsClientSide(Cashews):
    name = "cashews client_side"

    async def open(self, port: int, size: int) -> None:
        from cashews import Cache

        self.cache = Cache()
        self.cache.setup(f"redis://127.0.0.1:{port}/0", max_connections=64, client_side=True)
        self.keys = [f"cashews-cs:{i}" for i in range(KEYS)]
        self.value = "x" * size
        await self.cache.set_many(dict.fromkeys(self.keys, self.value))


CONTENDERS = [Raw, Backend, Secure, SecureNoMemo, SecureNear, Aiocache, Cashews, CashewsClientSide]


async def measure(op: Op, concurrency: int, seconds: float, span: int) -> float:
    """Operations per second with ``concurrency`` workers calling ``op`` back to back.

    The first fifth of the time warms up (connections, pools, caches) and is not counted. A
    worker yields every 32 operations: an operation served from process memory (a near-cache
    hit) never suspends, and would otherwise keep the other workers from running.
    """
    counted = 0
    start = time.perf_counter() + seconds * 0.2
    end = start + seconds

    async def worker(offset: int) -> None:
        nonlocal counted
        i, n = offset, 0
        while (now := time.perf_counter()) < end:
            await op(i % span)
            i += 7
            n += 1
            if now >= start:
                counted += 1
            if not n % 32:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker(n * 13) for n in range(concurrency)))
    return counted / seconds


async def run(port: int, seconds: float, rounds: int, only: list[str]) -> None:
    cases = [
        (f"{op} c={conc} {label}", op, conc, size)
        for size, label in ((100, "100B"), (10_000, "10KB"))
        for op in ("get", "set")
        for conc in (1, 50)
    ] + [("get_many(100) c=1 100B", "get_many", 1, 100)]
    cases = [case for case in cases if not only or any(word in case[0] for word in only)]
    names = [c.name for c in CONTENDERS]
    print(f"best of {rounds} interleaved rounds of {seconds}s; ops/s and ratio to raw")
    print(f"{'case':24}" + "".join(f"{n:>24}" for n in names))
    for title, op, conc, size in cases:
        contenders = [cls() for cls in CONTENDERS]
        for contender in contenders:
            await contender.open(port, size)
        span = KEYS - 100 if op == "get_many" else KEYS
        rates = [0.0] * len(contenders)
        for _ in range(rounds):  # interleaved, best kept: robust against a busy machine
            for index, contender in enumerate(contenders):
                rate = await measure(getattr(contender, op), conc, seconds, span)
                rates[index] = max(rates[index], rate)
        for contender in contenders:
            await contender.close()
        raw = rates[0]
        cells = [f"{r:>10,.0f} {r / raw:5.2f}x" for r in rates]
        print(f"{title:24}" + "".join(f"{c:>24}" for c in cells), flush=True)


async def _warm(cache: Any, key: str) -> None:
    """Read ``key`` until the near cache serves it."""
    hits = cache.stats.near_hits
    while True:
        await cache.get(key)
        if cache.stats.near_hits > hits:
            return
        await asyncio.sleep(0.001)


async def coherence(port: int, writes: int = 500) -> None:
    """From a write returning in one manager to another manager's near cache no longer serving
    the old value (two managers: two connections and two invalidation channels)."""
    url = f"redis://127.0.0.1:{port}/0"
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
        writer = one.namespace("coherence", backend=url, near_cache=True)
        reader = two.namespace("coherence", backend=url, near_cache=True)
        await writer.set("k", 0)
        delays = []
        for value in range(1, writes + 1):
            await _warm(reader, "k")
            await writer.set("k", value)
            returned = time.perf_counter()
            while await reader.get("k") != value:  # noqa: ASYNC110 - polls the cache itself
                await asyncio.sleep(0)
            delays.append(time.perf_counter() - returned)
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    print(
        f"near-cache coherence delay over {writes} writes: p50 {p50 * 1e3:.3f} ms, "
        f"p99 {p99 * 1e3:.3f} ms, max {delays[-1] * 1e3:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="measuring time per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case")
    parser.add_argument(
        "--case", action="append", default=[], help="run the cases whose title contains this"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the OS place this process and the server (default: one CPU each)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # peers call redis-py's old close()
    with redis_server(pin=args.pin) as server:
        port = server.port
        asyncio.run(run(port, args.seconds, args.rounds, args.case))
        if not args.case or any("coherence" in word for word in args.case):
            asyncio.run(coherence(port))


if __name__ == "__main__":
    main()
