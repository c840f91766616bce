"""Soak: 100 concurrent tasks, 80% gets / 20% sets, for a fixed time, on memory and Redis.

    .venv/bin/python -m benchmarks.soak [--seconds 60] [--backends memory,redis]

Prints per backend: operations, errors, p50/p99/max latency, and RSS after warm-up vs at the end
(target: no errors, RSS growth within 10%). The Redis run starts its own redis-server on a free
loopback port in a temporary directory and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from aiocache_secure import CacheManager, Keyring

TASKS = 100
KEYSPACE = 10_000
RESERVOIR = 100_000


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not installed (scripts/test.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def soak(url: str, seconds: float) -> None:
    # A bounded reservoir: keeping every sample would itself grow RSS by ~30 bytes an operation.
    latencies: list[float] = []
    seen = 0
    errors = 0
    async with CacheManager(keyring=Keyring.generate()) as manager:
        ns = manager.namespace("soak", backend=url, encrypt=True, ttl=300)
        stop = time.monotonic() + seconds
        warm_until = time.monotonic() + min(10.0, seconds / 6)
        rss_warm: int | None = None

        async def worker(seed: int) -> None:
            nonlocal errors, seen
            rng = random.Random(seed)  # noqa: S311 - load shape, not secrecy
            value = {"blob": "x" * 200, "n": seed}
            while time.monotonic() < stop:
                key = f"k{rng.randrange(KEYSPACE)}"
                start = time.perf_counter()
                try:
                    if rng.random() < 0.8:
                        await ns.get(key)
                    else:
                        await ns.set(key, value)
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

        await asyncio.gather(sampler(), *(worker(i) for i in range(TASKS)))
        rss_end = rss()
    latencies.sort()
    n = seen
    growth = (rss_end - (rss_warm or rss_end)) / (rss_warm or rss_end)
    print(
        f"{url.split('://')[0]:7} ops={n:>9} errors={errors} "
        f"p50={latencies[len(latencies) // 2] * 1e6:7.0f}us "
        f"p99={latencies[int(len(latencies) * 0.99)] * 1e6:7.0f}us "
        f"max={latencies[-1] * 1e3:6.1f}ms ops/s={n / (seconds - min(10.0, seconds / 6)):,.0f} "
        f"rss_after_warmup={(rss_warm or 0) / 2**20:.1f}MiB rss_end={rss_end / 2**20:.1f}MiB "
        f"growth={growth:+.1%} {'OK' if errors == 0 and growth <= 0.10 else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backends", default="memory,redis")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "memory":
            asyncio.run(soak("memory://", args.seconds))
        elif backend == "redis":
            with redis_server() as url:
                asyncio.run(soak(url, args.seconds))


if __name__ == "__main__":
    main()
