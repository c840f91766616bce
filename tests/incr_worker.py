"""Child process for the cross-process counter test: ``python -m tests.incr_worker URL N``.

Keys come from the environment (AIOCACHE_SECURE_KEYS), like any deployment's workers.
"""

from __future__ import annotations

import sys

import anyio

from aiocache_secure import CacheManager, Keyring


async def main(url: str, count: int) -> None:
    async with CacheManager(keyring=Keyring.from_env()) as manager:
        for encrypt in (False, True):
            ns = manager.namespace(f"counters-{encrypt}", backend=url, encrypt=encrypt)
            for _ in range(count):
                await ns.incr("shared")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
