"""Several processes hammer one cache directory: shared and private keys, reads, writes, deletes,
namespace clears and evictions (40 keys, a quota of 6 per namespace) at once. Every read is a
whole value of its own key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio

from aiocache_secure.backends.file import FileBackend
from tests.file_worker import check_value
from tests.test_file_crash import REPO, child_env, temps

PROCESSES = 4
SECONDS = 3.0


async def read_back(root: Path) -> list[tuple[bytes, bytes]]:
    backend = FileBackend(root)
    return [item async for item in backend.scan(b"")]


def test_processes_share_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.file_worker", "hammer", str(root), str(i), str(SECONDS)],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0, out
        reports.append(json.loads(out))
    for report in reports:
        assert report["bad"] == 0
        assert report["writes"] > 20 and report["hits"] > 20
        assert report["deletes"] > 0 and report["clears"] > 0
    assert sum(report["evictions"] for report in reports) > 0
    items = anyio.run(read_back, root)
    assert items and all(check_value(key, value) for key, value in items)
    assert temps(root) == []
