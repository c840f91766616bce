"""incr() from several processes sums exactly on every store shared between processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiocache_secure import CacheManager, Keyring

ROOT = Path(__file__).resolve().parent.parent
PROCESSES, EACH = 4, 250


@pytest.fixture(params=["file", "redis", "mongo"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'cache'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_processes_increment_exactly(shared_url: str) -> None:
    keyring = Keyring.generate()
    env = {**os.environ, "AIOCACHE_SECURE_KEYS": keyring.export_text()}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.incr_worker", shared_url, str(EACH)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(PROCESSES)
    ]
    for child in children:
        out, _ = child.communicate(timeout=240)
        assert child.returncode == 0, out.decode(errors="replace")[-2000:]

    async def totals() -> list[object]:
        async with CacheManager(keyring=keyring) as manager:
            return [
                await manager.namespace(
                    f"counters-{encrypt}", backend=shared_url, encrypt=encrypt
                ).get("shared")
                for encrypt in (False, True)
            ]

    assert anyio.run(totals) == [PROCESSES * EACH, PROCESSES * EACH]
