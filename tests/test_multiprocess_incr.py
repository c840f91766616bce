"""incr() from several processes sums exactly on every store shared between processes."""

from __future__ import annotations

import os

import anyio

from aiocache_secure import CacheManager, Keyring
from tests.plugins.processes import finish_worker, start_worker

PROCESSES, EACH = 4, 250


def test_processes_increment_exactly(shared_url: str) -> None:
    keyring = Keyring.generate()
    env = {**os.environ, "AIOCACHE_SECURE_KEYS": keyring.export_text()}
    children = [start_worker("incr_worker", env, shared_url, str(EACH)) for _ in range(PROCESSES)]
    for child in children:
        finish_worker(child)

    async def totals() -> list[object]:
        async with CacheManager(keyring=keyring) as manager:
            return [
                await manager.namespace(
                    f"counters-{encrypt}", backend=shared_url, encrypt=encrypt
                ).get("shared")
                for encrypt in (False, True)
            ]

    assert anyio.run(totals) == [PROCESSES * EACH, PROCESSES * EACH]
