"""One deadline per operation: waiting for a pooled connection, connecting, primary discovery
through the sentinels and the exchange itself all fit in ``timeout``; nothing is retried past it.

The bounds below are generous hang guards (twice the timeout plus a second), not speed claims.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from aiocache_secure import BackendTimeout
from aiocache_secure.backends.redis import RedisBackend
from tests import servers
from tests.plugins.redis import SENTINEL_DATA_PASSWORD, SENTINEL_PASSWORD

pytestmark = pytest.mark.anyio
TIMEOUT = 0.3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_waiting_for_a_connection_is_inside_the_deadline(tmp_path: Path) -> None:
    with servers.redis_server(tmp_path) as (port, proc):
        store = RedisBackend(
            f"redis://127.0.0.1:{port}/0", timeout=TIMEOUT, max_connections=1, auto_batch=False
        )
        await store.set(b"acs1k", b"v", ttl=60)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            # One connection, ten callers: nine wait for it, and all are done at one deadline.
            results = await asyncio.gather(
                *(store.get(b"acs1k") for _ in range(10)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert all(isinstance(r, BackendTimeout) for r in results), results
        assert elapsed < 2 * TIMEOUT + 1.0
        assert await store.get(b"acs1k") == b"v"
        await store.aclose()


async def test_primary_discovery_is_inside_the_deadline(
    redis_sentinel: servers.SentinelGroup,
) -> None:
    url = redis_sentinel.url.replace("://", f"://default:{SENTINEL_DATA_PASSWORD}@", 1)
    store = RedisBackend(url, sentinel_password=SENTINEL_PASSWORD, timeout=TIMEOUT)
    procs = redis_sentinel.sentinel_pids
    for pid in procs:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await store.get(b"acs1k")  # three silent sentinels, one deadline
        elapsed = time.monotonic() - started
    finally:
        for pid in procs:
            os.kill(pid, signal.SIGCONT)
    assert elapsed < 2 * TIMEOUT + 1.0
    assert await store.get(b"acs1k") is None
    await store.aclose()
