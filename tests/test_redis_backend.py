"""The Redis backend beyond the contract suite: URLs, TLS and ACLs, secrets, batching, faults,
cancellation, cluster specifics and the lease. Every test talks to a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import traceback
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from aiocache_secure import (
    MISSING,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CacheManager,
    ClosedError,
    ConfigurationError,
    Keyring,
    cached,
)
from aiocache_secure.backends import open_backend
from aiocache_secure.backends.redis import RedisBackend, escape_glob, parse_url
from aiocache_secure.backends.redis.wire import Wire
from aiocache_secure.clock import system_clock
from tests import servers
from tests.plugins.redis import TLS_PASSWORD, TlsServer
from tests.proxy import FaultProxy, until_ok

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _port(url: str) -> int:
    return parse_url(url).nodes[0][1]


def _unique() -> bytes:
    return b"acs1test-" + uuid.uuid4().hex.encode() + b":"


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    store = RedisBackend(redis_url, timeout=2.0)
    yield store
    await store.aclose()


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RedisBackend]:
    store = RedisBackend(redis_cluster_url, timeout=3.0)
    yield store
    await store.aclose()


def _sync(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


# -- URLs and configuration ------------------------------------------------------------------


def test_parse_urls() -> None:
    plain = parse_url("redis://u%40x:p%3Ass@127.0.0.1:7000/3")
    assert (plain.tls, plain.cluster, plain.nodes, plain.db) == (
        False,
        False,
        (("127.0.0.1", 7000),),
        3,
    )
    assert (plain.username, plain.password) == ("u@x", "p:ss")
    assert "p:ss" not in repr(plain) and "u@x" not in repr(plain)
    assert parse_url("rediss://h").nodes == (("h", 6379),)
    seeds = parse_url("rediss+cluster://a:1,[::1]:2")
    assert seeds.tls and seeds.cluster and seeds.nodes == (("a", 1), ("::1", 2))


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-secret@h:6379/0?ssl_cert_reqs=none",
        "redis://:hunter2-secret@h:notaport/0",
        "redis://:hunter2-secret@h:1/x",
        "redis://:hunter2-secret@a:1,b:2/0",
        "redis+cluster://:hunter2-secret@a:1/2",
        "redis://:hunter2-secret@:1/0",
        "http://:hunter2-secret@h/",
        "redis://:hunter2-secret@h:\u00b9/0",  # superscript one: a digit to str.isdigit only
        "redis://:hunter2-secret@h:1/\u00b2",
        "redis://:hunter2-secret@h:\u0661/0",  # Arabic-Indic one: not a port in a URL
    ],
)
def test_bad_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisBackend(url)
    assert "hunter2" not in str(info.value)


def test_options_are_validated() -> None:
    for kwargs in (
        {"timeout": 0},
        {"timeout": float("inf")},
        {"max_batch": 0},
        {"auto_batch": "yes"},
        {"ca_file": "/nonexistent/ca.pem"},
    ):
        with pytest.raises(ConfigurationError):
            RedisBackend("rediss://127.0.0.1:1/0", **kwargs)
    with pytest.raises(ConfigurationError):
        RedisBackend("redis://127.0.0.1:1/0", verify_tls=False)  # TLS option without TLS
    with pytest.raises(ConfigurationError):
        RedisBackend()
    with pytest.raises(ConfigurationError):
        RedisBackend(client=redis.asyncio.Redis(), password="ignored otherwise")
    with pytest.raises(ConfigurationError):
        open_backend("redis://127.0.0.1:1/0", clock=system_clock, strict=False, max_entries=10)


async def test_nothing_connects_at_construction_and_errors_are_typed() -> None:
    closed_port = servers.free_port()
    store = RedisBackend(f"redis://127.0.0.1:{closed_port}/0", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="^redis backend unreachable$"):
        await store.get(b"k")
    assert time.monotonic() - started < 1.5
    await store.aclose()
    with pytest.raises(ClosedError):
        await store.get(b"k")


def test_insecure_transport_is_audited_or_refused(
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    # Construction only: nothing ever connects to these non-loopback addresses.
    RedisBackend("redis://127.0.0.1:1/0")
    RedisBackend("redis://localhost:1/0")
    RedisBackend("rediss://10.20.30.40:6380/0")
    assert audit_records() == []
    RedisBackend("redis://:pw-should-not-leak@10.20.30.40:6379/0")
    RedisBackend("rediss://127.0.0.1:1/0", verify_tls=False)
    events = [r.audit for r in audit_records()]  # type: ignore[attr-defined]
    assert [(e["event"], e["reason"]) for e in events] == [
        ("insecure_config", "plaintext_to_remote_host"),
        ("insecure_config", "tls_verification_off"),
    ]
    assert all("pw-should-not-leak" not in r.getMessage() for r in audit_records())
    with pytest.raises(ConfigurationError):
        RedisBackend("redis://10.20.30.40:6379/0", strict=True)
    with pytest.raises(ConfigurationError):
        RedisBackend("redis+cluster://192.0.2.1:7000", strict=True)
    with pytest.raises(ConfigurationError):
        RedisBackend("rediss://127.0.0.1:1/0", verify_tls=False, strict=True)
    with pytest.raises(ConfigurationError):
        RedisBackend(client=redis.asyncio.Redis(host="10.20.30.40"), strict=True)


async def test_strict_manager_refuses_plain_remote_redis() -> None:
    async with CacheManager(strict=True) as manager:
        with pytest.raises(ConfigurationError):
            manager.namespace("n", backend="redis://10.20.30.40:6379/0", encrypt=False)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error(redis_url: str) -> None:
    store = RedisBackend(redis_url)
    with pytest.raises(ConfigurationError, match="asyncio"):
        await store.get(b"k")
    with pytest.raises(ConfigurationError, match="asyncio"):
        await store.set(b"k", b"v", ttl=None)
    with pytest.raises(ConfigurationError, match="asyncio"):
        [item async for item in store.scan(b"")]
    await store.aclose()  # closing what never opened works under trio too


# -- basic commands --------------------------------------------------------------------------


async def test_ttl_is_native_in_milliseconds(backend: RedisBackend, redis_url: str) -> None:
    prefix = _unique()
    await backend.set(prefix + b"a", b"1", ttl=2.5)
    await backend.set(prefix + b"b", b"2", ttl=0.0001)
    await backend.set(prefix + b"c", b"3", ttl=None)
    await backend.set_many([(prefix + b"d", b"4")], ttl=30)
    with _sync(redis_url) as admin:
        assert 2000 < admin.pttl(prefix + b"a") <= 2500
        assert admin.pttl(prefix + b"c") == -1
        assert 29_000 < admin.pttl(prefix + b"d") <= 30_000
    await asyncio.sleep(0.01)
    assert await backend.get(prefix + b"b") is None


async def test_ready_client_is_used_and_left_open(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    with pytest.raises(ConfigurationError):
        RedisBackend(client=redis.asyncio.Redis.from_url(redis_url, decode_responses=True))
    store = RedisBackend(client=client)
    key = _unique() + b"k"
    await store.set(key, b"v", ttl=10)
    assert await client.get(key) == b"v"
    await store.aclose()
    assert await client.get(key) == b"v"
    await client.aclose()


async def test_ready_cluster_client(redis_cluster: list[int]) -> None:
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=redis_cluster[1])
    store = RedisBackend(client=client)
    assert repr(store).startswith("RedisBackend(kind='redis+cluster'")
    prefix = _unique()
    await asyncio.gather(*(store.set(prefix + b"%d" % i, b"%d" % i, ttl=30) for i in range(50)))
    assert await store.get_many([prefix + b"%d" % i for i in range(50)]) == [
        b"%d" % i for i in range(50)
    ]
    assert await store.delete_prefix(prefix) == 50
    await store.aclose()
    assert await client.get(prefix + b"0") is None  # still open: its owner closes it
    await client.aclose()


@pytest.mark.parametrize("where", ["standalone", "cluster"])
async def test_delete_prefix_escapes_glob_metacharacters(
    where: str, redis_url: str, redis_cluster_url: str
) -> None:
    store = RedisBackend(redis_url if where == "standalone" else redis_cluster_url)
    base = _unique()
    tricky = base + b"p*[x]?\\a:"
    doomed = [tricky + b"1", tricky + b"2", tricky]
    survivors = [
        base + b"p*[y]?\\a:1",
        base + b"pz[x]?\\a:1",
        base + b"p*x?\\a:1",
        base + b"pQ[x]Q\\a:1",
        base + b"p*[x]?a:1",
        base + b"p",
    ]
    try:
        await store.set_many([(k, b"v") for k in doomed + survivors], ttl=60)
        assert escape_glob(b"a*b?c[d]e\\") == b"a\\*b\\?c\\[d\\]e\\\\"
        assert await store.delete_prefix(tricky) == 3
        assert await store.get_many(doomed) == [None, None, None]
        assert await store.get_many(survivors) == [b"v"] * len(survivors)
        assert await store.delete_prefix(base) == len(survivors)
    finally:
        await store.aclose()


async def test_cluster_spreads_keys_and_keeps_order(
    cluster: RedisBackend, redis_cluster: list[int]
) -> None:
    prefix = _unique()
    items = [(prefix + str(i).encode(), str(i).encode() * 3) for i in range(600)]
    await cluster.set_many(items, ttl=60)
    per_node = []
    for port in redis_cluster:
        with redis.Redis(port=port) as node:
            per_node.append(sum(1 for _ in node.scan_iter(match=prefix + b"*")))
    assert sum(per_node) == 600 and all(n > 100 for n in per_node)
    keys = [k for k, _ in reversed(items)] + [prefix + b"absent"]
    assert await cluster.get_many(keys) == [v for _, v in reversed(items)] + [None]
    exported = {k: v async for k, v in cluster.scan(prefix)}
    assert exported == dict(items)
    assert await cluster.delete_prefix(prefix) == 600


async def test_scan_streams_in_pages_without_duplicates(redis_url: str) -> None:
    store = RedisBackend(redis_url, scan_count=25)
    prefix = _unique()
    items = {prefix + b"%04d" % i: b"v%d" % i for i in range(500)}
    try:
        await store.set_many(list(items.items()), ttl=60)
        await store.set(_unique() + b"other", b"x", ttl=60)
        seen = [pair async for pair in store.scan(prefix)]
        assert len(seen) == 500 and dict(seen) == items
    finally:
        await store.delete_prefix(prefix)
        await store.aclose()


# -- TLS, ACL users, secrets ---------------------------------------------------------------------


async def test_tls_round_trip_and_acl_key_pattern(redis_tls_server: TlsServer) -> None:
    store = redis_tls_server.backend()
    try:
        await store.set(b"acs1-allowed", b"v", ttl=30)
        assert await store.get(b"acs1-allowed") == b"v"
        with pytest.raises(BackendError, match="^redis backend refused the command$"):
            await store.set(b"elsewhere", b"v", ttl=30)
        with redis_tls_server.admin() as admin:
            admin.set("elsewhere", "admin's")
            with pytest.raises(BackendError):
                await store.get(b"elsewhere")
            with pytest.raises(BackendError):
                await store.delete(b"elsewhere")
            assert admin.get("elsewhere") == b"admin's"
    finally:
        await store.aclose()
        with redis_tls_server.admin() as admin:
            admin.delete("acs1-allowed", "elsewhere")


async def test_private_namespace_and_erase_under_the_acl_user(
    redis_tls_server: TlsServer,
) -> None:
    store = redis_tls_server.backend()
    async with CacheManager(keyring=Keyring.generate(), default_backend=store) as manager:
        private = manager.namespace("user:42", private=True)
        await private.set_many({"a": 1, "b": [2]})
        assert {k: v async for k, v in private.items()} == {"a": 1, "b": [2]}
        with redis_tls_server.admin() as admin:
            (vault_key,) = admin.scan_iter(match="acs1*!vault")
            wrapped = admin.get(vault_key)
            assert await manager.erase("user:42")
            assert list(admin.scan_iter(match="acs1*", count=1000)) == []
            assert await private.get("a", default=MISSING) is MISSING
            # The namespace lives on under a fresh data key; the erased one is gone for good.
            assert admin.get(vault_key) not in (None, wrapped)
    await store.aclose()


async def test_batched_acl_failure_fails_only_its_caller(redis_tls_server: TlsServer) -> None:
    store = redis_tls_server.backend()
    prefix = b"acs1" + uuid.uuid4().hex.encode()
    try:
        ops = [store.set(prefix + b"%d" % i, b"v", ttl=30) for i in range(20)]
        ops.insert(7, store.set(b"forbidden", b"v", ttl=30))
        results = await asyncio.gather(*ops, return_exceptions=True)
        assert [type(r) for r in results].count(BackendUnavailable) == 1
        assert isinstance(results[7], BackendUnavailable)
        assert await store.get_many([prefix + b"%d" % i for i in range(20)]) == [b"v"] * 20
    finally:
        await store.delete_prefix(prefix)
        await store.aclose()


async def test_plain_tcp_to_a_tls_port_fails(redis_tls_server: TlsServer) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{redis_tls_server.port}/0", timeout=1.0)
    with pytest.raises(BackendError):
        await store.get(b"acs1-x")
    await store.aclose()


async def test_wrong_ca_and_missing_client_cert_fail(redis_tls_server: TlsServer) -> None:
    files = redis_tls_server.files
    wrong_ca = RedisBackend(
        redis_tls_server.url(),
        ca_file=files.other_ca,
        cert_file=files.client_cert,
        key_file=files.client_key,
        timeout=1.0,
    )
    no_client_cert = RedisBackend(redis_tls_server.url(), ca_file=files.ca, timeout=1.0)
    for store in (wrong_ca, no_client_cert):
        with pytest.raises(BackendUnavailable):
            await store.get(b"acs1-x")
        await store.aclose()


async def test_credentials_never_leak(
    redis_tls_server: TlsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-" + TLS_PASSWORD
    files = redis_tls_server.files
    url = redis_tls_server.url(password=secret)
    store = RedisBackend(
        url, ca_file=files.ca, cert_file=files.client_cert, key_file=files.client_key
    )
    with pytest.raises(BackendUnavailable) as info:
        await store.get(b"acs1-x")
    rendered = "".join(traceback.format_exception(info.value))
    for text in (str(info.value), repr(info.value), rendered, repr(store), caplog.text):
        assert secret not in text and url not in text
    await store.aclose()
    with_args = RedisBackend(
        f"rediss://127.0.0.1:{redis_tls_server.port}/0",
        username="app",
        password=TLS_PASSWORD,
        ca_file=files.ca,
        cert_file=files.client_cert,
        key_file=files.client_key,
    )
    assert TLS_PASSWORD not in repr(with_args)
    await with_args.set(b"acs1-args", b"v", ttl=5)
    assert await with_args.get(b"acs1-args") == b"v"
    assert await with_args.delete(b"acs1-args")
    await with_args.aclose()


# -- automatic batching ----------------------------------------------------------------------------


def _commandstats(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {name: int(entry["calls"]) for name, entry in stats.items()}


@pytest.mark.parametrize("auto_batch", [True, False])
async def test_concurrent_gets_are_coalesced(auto_batch: bool, redis_url: str) -> None:
    store = RedisBackend(redis_url, auto_batch=auto_batch, max_batch=256)
    prefix = _unique()
    keys = [prefix + b"%d" % i for i in range(500)]
    await store.set_many([(k, b"value-" + k) for k in keys], ttl=60)
    with _sync(redis_url) as admin:
        admin.config_resetstat()
        values = await asyncio.gather(*(store.get(k) for k in keys))
        stats = _commandstats(admin)
    assert values == [b"value-" + k for k in keys]
    if auto_batch:
        # One GET went out alone (nothing was in flight), the other 499 in two MGETs.
        assert stats.get("cmdstat_mget", 0) == 2
        assert stats.get("cmdstat_get", 0) == 1
    else:
        assert stats.get("cmdstat_mget", 0) == 0
        assert stats.get("cmdstat_get", 0) == 500
    await store.delete_prefix(prefix)
    await store.aclose()


async def test_concurrent_sets_and_gets_share_round_trips(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisBackend(redis_url)
    prefix = _unique()
    round_trips = 0
    real_run = Wire.run

    async def counting_run(self: Wire, commands: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return await real_run(self, commands)

    monkeypatch.setattr(Wire, "run", counting_run)
    await asyncio.gather(*(store.set(prefix + b"%d" % i, b"%d" % i, ttl=60) for i in range(300)))
    assert round_trips == 3  # one direct SET, then 299 queued: two pipelines of at most 256
    mixed = [store.set(prefix + b"x", b"new", ttl=60), store.get(prefix + b"x")]
    mixed += [store.get(prefix + b"%d" % i) for i in range(100)]
    results = await asyncio.gather(*mixed)
    assert results[2:] == [b"%d" % i for i in range(100)]
    assert await store.get(prefix + b"x") == b"new"
    await store.delete_prefix(prefix)
    await store.aclose()


async def test_concurrent_get_many_calls_share_round_trips(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How a web response cache reads (entry + generation per request): 64 concurrent callers
    # ride one or two round trips, each still getting its own keys' values in order.
    store = RedisBackend(redis_url)
    prefix = _unique()
    await store.set_many([(prefix + b"%d" % i, b"v%d" % i) for i in range(64)], ttl=60)
    round_trips = 0
    real_run = Wire.run

    async def counting_run(self: Wire, commands: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return await real_run(self, commands)

    monkeypatch.setattr(Wire, "run", counting_run)
    calls = [store.get_many([prefix + b"%d" % i, prefix + b"missing"]) for i in range(64)]
    results = await asyncio.gather(*calls)
    assert results == [[b"v%d" % i, None] for i in range(64)]
    assert round_trips == 2  # the first MGET alone, the other 63 callers in one
    await store.delete_prefix(prefix)
    await store.aclose()


async def test_batch_calls_are_one_round_trip_each(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisBackend(redis_url)
    prefix = _unique()
    exchanges: list[int] = []
    real_run = Wire.run

    async def counting_run(self: Wire, commands: Any) -> Any:
        exchanges.append(len(commands))
        return await real_run(self, commands)

    monkeypatch.setattr(Wire, "run", counting_run)
    items = [(prefix + b"%d" % i, b"%d" % i) for i in range(300)]
    with _sync(redis_url) as admin:
        admin.config_resetstat()
        await store.set_many(items, ttl=60)
        assert await store.get_many([k for k, _ in items]) == [v for _, v in items]
        stats = _commandstats(admin)
    assert exchanges == [300, 1]  # one pipelined write of 300 SETs, then one MGET
    assert stats["cmdstat_set"] == 300 and stats["cmdstat_mget"] == 1
    assert "cmdstat_multi" not in stats  # a plain pipeline, not a transaction
    await store.delete_prefix(prefix)
    await store.aclose()


async def test_cluster_batches_route_each_reply(cluster: RedisBackend) -> None:
    prefix = _unique()
    calls = [cluster.set(prefix + b"%d" % i, b"%d" % i, ttl=60) for i in range(200)]
    await asyncio.gather(*calls)
    values = await asyncio.gather(*(cluster.get(prefix + b"%d" % i) for i in range(300)))
    assert values == [b"%d" % i for i in range(200)] + [None] * 100
    await cluster.delete_prefix(prefix)


async def test_cancelled_callers_do_not_disturb_a_batch(backend: RedisBackend) -> None:
    prefix = _unique()
    await backend.set_many([(prefix + b"%d" % i, b"%d" % i) for i in range(100)], ttl=60)
    tasks = [asyncio.create_task(backend.get(prefix + b"%d" % i)) for i in range(100)]
    await asyncio.sleep(0)
    for task in tasks[10:20]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if 10 <= i < 20:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == b"%d" % i
    await backend.delete_prefix(prefix)


# -- faults ----------------------------------------------------------------------------------


@pytest.fixture
async def proxy(redis_server: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(_port(redis_server)) as running:
        yield running


@pytest.mark.parametrize("auto_batch", [True, False])
async def test_timeouts_and_recovery_through_a_blackhole(
    proxy: FaultProxy, auto_batch: bool
) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.3, auto_batch=auto_batch)
    key = _unique() + b"k"
    await store.set(key, b"v", ttl=60)
    proxy.blackhole = True
    started = time.monotonic()
    results = await asyncio.gather(*(store.get(key) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, BackendTimeout) for r in results)
    with pytest.raises(BackendTimeout):
        await store.set(key, b"w", ttl=60)
    with pytest.raises(BackendTimeout):
        await store.get_many([key, key])
    assert time.monotonic() - started < 3 * 0.3 + 1.0
    proxy.blackhole = False  # the blackhole swallowed the SET: the old value is still there
    assert await until_ok(store, key, b"v", limit=5.0) < 5.0
    await store.delete(key)
    await store.aclose()


async def test_latency_above_the_timeout_then_below(proxy: FaultProxy) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.3)
    key = _unique() + b"k"
    await store.set(key, b"v", ttl=60)
    proxy.latency = 0.6
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await store.get(key)
    assert time.monotonic() - started < 0.3 + 0.5
    proxy.latency = 0.01  # a reconnection's handshake takes a few round trips
    assert await store.get(key) == b"v"
    await store.delete(key)
    await store.aclose()


async def test_reset_mid_reply_fails_one_call_then_recovers(proxy: FaultProxy) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", timeout=1.0)
    key, other = _unique() + b"big", _unique() + b"small"
    big = os.urandom(300_000)
    await store.set(key, big, ttl=60)
    await store.set(other, b"small", ttl=60)
    proxy.reset_next_reply = True
    with pytest.raises(BackendUnavailable):
        await store.get(key)
    assert proxy.resets == 1
    assert await store.get(other) == b"small"
    assert await store.get(key) == big
    await store.delete(key)
    await store.delete(other)
    await store.aclose()


@pytest.mark.parametrize("auto_batch", [True, False])
async def test_cancellation_mid_command_leaves_no_reply_behind(
    proxy: FaultProxy, auto_batch: bool
) -> None:
    # One connection only, so a reply left unread would be the next caller's answer.
    store = RedisBackend(
        f"redis://127.0.0.1:{proxy.port}/0", timeout=2.0, max_connections=1, auto_batch=auto_batch
    )
    prefix = _unique()
    await store.set_many([(prefix + b"%d" % i, b"%d" % i) for i in range(10)], ttl=60)
    proxy.latency = 0.04
    for i in range(3):
        slow = asyncio.create_task(store.get(prefix + b"%d" % i))
        await asyncio.sleep(0.06)  # the server has the command; its reply is not back yet
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await store.get(prefix + b"%d" % (i + 5)) == b"%d" % (i + 5)
    proxy.latency = 0
    assert await store.get_many([prefix + b"%d" % i for i in range(10)]) == [
        b"%d" % i for i in range(10)
    ]
    await store.delete_prefix(prefix)
    await store.aclose()


async def test_fail_open_namespace_turns_errors_into_misses(proxy: FaultProxy) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = RedisBackend(url, timeout=0.2)
    async with CacheManager(default_backend=store) as manager:
        lenient = manager.namespace("lenient", encrypt=False, fail_open=True)
        strict = manager.namespace("strict", encrypt=False)
        await lenient.set("k", 1)
        assert await lenient.get("k") == 1
        proxy.blackhole = True
        assert await lenient.get("k", default=MISSING) is MISSING
        await lenient.set("k", 2)  # a no-op, not an error
        assert lenient.stats.errors == 2
        with pytest.raises(BackendTimeout):
            await strict.get("k")
        proxy.blackhole = False
        deadline = time.monotonic() + 5
        while await lenient.get("k", default=MISSING) is MISSING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await lenient.get("k") == 1
        await lenient.clear()
    await store.aclose()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = servers.free_port()
    yield port, tmp_path


async def test_sigstop_times_out_and_sigcont_recovers(own_server: tuple[int, Path]) -> None:
    port, tmp = own_server
    with servers.redis_server(tmp, port=port) as (_, proc):
        store = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        await store.set(b"k", b"v", ttl=60)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BackendTimeout):
                await store.get(b"k")
            assert time.monotonic() - started < 0.3 + 1.0
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert await until_ok(store, b"k", b"v", limit=5.0) < 5.0
        await store.aclose()


async def test_sigkill_and_restart_on_the_same_port(own_server: tuple[int, Path]) -> None:
    port, tmp = own_server
    store = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    with servers.redis_server(tmp / "a", port=port) as (_, proc):
        await store.set(b"k", b"v", ttl=60)
        proc.kill()
        proc.wait(5)
        with pytest.raises(BackendUnavailable):
            await store.get(b"k")
    with servers.redis_server(tmp / "b", port=port):
        started = time.monotonic()
        while True:
            try:
                await store.set(b"k", b"again", ttl=60)
                break
            except BackendError:
                assert time.monotonic() - started < 5.0
                await asyncio.sleep(0.05)
        assert await store.get(b"k") == b"again"
        await store.aclose()


async def test_cluster_node_stopped_times_out_then_recovers(redis_cluster: list[int]) -> None:
    # Stopped well below cluster-node-timeout (2 s), so the cluster itself never fails over.
    store = RedisBackend(f"redis+cluster://127.0.0.1:{redis_cluster[0]}", timeout=0.3)
    prefix = _unique()
    keys = [prefix + b"%d" % i for i in range(30)]  # spread over every node
    await store.set_many([(k, b"v") for k in keys], ttl=60)
    with redis.Redis(port=redis_cluster[2]) as node:
        pid = int(node.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await store.get_many(keys)
        assert time.monotonic() - started < 0.3 + 1.0
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while True:
        try:
            if await store.get_many(keys) == [b"v"] * len(keys):
                break
        except BackendError:
            pass
        assert time.monotonic() < deadline, "the cluster backend did not recover in time"
        await asyncio.sleep(0.05)
    assert await store.delete_prefix(prefix) == len(keys)
    await store.aclose()


def _cluster_calls(store: RedisBackend) -> dict[str, Callable[[], Any]]:
    async def scan() -> None:
        async for _ in store.scan(b"acs1"):
            pass

    return {
        "get": lambda: store.get(b"acs1-k"),
        "set": lambda: store.set(b"acs1-k", b"v", ttl=5),
        "get_many": lambda: store.get_many([b"acs1-a", b"acs1-b"]),
        "set_many": lambda: store.set_many([(b"acs1-a", b"v")], ttl=5),
        "delete": lambda: store.delete(b"acs1-k"),
        "delete_prefix": lambda: store.delete_prefix(b"acs1"),
        "scan": scan,
        "add": lambda: store.add(b"acs1-k", b"v", ttl=5),
        "acquire_lease": lambda: store.acquire_lease(b"acs1-lease", 5.0),
        "release_lease": lambda: store.release_lease(b"acs1-lease", b"token"),
    }


async def _assert_every_call_fails_closed(store: RedisBackend, port: int) -> None:
    for name, call in _cluster_calls(store).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises((BackendUnavailable, BackendTimeout)) as info:
                await call()
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], name
        rendered = f"{info.value} {info.value!r}"
        assert str(port) not in rendered and "127.0.0.1" not in rendered, name


async def test_unreachable_cluster_fails_closed_with_our_errors() -> None:
    port = servers.free_port()  # nothing listens there
    store = RedisBackend(f"redis+cluster://127.0.0.1:{port}", timeout=1.0)
    await _assert_every_call_fails_closed(store, port)
    await store.aclose()

    calls = 0

    async with CacheManager(default_backend=f"redis+cluster://127.0.0.1:{port}") as manager:
        lenient = manager.namespace("lenient", encrypt=False, fail_open=True)
        assert await lenient.get("k", default=MISSING) is MISSING
        strict = manager.namespace("strict", encrypt=False)
        with pytest.raises(BackendUnavailable) as info:
            await strict.get("k")
        assert str(port) not in str(info.value)

        @cached(namespace="memo", ttl=60, manager=manager)
        async def compute(x: int) -> int:
            nonlocal calls
            calls += 1
            return x * 2

        manager.namespace("memo", encrypt=False)
        assert await compute(21) == 42
        assert calls == 1


async def test_blackholed_cluster_discovery_stays_within_the_timeout(
    redis_cluster: list[int],
) -> None:
    async with FaultProxy(redis_cluster[0]) as proxy:
        proxy.blackhole = True
        store = RedisBackend(f"redis+cluster://127.0.0.1:{proxy.port}", timeout=0.3)
        started = time.monotonic()
        await _assert_every_call_fails_closed(store, proxy.port)
        # Ten calls, each bounded by its 0.3 s timeout: generous, not a speed claim.
        assert time.monotonic() - started < 10 * (0.3 + 1.0)
        proxy.blackhole = False
        assert await until_ok(store, b"acs1-none", None, limit=5.0) < 5.0  # type: ignore[arg-type]
        await store.aclose()


# -- lease ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["standalone", "cluster"])
async def test_lease_acquire_release_and_ownership(
    where: str, redis_url: str, redis_cluster_url: str
) -> None:
    store = RedisBackend(redis_url if where == "standalone" else redis_cluster_url)
    key = _unique() + b"lease"
    try:
        token = await store.acquire_lease(key, ttl=10)
        assert token is not None
        assert await store.acquire_lease(key, ttl=10) is None
        assert await store.release_lease(key, b"not-the-owner") is False
        assert await store.acquire_lease(key, ttl=10) is None  # still held
        assert await store.release_lease(key, token) is True
        assert await store.release_lease(key, token) is False
        async with store.lease(key, ttl=10) as held:
            assert held
            async with store.lease(key, ttl=10) as second:
                assert not second
        assert await store.get(key) is None
    finally:
        await store.delete(key)
        await store.aclose()


async def test_lease_expires_and_waiters_get_it(backend: RedisBackend) -> None:
    key = _unique() + b"lease"
    stale = await backend.acquire_lease(key, ttl=0.1)
    assert stale is not None
    fresh = await backend.acquire_lease(key, ttl=5, wait=2.0)  # after the first one expired
    assert fresh is not None and fresh != stale
    assert await backend.release_lease(key, stale) is False  # an expired owner cannot release
    assert await backend.get(key) == fresh

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        assert fresh is not None
        await backend.release_lease(key, fresh)

    releaser = asyncio.create_task(release_soon())
    async with backend.lease(key, ttl=5, wait=2.0) as held:
        assert held
    await releaser
    assert await backend.get(key) is None
