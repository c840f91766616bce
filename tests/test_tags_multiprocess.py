"""Tags across processes on every store shared between processes: racing writers agree on a
tag's record, and one process's invalidation is a miss in every other at once."""

from __future__ import annotations

import os
import subprocess

import anyio

from aiocache_secure import CacheManager, Keyring
from tests.plugins.processes import finish_worker, start_worker

WRITERS, EACH = 4, 40


def _start(url: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return start_worker("tags_worker", env, url, *args)


def test_processes_share_tags(shared_url: str) -> None:
    keyring = Keyring.generate()
    env = {**os.environ, "AIOCACHE_SECURE_KEYS": keyring.export_text()}
    ids = [str(n) for n in range(WRITERS)]
    writers = [_start(shared_url, env, "write", str(EACH), ident) for ident in ids]
    for child in writers:
        finish_worker(child)

    async def hits(*idents: str) -> int:
        async with CacheManager(keyring=keyring) as manager:
            found = 0
            for encrypt in (False, True):
                ns = manager.namespace(f"tags-{encrypt}", backend=shared_url, encrypt=encrypt)
                keys = [f"{ident}:{i}" for ident in idents for i in range(EACH)]
                found += sum(value is not None for value in await ns.get_many(keys))
            return found

    # Writers raced to create the "shared" record: had two kept their own version, some of
    # these entries would be misses.
    assert anyio.run(hits, *ids) == 2 * WRITERS * EACH
    finish_worker(_start(shared_url, env, "invalidate", "w1"))
    assert anyio.run(hits, "1") == 0
    assert anyio.run(hits, "0", "2", "3") == 2 * (WRITERS - 1) * EACH

    async def invalidate_shared() -> None:
        async with CacheManager(keyring=keyring) as manager:
            for encrypt in (False, True):
                ns = manager.namespace(f"tags-{encrypt}", backend=shared_url, encrypt=encrypt)
                await ns.invalidate_tags(["shared"])

    anyio.run(invalidate_shared)
    assert finish_worker(_start(shared_url, env, "count", str(EACH), *ids)).splitlines()[-1] == "0"
