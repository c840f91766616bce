"""Child processes of the file backend's crash and multi-process tests.

``python -m tests.file_worker crash DIR [fsync]``: writes 1 MB values to a few keys forever (until
SIGKILLed), printing ``ready`` once the first write is done.
``python -m tests.file_worker hammer DIR ID SECONDS``: reads, writes, deletes and clears shared
and private keys from several tasks for SECONDS, checking that every read is a whole value of the
key it was read from; prints a JSON summary and exits 1 on any bad read.

Values are self-checking: ``key digest (8) | sequence (8) | payload | sha256 of all that``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time

import anyio

from aiocache_secure.backends.file import FileBackend

CRASH_KEYS = [b"acs1" + b"c" * 32 + b"=" + b"crash-%d" % i for i in range(4)]


def make_value(key: bytes, seq: int, size: int) -> bytes:
    body = hashlib.sha256(key).digest()[:8] + seq.to_bytes(8, "big") + os.urandom(size)
    return body + hashlib.sha256(body).digest()


def check_value(key: bytes, value: bytes) -> bool:
    body, digest = value[:-32], value[-32:]
    return (
        len(value) >= 48
        and hashlib.sha256(body).digest() == digest
        and body[:8] == hashlib.sha256(key).digest()[:8]
    )


async def crash(directory: str, fsync: bool = False) -> None:
    backend = FileBackend(directory, fsync=fsync)
    # Made in advance, so that the loop spends its time inside writes, where the kills land.
    values = {key: [make_value(key, seq, 1 << 20) for seq in range(2)] for key in CRASH_KEYS}
    rounds = 0
    while True:
        for key in CRASH_KEYS:
            await backend.set(key, values[key][rounds % 2], ttl=None)
            if not rounds and key == CRASH_KEYS[0]:
                print("ready", flush=True)
        rounds += 1


async def hammer(directory: str, ident: int, seconds: float) -> None:
    backend = FileBackend(directory, max_entries=6, fsync=False)
    shared = [b"acs1" + b"d" * 32 + b":" + b"shared-%d" % i for i in range(8)]
    # Private keys live in a namespace that every process clears now and then, so clearing
    # (which removes the emptied directories) races with the others' writes into it.
    cleared = b"acs1" + b"e" * 32 + b":"
    mine = [cleared + b"p%d-%d" % (ident, i) for i in range(8)]
    stats = {"reads": 0, "hits": 0, "writes": 0, "deletes": 0, "clears": 0, "bad": 0}
    deadline = time.monotonic() + seconds
    rng = random.Random(ident)

    async def worker() -> None:
        seq = 0
        while time.monotonic() < deadline:
            key = rng.choice(shared if rng.random() < 0.6 else mine)
            roll = rng.random()
            if roll < 0.45:
                seq += 1
                value = make_value(key, seq, rng.choice([10, 1000, 60_000]))
                await backend.set(key, value, ttl=None)
                stats["writes"] += 1
            elif roll < 0.5:
                await backend.delete(key)
                stats["deletes"] += 1
            elif roll < 0.52:
                await backend.delete_prefix(cleared)
                stats["clears"] += 1
            else:
                got = (await backend.get_many([key]))[0]
                stats["reads"] += 1
                if got is not None:
                    stats["hits"] += 1
                    stats["bad"] += not check_value(key, got)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(worker)
    stats["evictions"] = backend.evictions
    print(json.dumps(stats), flush=True)
    sys.exit(1 if stats["bad"] else 0)


def main() -> None:
    mode, directory, *rest = sys.argv[1:]
    if mode == "crash":
        anyio.run(crash, directory, rest[:1] == ["fsync"])
    else:
        anyio.run(hammer, directory, int(rest[0]), float(rest[1]))


if __name__ == "__main__":
    main()
