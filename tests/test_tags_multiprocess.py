"""Tags across processes on every store shared between processes: racing writers agree on a
tag's record, and one process's invalidation is a miss in every other at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiocache_secure import CacheManager, Keyring

ROOT = Path(__file__).resolve().parent.parent
WRITERS, EACH = 4, 40


@pytest.fixture(params=["file", "redis", "mongo"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'cache'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def _start(url: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tags_worker", url, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(child: subprocess.Popen[bytes]) -> str:
    out, _ = child.communicate(timeout=240)
    assert child.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode()


def test_processes_share_tags(shared_url: str) -> None:
    keyring = Keyring.generate()
    env = {**os.environ, "AIOCACHE_SECURE_KEYS": keyring.export_text()}
    ids = [str(n) for n in range(WRITERS)]
    writers = [_start(shared_url, env, "write", str(EACH), ident) for ident in ids]
    for child in writers:
        _finish(child)

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
    _finish(_start(shared_url, env, "invalidate", "w1"))
    assert anyio.run(hits, "1") == 0
    assert anyio.run(hits, "0", "2", "3") == 2 * (WRITERS - 1) * EACH

    async def invalidate_shared() -> None:
        async with CacheManager(keyring=keyring) as manager:
            for encrypt in (False, True):
                ns = manager.namespace(f"tags-{encrypt}", backend=shared_url, encrypt=encrypt)
                await ns.invalidate_tags(["shared"])

    anyio.run(invalidate_shared)
    assert _finish(_start(shared_url, env, "count", str(EACH), *ids)).splitlines()[-1] == "0"
