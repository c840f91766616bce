"""MongoDB backend behind a fault proxy: blackhole, latency, reset mid-reply, recovery."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aiocache_secure import BackendError, BackendTimeout
from aiocache_secure.backends.mongo import MongoBackend
from tests import servers
from tests.plugins.mongo import nx_server
from tests.proxy import FaultProxy, until_ok, until_written
from tests.test_mongo_backend import SOCKET_LEAK, settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def proxy(mongo_server: str) -> AsyncIterator[FaultProxy]:
    port = int(mongo_server.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy(port) as running:
        yield running


def _store(proxy: FaultProxy, collection: str, timeout: float) -> MongoBackend:
    return MongoBackend(
        f"mongodb://127.0.0.1:{proxy.port}/aiocache_secure_test.{collection}",
        socket_timeout=timeout,
        server_selection_timeout=timeout,
        connect_timeout=timeout,
    )


@SOCKET_LEAK
async def test_blackhole_times_out_then_recovers(proxy: FaultProxy, mongo_collection: str) -> None:
    store = _store(proxy, mongo_collection, 0.5)
    await store.set(b"acs1k", b"v", ttl=60)
    proxy.blackhole = True
    started = time.monotonic()
    with pytest.raises(BackendError):
        await store.get(b"acs1k")
    with pytest.raises(BackendError):
        await store.set(b"acs1k", b"w", ttl=60)
    assert time.monotonic() - started < 2 * 0.5 + 3.0  # bounded: never a hang
    proxy.blackhole = False
    proxy.drop_connections()
    assert await until_ok(store, b"acs1k", b"v", limit=5.0) < 5.0
    await store.aclose()
    await settle()


@SOCKET_LEAK
async def test_latency_above_the_socket_timeout(proxy: FaultProxy, mongo_collection: str) -> None:
    store = _store(proxy, mongo_collection, 0.5)
    await store.set(b"acs1k", b"v", ttl=60)
    proxy.latency = 1.0
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await store.get(b"acs1k")
    assert time.monotonic() - started < 2 * 0.5 + 2.0  # PyMongo retries a read once
    proxy.latency = 0.0
    assert await until_ok(store, b"acs1k", b"v", limit=5.0) < 5.0
    await store.aclose()
    await settle()


async def test_reset_mid_reply_never_returns_another_value(
    proxy: FaultProxy, mongo_collection: str
) -> None:
    store = _store(proxy, mongo_collection, 1.0)
    big = b"x" * 300_000
    await store.set(b"acs1big", big, ttl=60)
    await store.set(b"acs1small", b"small", ttl=60)
    proxy.reset_next_reply = True
    # PyMongo retries a read once on a fresh connection: either that retry returns the whole
    # value, or the call fails with a BackendError; never a torn or foreign value.
    try:
        assert await store.get(b"acs1big") == big
    except BackendError:
        pass
    assert proxy.resets == 1
    assert await until_ok(store, b"acs1small", b"small", limit=5.0) < 5.0
    assert await store.get(b"acs1big") == big
    await store.aclose()


@SOCKET_LEAK
async def test_sigstop_times_out_and_sigkill_restart_recovers(tmp_path: Path) -> None:
    port = servers.free_port()
    server = nx_server(tmp_path, port)
    _, proc = await anyio.to_thread.run_sync(server.__enter__)
    store = MongoBackend(
        f"mongodb://127.0.0.1:{port}/db", socket_timeout=0.5, server_selection_timeout=0.5
    )
    try:
        await store.set(b"acs1k", b"v", ttl=None)
        proc.send_signal(signal.SIGSTOP)  # a frozen server: accepts nothing, answers nothing
        started = time.monotonic()
        with pytest.raises(BackendError):
            await store.get(b"acs1k")
        assert time.monotonic() - started < 2 * 0.5 + 2.0
        proc.send_signal(signal.SIGCONT)
        assert await until_ok(store, b"acs1k", b"v", limit=5.0) < 5.0
        proc.kill()  # SIGKILL: the in-memory database is gone with the process
        await anyio.to_thread.run_sync(proc.wait)
        with pytest.raises(BackendError):
            await store.get(b"acs1k")
        await anyio.to_thread.run_sync(server.__exit__, None, None, None)
        server = nx_server(tmp_path, port)
        await anyio.to_thread.run_sync(server.__enter__)
        assert await until_written(store, b"acs1k", b"again", limit=5.0) < 5.0
        assert await store.get(b"acs1k") == b"again"
    finally:
        await store.aclose()
        await anyio.to_thread.run_sync(server.__exit__, None, None, None)
        await settle()
