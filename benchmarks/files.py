"""File backend throughput beside diskcache, measured in the same run on the same disk.

    .venv/bin/python -m benchmarks.files [--seconds 1.0] [--repeat 3] [--dir PATH]

Subjects, each on its own fresh directory under ``--dir`` (default: the system temp dir):

* ``ns``       a Cache namespace on ``file://`` (encrypted, hashed keys): the full stack
* ``raw``      FileBackend directly (bytes in, bytes out; atomic rename without fsync, the
               default, like diskcache in WAL mode with synchronous=NORMAL)
* ``raw-fsync`` FileBackend(fsync=True) (fsync before each rename: writes wait for the disk)
* ``dc-thr``   diskcache.Cache called through ``anyio.to_thread.run_sync`` (the async comparison)
* ``dc-sync``  diskcache.Cache called directly, one caller (its raw synchronous figure)

Ratios compare against ``dc-thr``: above 1 means faster than diskcache behind a thread.
Needs ``pip install -r benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import diskcache

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.backends.file import FileBackend

KEYS = 256
keys = [b"key-%d" % i for i in range(KEYS)]
Op = Callable[[int], Awaitable[object]]


async def rate(op: Op, concurrency: int, seconds: float) -> float:
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal count
        i = offset
        while time.perf_counter() < deadline:
            await op(i % KEYS)
            i += concurrency
            count += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(concurrency):
            tg.start_soon(worker, n)
    return count / (time.perf_counter() - start)


def sync_rate(op: Callable[[int], object], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        op(count % KEYS)
        count += 1
    return count / (time.perf_counter() - start)


async def main(seconds: float, base: str, repeat: int) -> None:
    work = tempfile.mkdtemp(prefix="acs-bench-", dir=base)
    results: dict[tuple[int, str, int], dict[str, float]] = {}
    try:
        async with CacheManager(keyring=Keyring.generate()) as manager:
            for size in (1_000, 100_000):
                blob = os.urandom(size)
                text = "x" * size
                ns = manager.namespace(f"bench{size}", backend="file://" + f"{work}/ns{size}")
                raw = FileBackend(f"{work}/raw{size}")
                synced = FileBackend(f"{work}/fsync{size}", fsync=True)
                dc = diskcache.Cache(f"{work}/dc{size}")

                async def dc_set(i: int, dc: diskcache.Cache = dc, blob: bytes = blob) -> object:
                    return await anyio.to_thread.run_sync(dc.set, keys[i], blob)

                async def dc_get(i: int, dc: diskcache.Cache = dc) -> object:
                    return await anyio.to_thread.run_sync(dc.get, keys[i])

                subjects: dict[str, tuple[Op, Op]] = {
                    "ns": (
                        lambda i, ns=ns, text=text: ns.set(f"k{i}", text),
                        lambda i, ns=ns: ns.get(f"k{i}"),
                    ),
                    "raw": (
                        lambda i, b=raw, blob=blob: b.set(keys[i], blob, ttl=None),
                        lambda i, b=raw: b.get(keys[i]),
                    ),
                    "raw-fsync": (
                        lambda i, b=synced, blob=blob: b.set(keys[i], blob, ttl=None),
                        lambda i, b=synced: b.get(keys[i]),
                    ),
                    "dc-thr": (dc_set, dc_get),
                }
                for set_op, _ in subjects.values():
                    for i in range(KEYS):
                        await set_op(i)
                # Subjects interleaved, best of ``repeat``: a busy machine slows every subject
                # in turn instead of whichever happened to run during a burst.
                for op_index, op_name in enumerate(("set", "get")):
                    for concurrency in (1, 50):
                        row = results.setdefault((size, op_name, concurrency), {})
                        for _ in range(repeat):
                            for name, ops in subjects.items():
                                got = await rate(ops[op_index], concurrency, seconds)
                                row[name] = max(row.get(name, 0.0), got)
                for _ in range(repeat):
                    for op_name, sync_op in (
                        ("set", lambda i, dc=dc, blob=blob: dc.set(keys[i], blob)),
                        ("get", lambda i, dc=dc: dc.get(keys[i])),
                    ):
                        row = results[(size, op_name, 1)]
                        row["dc-sync"] = max(row.get("dc-sync", 0.0), sync_rate(sync_op, seconds))
                dc.close()
                await raw.aclose()
                await synced.aclose()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    names = ["ns", "raw", "raw-fsync", "dc-thr", "dc-sync"]
    print(f"ops/s, best of {repeat} x {seconds:g} s per cell, directory under {base}")
    print(f"{'value':>7} {'op':>4} {'conc':>4} " + " ".join(f"{n:>9}" for n in names)
          + f" {'ns/dc-thr':>10} {'raw/dc-thr':>10} {'raw/dc-sync':>11}")  # fmt: skip
    for (size, op_name, concurrency), row in results.items():
        cells = " ".join(f"{row[n]:>9.0f}" if n in row else f"{'-':>9}" for n in names)
        direct = f"{row['raw'] / row['dc-sync']:>11.2f}" if "dc-sync" in row else f"{'-':>11}"
        print(
            f"{size // 1000:>5}KB {op_name:>4} {concurrency:>4} {cells} "
            f"{row['ns'] / row['dc-thr']:>10.2f} {row['raw'] / row['dc-thr']:>10.2f} {direct}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per cell")
    args = parser.parse_args()
    anyio.run(main, args.seconds, args.dir, args.repeat)
