"""MongoDB backend behind a fault proxy: blackhole, latency, reset mid-reply, recovery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from aiocache_secure import BackendError, BackendTimeout
from aiocache_secure.backends.mongo import MongoBackend
from tests.proxy import FaultProxy, until_ok
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
