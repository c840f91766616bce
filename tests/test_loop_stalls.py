"""No operation of the library stalls the event loop (> 100 ms), memory and file backends."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from aiocache_secure import CacheManager, Keyring

pytestmark = pytest.mark.anyio


async def test_no_stall_over_100ms(tmp_path: Path) -> None:
    stalls: list[float] = []
    done = anyio.Event()

    async def watchdog() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.005)
            stalls.append(time.perf_counter() - start - 0.005)

    big = "x" * 1_000_000
    async with CacheManager(keyring=Keyring.generate()) as manager:
        memory = manager.namespace("mem", encrypt=True, max_bytes=50_000_000)
        files = manager.namespace("files", backend=f"file://{tmp_path / 'c'}", max_entries=20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog)
            for i in range(30):
                await memory.set(f"k{i}", big)
                await files.set(f"k{i % 25}", big)
                assert await files.get(f"k{i % 25}") == big
                await files.get_many([f"k{j}" for j in range(25)])
            await files.clear()
            done.set()
    assert len(stalls) > 10
    assert max(stalls) < 0.1, f"worst stall {max(stalls) * 1000:.0f} ms"
