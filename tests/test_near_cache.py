"""The near cache (namespace(..., near_cache=True)) against real redis-server processes: hits
with no round trip, and every change by another manager or another OS process seen at once;
a killed invalidation connection or a server restart never leaves an old value served."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from aiocache_secure import Cache, CacheManager, ConfigurationError, Keyring
from aiocache_secure.backends.redis import RedisBackend
from aiocache_secure.layers.near import NearStore

from . import servers
from .plugins.redis import TlsServer, cluster_with_replicas

pytestmark = pytest.mark.anyio
BOUND = 0.05  # seconds: far above the measured report delay (p99 well under 1 ms on loopback)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def _two_managers(url: str) -> AsyncIterator[tuple[Cache, Cache]]:
    """The near-cached namespace "hot" on ``url``, in two managers sharing one keyring."""
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
        yield (
            one.namespace("hot", backend=url, near_cache=True),
            two.namespace("hot", backend=url, near_cache=True),
        )


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[Cache, Cache]]:
    async with _two_managers(redis_url) as caches:
        yield caches


async def _warm(cache: Cache, key: str) -> object:
    """Read ``key`` until it is served from the near cache (tracking starts on first use)."""
    before = cache.stats.near_hits
    async with asyncio.timeout(5):
        while True:
            value = await cache.get(key)
            if cache.stats.near_hits > before:
                return value
            await asyncio.sleep(0.01)


async def _commands(url: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("stats")
        return int(info["total_commands_processed"])
    finally:
        await client.aclose()


async def test_hits_need_no_round_trip(pair: tuple[Cache, Cache], redis_url: str) -> None:
    writer, reader = pair
    await writer.set_many({"a": {"n": 1}, "b": [1, 2]})
    assert await _warm(reader, "a") == {"n": 1}
    await reader.get_many(["a", "b"])
    await _warm(reader, "b")
    before = await _commands(redis_url)
    hits = reader.stats.near_hits
    for _ in range(50):
        assert await reader.get("a") == {"n": 1}
        assert await reader.get_many(["a", "b"]) == [{"n": 1}, [1, 2]]
    assert reader.stats.near_hits == hits + 150
    assert await _commands(redis_url) - before <= 2  # only INFO itself (and a health PING)
    assert reader.stats.hits >= reader.stats.near_hits


async def test_changes_in_one_manager_are_seen_in_the_other(pair: tuple[Cache, Cache]) -> None:
    writer, reader = pair
    await writer.set("k", "v1")
    assert await _warm(reader, "k") == "v1"
    await writer.set("k", "v2")
    await asyncio.sleep(BOUND)
    assert await reader.get("k") == "v2"
    await _warm(reader, "k")
    await writer.delete("k")
    await asyncio.sleep(BOUND)
    assert await reader.get("k") is None
    await writer.set_many({"x": 1, "y": 2})
    await reader.get_many(["x", "y"])
    await _warm(reader, "x")
    await writer.clear()
    await asyncio.sleep(BOUND)
    assert await reader.get_many(["x", "y"]) == [None, None]
    await writer.set("n", 1)
    await _warm(reader, "n")
    assert await writer.incr("n") == 2
    await asyncio.sleep(BOUND)
    assert await reader.get("n") == 2


async def test_tag_invalidation_in_one_manager_is_seen_in_the_other(
    pair: tuple[Cache, Cache],
) -> None:
    writer, reader = pair
    await writer.set("p", {"plan": "pro"}, tags=["user:1"])
    await writer.set("q", "other", tags=["user:2"])
    assert await _warm(reader, "p") == {"plan": "pro"}
    assert await reader._get_tagged("p", ("user:1",), None) == {"plan": "pro"}  # @cached's read
    assert await reader.get_many(["p", "q"]) == [{"plan": "pro"}, "other"]
    hits = reader.stats.near_hits
    assert await reader.get("p") == {"plan": "pro"}
    assert reader.stats.near_hits > hits  # the entry and its record come from memory
    await writer.invalidate_tags(["user:1"])
    await asyncio.sleep(BOUND)
    assert await reader.get("p") is None
    assert await reader._get_tagged("p", ("user:1",), None) is None
    assert await reader.get_many(["p", "q"]) == [None, "other"]
    await writer.set("p", {"plan": "free"}, tags=["user:1"])
    assert await _warm(reader, "p") == {"plan": "free"}


async def test_expiry(pair: tuple[Cache, Cache]) -> None:
    writer, reader = pair
    await writer.set("short", "v", ttl=0.3)
    assert await _warm(reader, "short") == "v"
    await asyncio.sleep(0.35)
    assert await reader.get("short") is None


async def test_own_writes_are_read_at_once(pair: tuple[Cache, Cache]) -> None:
    cache, _ = pair
    await cache.set("k", 1)
    await _warm(cache, "k")
    for value in range(2, 50):
        await cache.set("k", value)
        assert await cache.get("k") == value  # no sleep: never the old value


async def test_killed_channel_drops_everything(pair: tuple[Cache, Cache], redis_url: str) -> None:
    writer, reader = pair
    await writer.set("k", "v1")
    await _warm(reader, "k")
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        # Kill every invalidation connection, then write with a client the near caches do not
        # know: its report can reach no one. Nothing may still serve v1.
        for info in await admin.client_list():
            if info.get("name") == "acs-invalidate":
                await admin.client_kill_filter(_id=info["id"])
        raw_key = next(iter([k async for k in admin.scan_iter(match=b"acs1*")]))
        stored = await admin.get(raw_key)
        await writer.set("k", "v2")
        v2 = await admin.get(raw_key)
        await admin.set(raw_key, stored)  # back to v1 bytes, then v2 through the raw client
        await _warm(reader, "k")
        await admin.set(raw_key, v2)
    finally:
        await admin.aclose()
    await asyncio.sleep(BOUND)
    assert await reader.get("k") == "v2"


async def test_server_restart_drops_everything(tmp_path: Path) -> None:
    port = servers.free_port()
    keyring = Keyring.generate()
    url = f"redis://127.0.0.1:{port}/0"
    with servers.redis_server(tmp_path / "a", port=port):
        manager = CacheManager(keyring=keyring, breaker=None)
        cache = manager.namespace("hot", backend=url, near_cache=True)
        await cache.set("k", "before")
        await _warm(cache, "k")
    try:
        await asyncio.sleep(BOUND)  # the loop runs on while the server is down, as in service
        with servers.redis_server(tmp_path / "b", port=port):  # empty: "k" is gone
            async with asyncio.timeout(5):
                while True:
                    try:
                        value = await cache.get("k")
                    except Exception:  # noqa: S112 - the data connection reconnects too
                        await asyncio.sleep(0.05)
                        continue
                    break
            assert value is None
    finally:
        await manager.aclose()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from aiocache_secure import CacheManager, Keyring

    async def main():
        keyring = Keyring([bytes.fromhex(sys.argv[2])])
        async with CacheManager(keyring=keyring) as manager:
            cache = manager.namespace("hot", backend=sys.argv[1], near_cache=True)
            while cache.stats.near_hits == 0:
                await cache.get("k")
                await asyncio.sleep(0.01)
            print("ready", await cache.get("k"), flush=True)
            loop = asyncio.get_running_loop()
            while (line := await loop.run_in_executor(None, sys.stdin.readline)).strip():
                value = await cache.get("k")
                print(value, flush=True)
                hits = cache.stats.near_hits
                for _ in range(100):  # held in memory again before the next change
                    if value is None or cache.stats.near_hits > hits:
                        break
                    await cache.get("k")
                    await asyncio.sleep(0.01)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("store", ["standalone", "cluster"])
async def test_two_processes(store: str, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue(
        "redis_url" if store == "standalone" else "redis_cluster_url"
    )
    key = bytes(range(32))
    async with CacheManager(keyring=Keyring([key])) as manager:
        cache = manager.namespace("hot", backend=redis_url, near_cache=True)
        await cache.set("k", 0)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            redis_url,
            key.hex(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        try:
            async with asyncio.timeout(60):
                assert (await child.stdout.readline()).split() == [b"ready", b"0"]

                async def child_reads() -> bytes:
                    child.stdin.write(b"read\n")
                    await child.stdin.drain()
                    return (await child.stdout.readline()).strip()

                for value in range(1, 21):
                    await cache.set("k", value)
                    await asyncio.sleep(BOUND)
                    assert await child_reads() == str(value).encode()
                await cache.delete("k")
                await asyncio.sleep(BOUND)
                assert await child_reads() == b"None"
                await cache.set("k", "short", ttl=0.3)
                await asyncio.sleep(BOUND)
                assert await child_reads() == b"short"
                await asyncio.sleep(0.35)
                assert await child_reads() == b"None"
                await cache.set("k", 99)
                await asyncio.sleep(BOUND)
                assert await child_reads() == b"99"
                await cache.clear()
                await asyncio.sleep(BOUND)
                assert await child_reads() == b"None"
                child.stdin.write(b"\n")
                await child.stdin.drain()
                assert await child.wait() == 0
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def test_private_namespace_erased_elsewhere(redis_url: str) -> None:
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring, key_check_interval=0.1) as one:
        async with CacheManager(keyring=keyring, key_check_interval=0.1) as two:
            a = one.namespace("user:1", backend=redis_url, private=True, near_cache=True)
            b = two.namespace("user:1", backend=redis_url, private=True, near_cache=True)
            await a.set("k", "secret")
            assert await _warm(b, "k") == "secret"
            assert await one.erase("user:1")
            await asyncio.sleep(0.2)
            assert await b.get("k") is None


async def test_tls_and_acl_user(redis_tls_server: TlsServer) -> None:
    keyring = Keyring.generate()
    stores = [redis_tls_server.backend(), redis_tls_server.backend()]
    try:
        async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
            writer = one.namespace("hot", backend=stores[0], near_cache=True)
            reader = two.namespace("hot", backend=stores[1], near_cache=True)
            await writer.set("k", "v1")
            assert await _warm(reader, "k") == "v1"
            await writer.set("k", "v2")
            await asyncio.sleep(BOUND)
            assert await reader.get("k") == "v2"
            await writer.clear()
    finally:
        for store in stores:
            await store.aclose()


async def test_memory_is_bounded(redis_url: str) -> None:
    async with CacheManager(keyring=Keyring.generate(), near_cache_bytes=64 * 1024) as manager:
        cache = manager.namespace("hot", backend=redis_url, near_cache=True)
        await cache.set_many({f"k{i}": "x" * 500 for i in range(400)})
        await _warm(cache, "k0")
        for _ in range(2):
            assert await cache.get_many([f"k{i}" for i in range(400)]) == ["x" * 500] * 400
        near = next(iter(manager._stores.near.values()))
        assert near.nbytes <= 64 * 1024 and 0 < len(near) < 400


@pytest.mark.parametrize(
    "backend", ["memory://", "file:///tmp/acs-near-refused", "mongodb://127.0.0.1:1/db"]
)
async def test_refused_without_an_invalidation_channel(backend: str) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        with pytest.raises(ConfigurationError, match="invalidation"):
            manager.namespace("hot", backend=backend, near_cache=True)


async def test_refused_with_padding_and_on_adopted_clients(redis_url: str) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        with pytest.raises(ConfigurationError, match="pad_timing"):
            manager.namespace("hot", backend=redis_url, near_cache=True, pad_timing=True)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            with pytest.raises(ConfigurationError, match="client passed in"):
                manager.namespace("d", backend=RedisBackend(client=client), near_cache=True)
        finally:
            await client.aclose()


@pytest.mark.parametrize("bad", ["yes", 1, None])
async def test_bad_option_types(bad: object, redis_url: str) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        with pytest.raises(TypeError):
            manager.namespace("hot", backend=redis_url, near_cache=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CacheManager(near_cache_bytes="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CacheManager(near_cache_bytes=0)


class FakeChannel:
    """Stands in for the channel in NearStore's unit tests (never for a backend)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.up = True

    def tracks(self, prefix: bytes) -> bool:
        return self.up

    async def add_prefix(self, prefix: bytes) -> None:
        return None

    async def aclose(self) -> None:
        return None


def test_a_report_during_a_read_keeps_its_reply_out() -> None:
    near, channel = NearStore(), FakeChannel()
    near.attach(channel)
    token = near.begin(b"p:k")
    near.on_invalidate([b"p:k"])
    near.end(b"p:k", token, b"old", b"p:")
    assert near.lookup(b"p:k") is None
    token = near.begin(b"p:k")
    near.end(b"p:k", token, b"new", b"p:")
    assert near.lookup(b"p:k") == b"new"


def test_a_flush_or_an_outage_during_a_read_keeps_its_reply_out() -> None:
    near, channel = NearStore(), FakeChannel()
    near.attach(channel)
    token = near.begin(b"p:k")
    near.on_invalidate(None)
    near.end(b"p:k", token, b"old", b"p:")
    assert len(near) == 0
    token = near.begin(b"p:k")
    channel.epoch += 1  # went down and came back while the read was in flight
    near.end(b"p:k", token, b"old", b"p:")
    assert len(near) == 0
    token = near.begin(b"p:k")
    channel.up = False
    near.end(b"p:k", token, b"old", b"p:")
    assert len(near) == 0


def test_overlapping_reads_of_one_key() -> None:
    near, channel = NearStore(), FakeChannel()
    near.attach(channel)
    first = near.begin(b"p:k")
    near.on_invalidate([b"p:k"])
    second = near.begin(b"p:k")
    near.end(b"p:k", second, b"new", b"p:")
    near.end(b"p:k", first, b"old", b"p:")  # the older read's reply loses
    assert near.lookup(b"p:k") == b"new"
    assert not near._inflight and not near._last_change


def test_stats_count_near_hits_apart() -> None:
    """Stats count near hits apart from store hits."""
    from aiocache_secure import Stats

    assert "near_hits" in Stats().as_dict()


async def test_report_delay(pair: tuple[Cache, Cache]) -> None:
    """From a write returning in one manager to the other no longer serving the old value."""
    writer, reader = pair
    await writer.set("k", 0)
    await _warm(reader, "k")
    delays = []
    for value in range(1, 101):
        await writer.set("k", value)
        returned = time.perf_counter()
        while await reader.get("k") != value:  # noqa: ASYNC110 - polls the cache itself
            await asyncio.sleep(0)
        delays.append(time.perf_counter() - returned)
        await _warm(reader, "k")
    delays.sort()
    print(
        f"near-cache coherence delay p50 {delays[50] * 1e3:.3f} ms, p99 {delays[98] * 1e3:.3f} ms"
    )
    assert delays[98] < BOUND


@pytest.fixture
async def cluster_pair(redis_cluster_url: str) -> AsyncIterator[tuple[Cache, Cache]]:
    async with _two_managers(redis_cluster_url) as caches:
        yield caches


async def test_cluster_changes_are_seen_on_every_primary(
    cluster_pair: tuple[Cache, Cache],
) -> None:
    writer, reader = cluster_pair
    keys = [f"k{i}" for i in range(30)]  # spread over the three primaries' slots
    await writer.set_many(dict.fromkeys(keys, "v1"))
    await _warm(reader, keys[0])
    assert await reader.get_many(keys) == ["v1"] * 30
    hits = reader.stats.near_hits
    assert await reader.get_many(keys) == ["v1"] * 30
    assert reader.stats.near_hits == hits + 30
    await writer.set_many(dict.fromkeys(keys, "v2"))
    await asyncio.sleep(BOUND)
    assert await reader.get_many(keys) == ["v2"] * 30
    await reader.get_many(keys)
    await writer.delete_many(keys[:10])
    await writer.set("short", "s", ttl=0.3)
    await _warm(reader, "short")
    await asyncio.sleep(BOUND)
    assert await reader.get_many(keys[:10]) == [None] * 10
    await writer.clear()
    await asyncio.sleep(0.35)
    assert await reader.get_many([*keys, "short"]) == [None] * 31


@pytest.mark.slow
async def test_cluster_failover_never_serves_the_old_value(tmp_path: Path) -> None:
    with cluster_with_replicas(tmp_path) as procs:
        ports = list(procs)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        keyring = Keyring.generate()
        one = CacheManager(keyring=keyring, breaker=None)
        two = CacheManager(keyring=keyring, breaker=None)
        stores = [RedisBackend(url, timeout=1.0), RedisBackend(url, timeout=1.0)]
        try:
            writer = one.namespace("hot", backend=stores[0], near_cache=True)
            reader = two.namespace("hot", backend=stores[1], near_cache=True)
            keys = [f"k{i}" for i in range(30)]
            await writer.set_many(dict.fromkeys(keys, 0))
            await _warm(reader, keys[0])
            await reader.get_many(keys)
            victim = [p for p in ports if await _role_of(p) == "master"][0]
            procs[victim].kill()
            # Write every key until the cluster takes writes again (the victim's slots fail
            # over to its replica); after that nothing may serve an old value.
            async with asyncio.timeout(30):
                while True:
                    try:
                        await writer.set_many(dict.fromkeys(keys, 1))
                        break
                    except Exception:  # noqa: S112 - the cluster is failing over
                        await asyncio.sleep(0.2)
            await asyncio.sleep(BOUND)
            async with asyncio.timeout(30):
                while True:
                    try:
                        values = await reader.get_many(keys)
                    except Exception:  # noqa: S112 - the reader's topology is refreshing
                        await asyncio.sleep(0.2)
                        continue
                    break
            assert values == [1] * 30
            await _warm(reader, keys[0])  # served from memory again, from the new topology
            assert await reader.get_many(keys) == [1] * 30
        finally:
            await one.aclose()
            await two.aclose()
            for store in stores:
                await store.aclose()


async def _role_of(port: int) -> str:
    node = redis.asyncio.Redis(port=port)
    try:
        return str((await node.execute_command("ROLE"))[0].decode())
    finally:
        await node.aclose()
