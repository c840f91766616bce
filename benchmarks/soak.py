"""Soak: 100 concurrent tasks, 80% gets / 20% sets, for a fixed time, on memory and Redis.

    .venv/bin/python -m benchmarks.soak [--seconds 60] [--backends memory,redis] [--faults]

Prints per backend: operations, errors, p50/p99/max latency, and RSS after warm-up vs at the end
(target: no errors, RSS growth within 10%). The Redis run starts its own redis-server on a free
loopback port in a temporary directory and stops it afterwards.

``--faults`` (Redis only) runs a fault schedule during the soak: the server is paused (SIGSTOP)
for 3 s at 30% of the run, killed (SIGKILL) at 55% and restarted empty on the same port 2 s
later. Every value read is checked against the key it was read for (a wrong value is one written
for another key, or anything else): target 0 wrong values; errors are expected while the store is
down, and are counted, with the latency percentiles of the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import time

from aiocache_secure import CacheManager, Keyring

from ._redis import RedisProcess, redis_server

TASKS = 100
KEYSPACE = 10_000
RESERVOIR = 100_000


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def fault_schedule(server: RedisProcess, seconds: float, log: list[str]) -> None:
    """Pause, then kill and restart the server, at fixed points of the run."""
    started = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + seconds * fraction - time.monotonic()))

    def note(event: str) -> None:
        log.append(f"{time.monotonic() - started:5.1f}s {event}")

    await at(0.30)
    server.signal(signal.SIGSTOP)
    note("SIGSTOP")
    await asyncio.sleep(3.0)
    server.signal(signal.SIGCONT)
    note("SIGCONT")
    await at(0.55)
    await asyncio.to_thread(server.kill)
    note("SIGKILL")
    await asyncio.sleep(2.0)
    await asyncio.to_thread(server.start)
    note("restarted (empty)")


async def soak(url: str, seconds: float, server: RedisProcess | None = None) -> None:
    # A bounded reservoir: keeping every sample would itself grow RSS by ~30 bytes an operation.
    latencies: list[float] = []
    seen = 0
    errors = 0
    wrong = 0
    faults: list[str] = []
    async with CacheManager(keyring=Keyring.generate()) as manager:
        ns = manager.namespace("soak", backend=url, encrypt=True, ttl=300)
        stop = time.monotonic() + seconds
        warm_until = time.monotonic() + min(10.0, seconds / 6)
        rss_warm: int | None = None

        async def worker(seed: int) -> None:
            nonlocal errors, seen, wrong
            rng = random.Random(seed)  # noqa: S311 - load shape, not secrecy
            while time.monotonic() < stop:
                key = f"k{rng.randrange(KEYSPACE)}"
                start = time.perf_counter()
                try:
                    if rng.random() < 0.8:
                        found = await ns.get(key)
                        if found is not None and (
                            type(found) is not dict or found.get("key") != key
                        ):
                            wrong += 1
                    else:
                        await ns.set(key, {"blob": "x" * 200, "key": key, "n": seed})
                except Exception:  # noqa: BLE001 - the soak counts every failure
                    errors += 1
                if time.monotonic() > warm_until:
                    seen += 1
                    sample = time.perf_counter() - start
                    if len(latencies) < RESERVOIR:
                        latencies.append(sample)
                    else:
                        slot = rng.randrange(seen)
                        if slot < RESERVOIR:
                            latencies[slot] = sample

        async def sampler() -> None:
            nonlocal rss_warm
            await asyncio.sleep(max(0.0, warm_until - time.monotonic()))
            rss_warm = rss()

        jobs = [sampler(), *(worker(i) for i in range(TASKS))]
        if server is not None:
            jobs.append(fault_schedule(server, seconds, faults))
        await asyncio.gather(*jobs)
        rss_end = rss()
    latencies.sort()
    n = seen
    growth = (rss_end - (rss_warm or rss_end)) / (rss_warm or rss_end)
    for line in faults:
        print(f"  fault: {line}")
    verdict = wrong == 0 and growth <= 0.10 and (errors == 0 or server is not None)
    print(
        f"{url.split('://')[0]:7} ops={n:>9} errors={errors} wrong_values={wrong} "
        f"p50={latencies[len(latencies) // 2] * 1e6:7.0f}us "
        f"p99={latencies[int(len(latencies) * 0.99)] * 1e6:7.0f}us "
        f"max={latencies[-1] * 1e3:6.1f}ms ops/s={n / (seconds - min(10.0, seconds / 6)):,.0f} "
        f"rss_after_warmup={(rss_warm or 0) / 2**20:.1f}MiB rss_end={rss_end / 2**20:.1f}MiB "
        f"growth={growth:+.1%} {'OK' if verdict else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--faults", action="store_true", help="pause/kill/restart Redis mid-run")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "memory" and not args.faults:
            asyncio.run(soak("memory://", args.seconds))
        elif backend == "redis":
            with redis_server() as server:
                asyncio.run(soak(server.url, args.seconds, server if args.faults else None))


if __name__ == "__main__":
    main()
