"""SIGKILL a writer of 1 MB values at random moments: readers see an old value, a new value or a
miss (never an error, never garbage), and the next start removes the dead writer's temp files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

from aiocache_secure.backends import _file_dir
from aiocache_secure.backends.file import FileBackend
from tests.file_worker import CRASH_KEYS, check_value

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 40


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def temps(root: Path) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.startswith(".t")]


async def read_all(root: Path) -> list[bytes | None]:
    backend = FileBackend(root)
    try:
        return await backend.get_many(CRASH_KEYS)
    finally:
        await backend.aclose()


def test_sigkill_mid_write_leaves_whole_values(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    rng = random.Random(0x5EED)
    interrupted = 0
    for round_ in range(ROUNDS):
        # Half the writers fsync (the kill then lands mid-write nearly always), half use the
        # default (no fsync: shorter writes, so fewer kills land inside one).
        durability = ["fsync"] if round_ % 2 else []
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.file_worker", "crash", str(root), *durability],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.08))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        interrupted += bool(temps(root))

        _file_dir.registry.clear()  # the next start is a new process: nothing shared yet
        values = anyio.run(read_all, root)
        assert values[0] is not None, "the first write completed before 'ready'"
        for key, value in zip(CRASH_KEYS, values, strict=True):
            assert value is None or (len(value) == (1 << 20) + 48 and check_value(key, value))
        assert temps(root) == []
    # The kills did land in the middle of writes, not only between them.
    assert interrupted >= ROUNDS // 4, interrupted
