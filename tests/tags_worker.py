"""Child process for the cross-process tag test: ``python -m tests.tags_worker URL COMMAND ...``.

``write N ID``: entries ``ID:0`` .. ``ID:N-1`` tagged ``shared`` and ``wID``;
``invalidate TAG``; ``count N ID...``: prints how many of those entries are hits.
Keys come from the environment (AIOCACHE_SECURE_KEYS), like any deployment's workers.
"""

from __future__ import annotations

import sys

import anyio

from aiocache_secure import CacheManager, Keyring


async def main(url: str, command: str, *args: str) -> None:
    async with CacheManager(keyring=Keyring.from_env()) as manager:
        hits = 0
        for encrypt in (False, True):
            ns = manager.namespace(f"tags-{encrypt}", backend=url, encrypt=encrypt)
            if command == "write":
                count, ident = int(args[0]), args[1]
                for i in range(count):
                    await ns.set(f"{ident}:{i}", i, tags=["shared", f"w{ident}"])
            elif command == "invalidate":
                await ns.invalidate_tags([args[0]])
            else:
                count = int(args[0])
                keys = [f"{ident}:{i}" for ident in args[1:] for i in range(count)]
                hits += sum(value is not None for value in await ns.get_many(keys))
        if command == "count":
            print(hits)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
