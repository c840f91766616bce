"""Tests that run several OS processes on one store: the stores they can share, and the child
processes themselves (``python -m tests.<worker> ...`` from the repository root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(params=["file", "redis", "mongo"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store every process can reach: a file directory, a redis-server, a mongod (a test
    module that wants other stores defines its own ``shared_url``)."""
    if request.param == "file":
        return f"file://{tmp_path / 'cache'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


def start_worker(module: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``python -m tests.<module> ARGS...`` with ``env``, output and errors captured together."""
    return subprocess.Popen(
        [sys.executable, "-m", f"tests.{module}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish_worker(child: subprocess.Popen[bytes]) -> str:
    """The output of ``child`` once it has exited; fails the test (with its tail) unless 0."""
    out, _ = child.communicate(timeout=240)
    assert child.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode()
