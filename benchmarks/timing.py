"""dudect-style timing test: can a caller tell a hit from a miss by latency?

    .venv/bin/python -m benchmarks.timing [--pairs 20000] [--backends memory,file]

For each backend, an unpadded (control) and a padded namespace are measured. Classes (hit on a
stored key / miss on an absent one) are interleaved in random order, gc is off, the first 10%
are warm-up. A Welch t-test compares the two classes' latencies on the raw samples and on samples
cropped at several percentiles (as dudect does, since a leak may hide in the tail or the body).
Target: padded max |t| < 10 while the control shows |t| > 10 (so the test can see a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from aiocache_secure import Cache, CacheManager, Keyring

CROPS = (None, 0.5, 0.75, 0.9, 0.95, 0.99)


def welch_t(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    denom = math.sqrt(va / len(a) + vb / len(b))
    return 0.0 if denom == 0 else (ma - mb) / denom


def max_t(hits: list[int], misses: list[int]) -> float:
    worst = 0.0
    pooled = sorted(hits + misses)
    for crop in CROPS:
        if crop is None:
            a, b = hits, misses
        else:
            limit = pooled[int(len(pooled) * crop)]
            a = [x for x in hits if x <= limit]
            b = [x for x in misses if x <= limit]
        if len(a) > 10 and len(b) > 10:
            worst = max(worst, abs(welch_t([float(x) for x in a], [float(x) for x in b])))
    return worst


async def sample(ns: Cache, pairs: int) -> tuple[float, float, float]:
    await ns.set("present", {"user": 42, "token": "x" * 32})
    order = [True] * pairs + [False] * pairs
    random.shuffle(order)
    warm = len(order) // 10
    hits: list[int] = []
    misses: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for i, hit in enumerate(order):
            key = "present" if hit else "absent"
            start = time.perf_counter_ns()
            result = await ns.get(key)
            elapsed = time.perf_counter_ns() - start
            # Freeing a returned value is the caller's cost, and differs between a value and
            # None: keep it alive until the clock has been read.
            del result
            if i >= warm:
                (hits if hit else misses).append(elapsed)
    finally:
        gc.enable()
    return max_t(hits, misses), statistics.median(hits), statistics.median(misses)


async def run(pairs: int, backends: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with CacheManager(keyring=Keyring.generate()) as manager:
            print(f"{'backend':8} {'namespace':10} {'max |t|':>9} {'hit ns':>9} {'miss ns':>9}")
            for backend in backends:
                url = "memory://" if backend == "memory" else f"file://{Path(tmp) / 'c'}"
                for padded in (False, True):
                    ns = manager.namespace(
                        f"{backend}-{padded}", backend=url, pad_timing=padded, encrypt=True
                    )
                    t, hit, miss = await sample(ns, pairs)
                    label = "padded" if padded else "control"
                    verdict = (
                        ("ok" if t < 10 else "LEAKS")
                        if padded
                        else ("leak visible" if t > 10 else "leak NOT visible")
                    )
                    print(f"{backend:8} {label:10} {t:9.1f} {hit:9.0f} {miss:9.0f}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--backends", default="memory,file")
    args = parser.parse_args()
    asyncio.run(run(args.pairs, args.backends.split(",")))


if __name__ == "__main__":
    main()
