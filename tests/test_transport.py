"""The one insecure-transport rule (backends/_transport.py), and its three users agreeing on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from aiocache_secure.backends._transport import (
    host_of,
    insecure_transport,
    is_loopback,
    plaintext_to_remote,
)
from aiocache_secure.errors import ConfigurationError
from aiocache_secure.lint import check_config

pytest.importorskip("redis")
pytest.importorskip("pymongo")

from aiocache_secure.backends.mongo import MongoBackend  # noqa: E402
from aiocache_secure.backends.redis import RedisBackend  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the redis and mongodb drivers need asyncio


LOOPBACK = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "[::ffff:127.1.2.3]",
    "localhost",
    "LocalHost",
    "/tmp/mongodb-27017.sock",
    "/run/redis/redis.sock",
]
NOT_LOOPBACK = [
    "",
    "10.0.0.5",
    "192.0.2.1",
    "0.0.0.0",  # noqa: S104 - a host name under test, nothing binds to it
    "::",
    "[::]",
    "::ffff:10.0.0.1",
    "2001:db8::1",
    "[2001:db8::1]",
    "128.0.0.1",
    "ip6-localhost",
    "ip6-loopback",
    "localhost.localdomain",
    "localhost.",
    "db.localhost",
    "localhost.example.com",
    "localhost-db",
    "localhostx",
    "127.0.0.1.nip.io",
    "127.attacker.example",
    "[127.0.0.1]",
    "[localhost]",
    "[::1",
    "::1]",
    "/tmp/redis.socket",
    "/",
    "relative.sock",
    "db.example.com",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host) is True


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_hosts_that_could_leave_the_machine_are_not_loopback(host: str) -> None:
    assert is_loopback(host) is False


@pytest.mark.parametrize(
    ("node", "host"),
    [
        ("127.0.0.1:6379", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:6379", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("localhost:1", "localhost"),
        ("", ""),
        ("[::1", "[::1"),
    ],
)
def test_host_of(node: str, host: str) -> None:
    assert host_of(node) == host


def test_plaintext_to_remote() -> None:
    assert plaintext_to_remote(["127.0.0.1", "::1"], tls=False) is False
    assert plaintext_to_remote(["127.0.0.1", "db.example.com"], tls=False) is True
    assert plaintext_to_remote(["db.example.com"], tls=True) is False
    assert plaintext_to_remote([], tls=False) is False


def test_insecure_transport_audits_or_refuses(
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    insecure_transport("redis", "plaintext_to_remote_host", strict=False)
    events = [r.audit for r in audit_records()]  # type: ignore[attr-defined]
    assert [(e["event"], e["backend"], e["reason"]) for e in events] == [
        ("insecure_config", "redis", "plaintext_to_remote_host")
    ]
    with pytest.raises(ConfigurationError, match=r"insecure mongodb transport .*strict"):
        insecure_transport("mongodb", "tlsinsecure", strict=True)
    assert len(audit_records()) == 1


@pytest.mark.parametrize("bad", [None, 1, b"127.0.0.1"])
def test_is_loopback_bad_input(bad: object) -> None:
    with pytest.raises(TypeError):
        is_loopback(bad)  # type: ignore[arg-type]


# -- the users of the rule agree --------------------------------------------------------------


def _reasons(records: list[logging.LogRecord]) -> list[str]:
    return [
        r.audit["reason"]  # type: ignore[attr-defined]
        for r in records
        if r.getMessage().startswith("insecure_config")
    ]


@pytest.mark.parametrize(
    "host", ["ip6-localhost", "localhost.localdomain", "localhost.example.com", "[::ffff:10.0.0.1]"]
)
def test_redis_and_mongo_and_lint_agree_on_remote_hosts(
    host: str, tmp_path: Path, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    with pytest.raises(ConfigurationError, match="strict"):
        RedisBackend(f"redis://{host}:6379/0", strict=True)
    with pytest.raises(ConfigurationError, match="strict"):
        MongoBackend(f"mongodb://{host}:27017/db", strict=True)
    RedisBackend(f"redis://{host}:6379/0")
    assert _reasons(audit_records()) == ["plaintext_to_remote_host"]
    for url in (f"redis://{host}:6379/0", f"mongodb://{host}:27017/db"):
        assert _lint_says_plaintext_remote(tmp_path, url)


@pytest.mark.parametrize("host", ["127.0.0.9", "[::1]", "localhost", "LOCALHOST"])
async def test_redis_and_mongo_and_lint_agree_on_loopback(
    host: str, tmp_path: Path, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    redis_store = RedisBackend(f"redis://{host}:6379/0", strict=True)
    mongo_store = MongoBackend(f"mongodb://{host}:27017/db", strict=True)
    await redis_store.aclose()
    await mongo_store.aclose()
    assert _reasons(audit_records()) == []
    for url in (f"redis://{host}:6379/0", f"redis://{host}/0", f"mongodb://{host}:27017/db"):
        assert not _lint_says_plaintext_remote(tmp_path, url)


async def test_unix_sockets_are_loopback_for_mongo_and_lint(tmp_path: Path) -> None:
    url = "mongodb://%2Ftmp%2Fmongodb-27017.sock/db"
    store = MongoBackend(url, strict=True)
    await store.aclose()
    assert not _lint_says_plaintext_remote(tmp_path, url)


def test_lint_checks_sentinel_urls(tmp_path: Path) -> None:
    assert _lint_says_plaintext_remote(tmp_path, "redis+sentinel://10.0.0.1:26379/mymaster/0")
    assert not _lint_says_plaintext_remote(
        tmp_path, "redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster/0"
    )
    with pytest.raises(ConfigurationError, match="strict"):
        RedisBackend("redis+sentinel://10.0.0.1:26379/mymaster/0", strict=True)


def test_lint_checks_every_cluster_node(tmp_path: Path) -> None:
    assert _lint_says_plaintext_remote(tmp_path, "redis+cluster://127.0.0.1:7000,10.0.0.2:7000")
    assert not _lint_says_plaintext_remote(tmp_path, "redis+cluster://127.0.0.1:7000,[::1]:7001")


def _lint_says_plaintext_remote(tmp_path: Path, url: str) -> bool:
    config = tmp_path / "c.toml"
    config.write_text(f'[namespaces.a]\nbackend = "{url}"\nmax_value_bytes = 10\n')
    messages = [f.message for f in check_config(config)]
    assert not any("cannot be parsed" in m for m in messages), messages
    return any("non-loopback host" in m for m in messages)


@pytest.mark.parametrize("scheme", ["redis+sentinel", "rediss+sentinel"])
def test_lint_treats_sentinel_stores_as_shared(tmp_path: Path, scheme: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[namespaces.a]\nbackend = "{scheme}://127.0.0.1:26379/mymaster/0"\n'
        "max_value_bytes = 10\nencrypt = false\nhash_keys = false\n"
    )
    messages = [f.message for f in check_config(config)]
    assert any("encrypt = false on a store shared" in m for m in messages), messages
    assert any("hash_keys = false" in m for m in messages), messages
    assert any("no key source, but shared backends" in m for m in messages), messages
