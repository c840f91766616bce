"""dudect-style timing test: can a caller tell a hit from a miss by latency?

    .venv/bin/python -m benchmarks.timing [--pairs 20000] [--backends memory,file] [--cases ...]

For each backend and case, an unpadded (control) and a padded namespace are measured. Classes
(hit on a stored key / miss on an absent one) are interleaved in random order, gc is off, the
first 10% are warm-up. Cases: ``get`` and ``get_many`` (one key) on a small value; ``mixed get``
and ``mixed get_many`` probe a key holding a ~60 KB value in a namespace that also holds small
values, each probe preceded by reads of random small ones (background traffic).

A Welch t-test compares the two classes' latencies on the raw samples and on samples cropped
at several percentiles (as dudect does, since a leak may hide in the tail or the body).
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


SMALL = {"user": 42, "token": "x" * 32}
# The "few large values" of the mixed workload: 60 KB, in a few small values' traffic.
LARGE = {"blob": "x" * 60_000}
BACKGROUND_KEYS = 64
# Background reads per probe: enough that large values are under 5% of the namespace's reads
# (a budget taken from the 95th percentile of recent work would then not see them).
BACKGROUND_READS = 12


async def sample(ns: Cache, pairs: int, *, batch: bool, mixed: bool) -> tuple[float, float, float]:
    """Interleaved probes of a stored key and an absent one: ``(max |t|, hit ns, miss ns)``.

    ``mixed``: the namespace also holds small values that other traffic reads between probes
    (``BACKGROUND_READS`` before each probe), and the probed key holds a large value.
    """
    present = "large-0" if mixed else "present"
    await ns.set(present, LARGE if mixed else SMALL)
    background = [f"small-{i}" for i in range(BACKGROUND_KEYS)] if mixed else []
    if mixed:
        await ns.set_many({key: SMALL for key in background})
        await ns.set_many({f"large-{i}": LARGE for i in range(1, 4)})
    order = [True] * pairs + [False] * pairs
    random.shuffle(order)
    warm = len(order) // 10
    hits: list[int] = []
    misses: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for i, hit in enumerate(order):
            for key in random.choices(background, k=BACKGROUND_READS if background else 0):
                await ns.get(key)
            key = present if hit else "absent"
            if batch:
                start = time.perf_counter_ns()
                result: object = await ns.get_many([key])
                elapsed = time.perf_counter_ns() - start
            else:
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


CASES = {
    "get": {"batch": False, "mixed": False},
    "get_many": {"batch": True, "mixed": False},
    "mixed get": {"batch": False, "mixed": True},
    "mixed get_many": {"batch": True, "mixed": True},
}


async def run(pairs: int, backends: list[str], cases: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with CacheManager(keyring=Keyring.generate()) as manager:
            print(
                f"{'backend':8} {'case':15} {'namespace':10} {'max |t|':>9} {'hit ns':>9} "
                f"{'miss ns':>9}"
            )
            for backend in backends:
                for case in cases:
                    for padded in (False, True):
                        name = f"{backend}-{case.replace(' ', '-')}-{padded}"
                        url = "memory://" if backend == "memory" else f"file://{Path(tmp) / name}"
                        ns = manager.namespace(name, backend=url, pad_timing=padded, encrypt=True)
                        t, hit, miss = await sample(ns, pairs, **CASES[case])
                        label = "padded" if padded else "control"
                        verdict = (
                            ("ok" if t < 10 else "LEAKS")
                            if padded
                            else ("leak visible" if t > 10 else "leak NOT visible")
                        )
                        print(
                            f"{backend:8} {case:15} {label:10} {t:9.1f} {hit:9.0f} {miss:9.0f}"
                            f"  {verdict}"
                        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--backends", default="memory,file")
    parser.add_argument("--cases", default=",".join(CASES), help="of: " + ", ".join(CASES))
    args = parser.parse_args()
    asyncio.run(run(args.pairs, args.backends.split(","), args.cases.split(",")))


if __name__ == "__main__":
    main()
