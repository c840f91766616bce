"""Memory namespace get-hit / get-miss / set in ns/op, beside aiocache and cashews, same run;
and a plain ``get`` of a tagged entry against an untagged one.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python -m benchmarks.memory [--rounds 5] [--ops 20000]

Each figure is the best of ``--rounds`` rounds of ``--ops`` operations (the minimum is the least
noisy estimate of cost on a shared machine). Ratios are peer time / our time (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

from aiocache_secure import CacheManager, Keyring

VALUE = {"plan": "pro", "id": 42, "tags": ["a", "b"]}


async def measure(op: Callable[[], Awaitable[object]], ops: int, rounds: int) -> float:
    for _ in range(ops // 10):
        await op()
    best = float("inf")
    for _ in range(rounds):
        gc.disable()
        start = time.perf_counter_ns()
        for _ in range(ops):
            await op()
        best = min(best, (time.perf_counter_ns() - start) / ops)
        gc.enable()
    return best


async def run(ops: int, rounds: int) -> None:
    results: dict[str, dict[str, float]] = {}

    async with CacheManager(keyring=Keyring.generate()) as manager:
        for label, kwargs in (
            ("aiocache_secure default", {}),
            ("aiocache_secure encrypted", {"encrypt": True}),
            ("aiocache_secure enc, memo off", {"encrypt": True, "memo": False}),
            ("aiocache_secure padded", {"pad_timing": True}),
            ("aiocache_secure padded+enc", {"pad_timing": True, "encrypt": True}),
        ):
            name = label.replace(" ", "-").replace("+", "-").replace(",", "")
            ns = manager.namespace(name, **kwargs)  # type: ignore[arg-type]
            await ns.set("hit", VALUE)
            results[label] = {
                "get hit": await measure(lambda ns=ns: ns.get("hit"), ops, rounds),
                "get miss": await measure(lambda ns=ns: ns.get("miss"), ops, rounds),
                "set": await measure(lambda ns=ns: ns.set("k", VALUE), ops, rounds),
            }
            if label in ("aiocache_secure default", "aiocache_secure encrypted"):
                # A plain get of a tagged entry: the entry, then its record (two reads).
                await ns.set("tagged", VALUE, tags=["user:42"])
                results[label]["tagged get hit"] = await measure(
                    lambda ns=ns: ns.get("tagged"), ops, rounds
                )
            if label in ("aiocache_secure default", "aiocache_secure padded"):
                results[label]["get_many hit"] = await measure(
                    lambda ns=ns: ns.get_many(["hit"]), ops, rounds
                )
                results[label]["get_many miss"] = await measure(
                    lambda ns=ns: ns.get_many(["miss"]), ops, rounds
                )

    try:
        from aiocache import SimpleMemoryCache

        cache = SimpleMemoryCache()
        await cache.set("hit", VALUE)
        results["aiocache SimpleMemoryCache"] = {
            "get hit": await measure(lambda: cache.get("hit"), ops, rounds),
            "get miss": await measure(lambda: cache.get("miss"), ops, rounds),
            "set": await measure(lambda: cache.set("k", VALUE), ops, rounds),
        }
    except ImportError:
        print("aiocache not installed (pip install -r benchmarks/requirements.txt)")

    try:
        from cashews import Cache as CashewsCache

        cashews = CashewsCache()
        cashews.setup("mem://")
        await cashews.set("hit", VALUE)
        results["cashews mem://"] = {
            "get hit": await measure(lambda: cashews.get("hit"), ops, rounds),
            "get miss": await measure(lambda: cashews.get("miss"), ops, rounds),
            "set": await measure(lambda: cashews.set("k", VALUE), ops, rounds),
        }
    except ImportError:
        print("cashews not installed (pip install -r benchmarks/requirements.txt)")

    ours = results["aiocache_secure default"]
    print(f"{'':30} {'get hit':>10} {'get miss':>10} {'set':>10}   (ns/op; ratio = peer / ours)")
    for label, row in results.items():
        cells = " ".join(f"{row[op]:10.0f}" for op in ("get hit", "get miss", "set"))
        ratios = ""
        if not label.startswith("aiocache_secure"):
            ratios = "   " + "  ".join(
                f"{op} x{row[op] / ours[op]:.2f}" for op in ("get hit", "get miss", "set")
            )
        print(f"{label:30} {cells}{ratios}")
    hit = ours["get hit"]
    enc = results["aiocache_secure encrypted"]["get hit"]
    for label in ("aiocache_secure default", "aiocache_secure encrypted"):
        row = results[label]
        print(
            f"\n{label}: tagged get hit {row['tagged get hit']:.0f} ns = "
            f"x{row['tagged get hit'] / row['get hit']:.2f} an untagged hit (@cached's tagged "
            "read, one batch, is in benchmarks.decorator: target <= 1.3x there)",
            end="",
        )
    print()
    first = results["aiocache_secure enc, memo off"]["get hit"]
    pad, pad_enc = results["aiocache_secure padded"], results["aiocache_secure padded+enc"]
    print(f"\nencrypted hit: {enc:.0f} ns (target <= 5000); with the memo off {first:.0f} ns")
    print(
        f"padded get: hit {pad['get hit']:.0f} ns / miss {pad['get miss']:.0f} ns = "
        f"x{max(pad['get hit'], pad['get miss']) / hit:.2f} an unpadded hit (target <= 3)"
    )
    many = max(pad["get_many hit"], pad["get_many miss"])
    print(
        f"padded get_many (1 key): hit {pad['get_many hit']:.0f} ns / miss "
        f"{pad['get_many miss']:.0f} ns = x{many / hit:.2f} an unpadded get hit, "
        f"x{many / ours['get_many hit']:.2f} an unpadded get_many hit"
    )
    worst = max(pad_enc["get hit"], pad_enc["get miss"])
    print(
        f"padded encrypted get: {worst:.0f} ns = x{worst / first:.2f} an unpadded encrypted hit "
        f"doing the same work (memo off), x{worst / enc:.2f} one served by the memo"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.ops, args.rounds))


if __name__ == "__main__":
    main()
