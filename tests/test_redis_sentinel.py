"""Redis Sentinel: URLs, options, and a namespace on the primary found through real sentinels
(``redis-server --sentinel``; passwords on the data nodes and on the sentinels)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from aiocache_secure import BackendUnavailable, CacheManager, ConfigurationError, Keyring
from aiocache_secure.backends import backend_kind
from aiocache_secure.backends.redis import RedisAddress, RedisBackend, parse_url
from tests import servers
from tests.plugins.redis import (
    SENTINEL_DATA_PASSWORD,
    SENTINEL_PASSWORD,
    TlsFiles,
    make_tls_files,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_sentinel_urls() -> None:
    address = parse_url("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0")
    assert address == RedisAddress(
        False, False, (("127.0.0.1", 26379), ("127.0.0.1", 26380)), 0, service="mymaster"
    )
    assert address.scheme == "redis+sentinel"
    tls = parse_url("rediss+sentinel://app:p%40ss@[::1],sentinel.internal/cache.main/3")
    assert tls.tls and tls.service == "cache.main" and tls.db == 3
    assert tls.nodes == (("::1", 26379), ("sentinel.internal", 26379))
    assert (tls.username, tls.password) == ("app", "p@ss")
    assert "p@ss" not in repr(tls)
    assert tls.scheme == "rediss+sentinel"
    assert backend_kind("redis+sentinel://h/s").scheme == "redis+sentinel"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no service
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1:26379/my master",
        "redis+sentinel://127.0.0.1:26379/mymaster/x",
        "redis+sentinel://127.0.0.1:26379/mymaster?sentinel_password=hunter2",
        "redis+sentinel://127.0.0.1:99999/mymaster",
        "redis+sentinel://127.0.0.1:26379/mymaster/\u00b3",
    ],
)
def test_bad_sentinel_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_url(url)
    assert "hunter2" not in str(refused.value) and url not in str(refused.value)


def test_sentinel_options() -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend("redis://127.0.0.1/0", sentinel_password="x")
    with pytest.raises(ConfigurationError):
        RedisBackend("redis+sentinel://127.0.0.1/s", ca_file="/nonexistent")  # TLS needs rediss
    store = RedisBackend("redis+sentinel://127.0.0.1/s", sentinel_password="hunter2")
    assert store.kind == "redis+sentinel" and "hunter2" not in repr(store)


async def test_namespace_on_the_primary(
    redis_sentinel_url: Callable[[], RedisBackend], redis_sentinel: servers.SentinelGroup
) -> None:
    store = redis_sentinel_url()
    async with CacheManager(Keyring.generate(), default_backend=store) as manager:
        ns = manager.namespace("sentinel")
        await ns.set("alice", {"plan": "pro"})
        await ns.set_many({"a": 1, "b": 2})
        results = await asyncio.gather(*(ns.get(k) for k in ("alice", "a", "b", "none")))
        assert results == [{"plan": "pro"}, 1, 2, None]
        assert await ns.get_many(["a", "b"]) == [1, 2]
        assert dict([item async for item in ns.items()]) == {
            "alice": {"plan": "pro"},
            "a": 1,
            "b": 2,
        }
        primary, replica = redis_sentinel.primary[0], redis_sentinel.replica[0]
        with redis.Redis(port=primary, password=SENTINEL_DATA_PASSWORD) as direct:
            assert len(list(direct.scan_iter(match="acs1*"))) == 3  # hashed keys, on the primary
            assert direct.execute_command("WAIT", 1, 5000) == 1
        with redis.Redis(port=replica, password=SENTINEL_DATA_PASSWORD) as direct:
            assert len(list(direct.scan_iter(match="acs1*"))) == 3  # and on its replica
        assert await ns.delete("a")
        assert await ns.clear() == 2
    await store.aclose()


async def test_wrong_sentinel_password_is_opaque(
    redis_sentinel: servers.SentinelGroup,
) -> None:
    url = redis_sentinel.url.replace("://", f"://default:{SENTINEL_DATA_PASSWORD}@", 1)
    store = RedisBackend(url, sentinel_password="not-" + SENTINEL_PASSWORD, timeout=1.0)
    with pytest.raises(BackendUnavailable) as refused:
        await store.get(b"acs1x")
    text = f"{refused.value!s} {refused.value!r} {store!r}"
    assert SENTINEL_PASSWORD not in text and SENTINEL_DATA_PASSWORD not in text
    await store.aclose()
    wrong_data = RedisBackend(
        redis_sentinel.url.replace("://", "://default:nope@", 1),
        sentinel_password=SENTINEL_PASSWORD,
        timeout=1.0,
    )
    with pytest.raises(BackendUnavailable):
        await wrong_data.get(b"acs1x")
    await wrong_data.aclose()


@pytest.fixture
def tls_group(tmp_path: Path) -> Iterator[tuple[servers.SentinelGroup, TlsFiles]]:
    files = make_tls_files(tmp_path)
    paths = servers.TlsPaths(files.server_cert, files.server_key, files.ca)
    with servers.redis_sentinel_group(tmp_path / "group", tls=paths) as group:
        yield group, files


@pytest.mark.slow
async def test_sentinels_and_primary_over_tls(
    tls_group: tuple[servers.SentinelGroup, TlsFiles],
) -> None:
    group, files = tls_group
    url = group.url.replace("redis+sentinel://", "rediss+sentinel://", 1)
    store = RedisBackend(url, ca_file=files.ca, timeout=2.0)
    async with CacheManager(Keyring.generate(), default_backend=store) as manager:
        ns = manager.namespace("tls")
        await ns.set("k", {"v": 1})
        assert await ns.get("k") == {"v": 1}
    await store.aclose()
    untrusted = RedisBackend(url, ca_file=files.other_ca, timeout=2.0)
    with pytest.raises(BackendUnavailable):
        await untrusted.get(b"acs1k")
    await untrusted.aclose()
