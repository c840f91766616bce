"""MongoDB: ops/s of raw AsyncMongoClient vs MongoBackend vs the secure stack, same server and run.

    .venv/bin/python -m benchmarks.mongo [--ops 3000]

Starts nx-27017 on a free loopback port (in-memory), or uses ``AIOCACHE_SECURE_MONGO_URL``.
Three clients, one operation at a time (latency-bound, which is where client overhead shows):

* ``raw``: the driver alone, the same documents the backend writes (``find_one`` by ``_id``,
  ``update_one($set, upsert)``, one ``$in`` query for ``get_many``);
* ``backend``: :class:`MongoBackend` with bytes keys and values;
* ``secure``: a CacheManager namespace, hashed keys + AES-GCM, JSON values.

The three run interleaved, 50 operations at a time, so drift in the server hits all of them.
Target: secure ≥ 0.85× raw. Each line also prints the client-side cost per op in µs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from aiocache_secure import CacheManager, Keyring
from aiocache_secure.backends.mongo import MongoBackend

VALUE = {"user": "alice", "plan": "pro", "roles": ["a", "b", "c"], "n": 12345, "pad": "x" * 40}
ENV = "AIOCACHE_SECURE_MONGO_URL"
BATCH = 10
KEYS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server() -> Iterator[str]:
    url = os.environ.get(ENV)
    if url:
        yield url.split("?")[0].rstrip("/")
        return
    binary = Path(sys.executable).with_name("nx-27017")
    exe = str(binary) if binary.exists() else shutil.which("nx-27017")
    if exe is None:
        raise SystemExit("nx-27017 not found (pip install nx-27017)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--db", "memory", "--host", "127.0.0.1", "-p", str(port)]
            + ["--pid-file", f"{tmp}/nx.pid", "--log-file", f"{tmp}/nx.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("nx-27017 did not start")
                time.sleep(0.05)
            yield f"mongodb://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


async def timed(start: int, count: int, op: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(start, start + count):
        await op(i)
    return time.perf_counter() - wall, time.process_time() - cpu


async def compare(
    ops: int, chunk: int, clients: dict[str, Callable[[int], Awaitable[Any]]]
) -> dict[str, tuple[float, float]]:
    """``(ops/s, client CPU µs/op)`` of each client, measured in interleaved chunks so that
    server drift (other load on the machine, SQLite under nx-27017) hits every client alike."""
    for op in clients.values():
        await timed(0, min(200, ops), op)
    wall = dict.fromkeys(clients, 0.0)
    cpu = dict.fromkeys(clients, 0.0)
    done = ops // chunk * chunk
    for start in range(0, done, chunk):
        for name, op in clients.items():
            w, c = await timed(start, chunk, op)
            wall[name] += w
            cpu[name] += c
    return {name: (done / wall[name], cpu[name] / done * 1e6) for name in clients}


async def main(ops: int) -> None:
    import json

    with server() as base:
        db = "aiocache_secure_bench"
        coll = f"b_{uuid.uuid4().hex[:8]}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(base + "/")
        raw = client[db][f"{coll}_raw"]
        await raw.create_index([("exp", 1)], expireAfterSeconds=0)
        backend = MongoBackend(f"{base}/{db}.{coll}_backend")
        manager = CacheManager(keyring=Keyring.generate())
        ns = manager.namespace("bench", backend=f"{base}/{db}.{coll}_secure")

        payload = json.dumps(VALUE).encode()
        keys = [f"user:{i}" for i in range(KEYS)]
        bkeys = [k.encode() for k in keys]

        async def raw_set(i: int) -> None:
            await raw.update_one(
                {"_id": keys[i % KEYS]}, {"$set": {"v": payload, "exp": None}}, upsert=True
            )

        async def raw_get(i: int) -> None:
            doc = await raw.find_one({"_id": keys[i % KEYS]})
            assert doc is not None

        async def raw_get_many(i: int) -> None:
            want = [keys[(i + j) % KEYS] for j in range(BATCH)]
            docs = {d["_id"]: d["v"] async for d in raw.find({"_id": {"$in": want}})}
            assert len([docs.get(k) for k in want]) == BATCH

        async def backend_set(i: int) -> None:
            await backend.set(bkeys[i % KEYS], payload, ttl=None)

        async def backend_get(i: int) -> None:
            assert await backend.get(bkeys[i % KEYS]) is not None

        async def backend_get_many(i: int) -> None:
            await backend.get_many([bkeys[(i + j) % KEYS] for j in range(BATCH)])

        async def secure_set(i: int) -> None:
            await ns.set(keys[i % KEYS], VALUE)

        async def secure_get(i: int) -> None:
            assert await ns.get(keys[i % KEYS]) is not None

        async def secure_get_many(i: int) -> None:
            await ns.get_many([keys[(i + j) % KEYS] for j in range(BATCH)])

        suites = {
            "set": {"raw": raw_set, "backend": backend_set, "secure": secure_set},
            "get": {"raw": raw_get, "backend": backend_get, "secure": secure_get},
            f"get_many({BATCH})": {
                "raw": raw_get_many,
                "backend": backend_get_many,
                "secure": secure_get_many,
            },
        }
        results = {op: await compare(ops, 50, clients) for op, clients in suites.items()}

        where = "AIOCACHE_SECURE_MONGO_URL" if os.environ.get(ENV) else "nx-27017"
        print(f"server: {where}; {ops} sequential ops per client, interleaved in chunks of 50")
        print("throughput, ops/s (ratios to raw):")
        worst = 1.0
        for op, res in results.items():
            (r, _), (b, _), (s, _) = res["raw"], res["backend"], res["secure"]
            worst = min(worst, s / r)
            print(
                f"  {op:<13} raw {r:7.0f}   backend {b:7.0f} ({b / r:.2f}x)   "
                f"secure {s:7.0f} ({s / r:.2f}x)"
            )
        print("client CPU per op, µs (what a faster server would leave as the difference):")
        for op, res in results.items():
            (_, rc), (_, bc), (_, sc) = res["raw"], res["backend"], res["secure"]
            print(
                f"  {op:<13} raw {rc:7.1f}   backend {bc:7.1f} ({rc / bc:.2f}x)   "
                f"secure {sc:7.1f} ({rc / sc:.2f}x)"
            )
        verdict = "PASS" if worst >= 0.85 else "MISS"
        print(f"worst secure/raw throughput: {worst:.2f}x (target >= 0.85x): {verdict}")

        await manager.aclose()
        await backend.aclose()
        await client.drop_database(db)
        await client.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    ops = int(args[args.index("--ops") + 1]) if "--ops" in args else 3000
    asyncio.run(main(ops))
