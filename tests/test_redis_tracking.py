"""The Redis invalidation channel (backends/redis/tracking.py) against real redis-server processes:
reports for writes, deletes, expiry and flushes by other clients; a killed connection, a silent
server and a restart take it down (everything dropped) and it comes back by itself."""

from __future__ import annotations

import asyncio
import logging
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio

from aiocache_secure import BackendUnavailable
from aiocache_secure.backends.redis.cluster_tracking import ClusterChannel, primaries_of
from aiocache_secure.backends.redis.resp3 import ProtocolError, read_frame
from aiocache_secure.backends.redis.tracking import ChannelOptions, InvalidationChannel

from . import servers
from .plugins.redis import TLS_PASSWORD, TLS_USER, TlsServer

pytestmark = pytest.mark.anyio
PREFIX = b"acs1trk:"
FAST_HEALTH = ChannelOptions(health_interval=0.2, health_timeout=0.3)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Reports:
    """What a channel reported, with a way to wait for the next matching report."""

    def __init__(self) -> None:
        self.seen: list[list[bytes] | None] = []
        self._changed = asyncio.Event()

    def __call__(self, keys: list[bytes] | None) -> None:
        self.seen.append(keys)
        self._changed.set()

    async def wait_for(
        self, match: Callable[[list[bytes] | None], bool], within: float = 5.0
    ) -> None:
        async with asyncio.timeout(within):
            while not any(match(report) for report in self.seen):
                self._changed.clear()
                await self._changed.wait()

    def keys(self) -> set[bytes]:
        return {key for report in self.seen if report for key in report}


def _address(url: str) -> tuple[str, int]:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    conn = redis.asyncio.Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[tuple[InvalidationChannel, Reports]]:
    reports = Reports()
    host, port = _address(redis_url)
    chan = InvalidationChannel(reports, host=host, port=port, options=FAST_HEALTH)
    await chan.add_prefix(PREFIX)
    yield chan, reports
    await chan.aclose()


async def _channel_client_id(client: redis.asyncio.Redis) -> int:
    for info in await client.client_list():
        if info.get("name") == "acs-invalidate":
            return int(info["id"])
    raise AssertionError("no invalidation connection")


async def test_changes_by_other_clients_are_reported(
    channel: tuple[InvalidationChannel, Reports], client: redis.asyncio.Redis
) -> None:
    chan, reports = channel
    assert chan.ready and chan.tracks(PREFIX)
    await client.set(PREFIX + b"a", b"1")
    await client.set(b"acs1other:a", b"1")  # not under the prefix
    await client.delete(PREFIX + b"b")  # deleting nothing changes nothing
    await client.set(PREFIX + b"b", b"1")
    await client.delete(PREFIX + b"b")
    await reports.wait_for(lambda r: r is not None and PREFIX + b"b" in r)
    assert PREFIX + b"a" in reports.keys()
    assert b"acs1other:a" not in reports.keys()
    count = len(reports.seen)
    await client.set(PREFIX + b"gone", b"1", px=50)
    await asyncio.sleep(0.15)
    assert await client.get(PREFIX + b"gone") is None  # expired (reported on expiry)
    await reports.wait_for(
        lambda r: r is not None and PREFIX + b"gone" in r and len(reports.seen) > count + 1
    )
    await client.flushdb()
    await reports.wait_for(lambda r: r is None)
    assert chan.ready  # a flush is a report, not an outage
    assert chan.epoch == 0


async def test_killed_connection_drops_everything_and_comes_back(
    channel: tuple[InvalidationChannel, Reports], client: redis.asyncio.Redis
) -> None:
    chan, reports = channel
    await client.client_kill_filter(_id=await _channel_client_id(client))
    await reports.wait_for(lambda r: r is None)
    assert chan.epoch == 1
    await chan.add_prefix(PREFIX)  # waits until tracked again
    reports.seen.clear()
    await client.set(PREFIX + b"after", b"1")
    await reports.wait_for(lambda r: r is not None and PREFIX + b"after" in r)


async def test_silent_server_is_found_by_the_health_check(
    channel: tuple[InvalidationChannel, Reports], client: redis.asyncio.Redis
) -> None:
    chan, reports = channel
    started = time.monotonic()
    await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    await reports.wait_for(lambda r: r is None, within=3)
    assert time.monotonic() - started < chan.health_bound + 0.5
    assert not chan.ready and chan.epoch == 1
    await chan.add_prefix(PREFIX)  # waits until tracked again


async def test_server_restart(tmp_path: Path) -> None:
    reports = Reports()
    port = servers.free_port()
    with servers.redis_server(tmp_path / "a", port=port):
        chan = InvalidationChannel(reports, port=port, options=FAST_HEALTH)
        try:
            await chan.add_prefix(PREFIX)
            assert chan.ready
            stopped = True
        except BaseException:
            await chan.aclose()
            raise
    assert stopped
    try:
        await reports.wait_for(lambda r: r is None)
        assert not chan.ready
        with servers.redis_server(tmp_path / "b", port=port):
            await chan.add_prefix(PREFIX)  # waits until tracked again
            writer = redis.asyncio.Redis(port=port)
            await writer.set(PREFIX + b"x", b"1")
            await reports.wait_for(lambda r: r is not None and PREFIX + b"x" in r)
            await writer.aclose()
    finally:
        await chan.aclose()


async def test_prefixes_added_later_are_tracked(
    channel: tuple[InvalidationChannel, Reports], client: redis.asyncio.Redis
) -> None:
    chan, reports = channel
    second = b"acs1two:"
    await chan.add_prefix(second)
    assert chan.tracks(second) and chan.tracks(PREFIX)
    await chan.add_prefix(second)  # again: nothing changes
    await client.set(second + b"k", b"1")
    await reports.wait_for(lambda r: r is not None and second + b"k" in r)
    assert chan.epoch == 0
    with pytest.raises(ValueError, match="overlap"):
        await chan.add_prefix(b"acs1two:sub")
    with pytest.raises(ValueError, match="overlap"):
        await chan.add_prefix(b"acs1")


async def test_tls_with_an_acl_user(redis_tls_server: TlsServer) -> None:
    files = redis_tls_server.files
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))
    reports = Reports()
    chan = InvalidationChannel(
        reports,
        port=redis_tls_server.port,
        options=ChannelOptions(ssl_context=context, username=TLS_USER, password=TLS_PASSWORD),
    )
    try:
        await chan.add_prefix(PREFIX)
        assert TLS_PASSWORD not in repr(chan)
        with redis_tls_server.admin() as admin:
            admin.set(PREFIX + b"tls", b"1")
        await reports.wait_for(lambda r: r is not None and PREFIX + b"tls" in r)
    finally:
        await chan.aclose()


async def test_wrong_password_is_unavailable_not_a_hang(
    redis_tls_server: TlsServer, caplog: pytest.LogCaptureFixture
) -> None:
    files = redis_tls_server.files
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))
    chan = InvalidationChannel(
        Reports(),
        port=redis_tls_server.port,
        options=ChannelOptions(
            ssl_context=context, username=TLS_USER, password="wrong-secret-Qx", connect_timeout=0.5
        ),
    )
    caplog.set_level(logging.DEBUG, logger="aiocache_secure")
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await chan.add_prefix(PREFIX)
        assert "wrong-secret-Qx" not in str(caught.value)
        assert not chan.ready
    finally:
        await chan.aclose()
    assert "wrong-secret-Qx" not in caplog.text


async def test_unreachable_server() -> None:
    chan = InvalidationChannel(
        Reports(), port=servers.free_port(), options=ChannelOptions(connect_timeout=0.3)
    )
    try:
        with pytest.raises(BackendUnavailable):
            await chan.add_prefix(PREFIX)
    finally:
        await chan.aclose()
    with pytest.raises(BackendUnavailable):
        await chan.add_prefix(PREFIX)  # closed


@pytest.mark.parametrize(
    "kwargs",
    [{"connect_timeout": 0}, {"health_interval": -1}, {"health_timeout": True}],
)
def test_bad_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        ChannelOptions(**kwargs)  # type: ignore[arg-type]


def test_bad_channel_arguments() -> None:
    with pytest.raises(TypeError):
        InvalidationChannel(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        InvalidationChannel(Reports(), options={"connect_timeout": 1})  # type: ignore[arg-type]
    options = ChannelOptions(username="cache-user", password="s3cret-Qx")
    assert "s3cret" not in repr(options) and "cache-user" not in repr(options)


async def test_bad_prefixes() -> None:
    chan = InvalidationChannel(Reports(), port=servers.free_port())
    for bad in (b"", "acs1", None):
        with pytest.raises(TypeError):
            await chan.add_prefix(bad)  # type: ignore[arg-type]
    await chan.aclose()


@pytest.mark.parametrize(
    "wire",
    [b"?junk\r\n", b"$99999999999\r\n", b"*99999999999\r\n", b"$5\r\nab"],
)
async def test_malformed_frames_are_refused(wire: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    with pytest.raises(Exception) as caught:
        await read_frame(reader)
    assert not isinstance(caught.value, AssertionError)


async def test_report_delay_on_loopback(
    channel: tuple[InvalidationChannel, Reports], client: redis.asyncio.Redis
) -> None:
    """The delay from a write returning to its report arriving (the near cache's bound)."""
    chan, reports = channel
    delays = []
    for i in range(200):
        key = PREFIX + b"d%d" % i
        await client.set(key, b"1")
        returned = time.perf_counter()
        await reports.wait_for(lambda r, key=key: r is not None and key in r)  # type: ignore[misc]
        delays.append(time.perf_counter() - returned)
    p50, p99 = statistics.median(delays), statistics.quantiles(delays, n=100)[98]
    print(f"report delay p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")
    assert p99 < 0.05, f"p99 report delay {p99 * 1000:.2f} ms"


@pytest.mark.parametrize(
    "reply", [None, [], [[0, 16383]], [[0, 16383, ["h", 1]]], [[0, 16383, [b"h", b"1"]]]]
)
def test_malformed_cluster_slots_are_refused(reply: object) -> None:
    with pytest.raises(ProtocolError):
        primaries_of(reply)


def test_cluster_slotsprimaries_of() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [5461, 10922, [b"127.0.0.1", 7001, b"id1"]],
        [10923, 16383, [b"127.0.0.1", 7000, b"id0"]],
    ]
    assert primaries_of(reply) == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"seeds": []}, ValueError),
        ({"topology_interval": 0}, ValueError),
        ({"options": {"health_interval": 1}}, TypeError),
        ({"on_invalidate": 3}, TypeError),
    ],
)
def test_cluster_channel_bad_options(kwargs: dict[str, object], error: type[Exception]) -> None:
    options: dict[str, object] = {"on_invalidate": Reports(), "seeds": [("127.0.0.1", 1)]}
    options.update(kwargs)
    with pytest.raises(error):
        ClusterChannel(**options)  # type: ignore[arg-type]


async def test_cluster_channel_with_no_node_answering() -> None:
    chan = ClusterChannel(
        Reports(),
        seeds=[("127.0.0.1", servers.free_port())],
        options=ChannelOptions(connect_timeout=0.3),
    )
    try:
        with pytest.raises(BackendUnavailable):
            await chan.add_prefix(PREFIX)
        assert not chan.ready and not chan.tracks(PREFIX)
    finally:
        await chan.aclose()
