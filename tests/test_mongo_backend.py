"""The MongoDB backend beyond the contract suite: storage layout, tampering, transport security,
credentials, failures and recovery. Runs against the server of ``tests/plugins/mongo.py``."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient

from aiocache_secure import (
    MISSING,
    BackendError,
    BackendUnavailable,
    CacheManager,
    ConfigurationError,
    IntegrityError,
    Keyring,
    ManualClock,
)
from aiocache_secure.backends import open_backend
from aiocache_secure.backends.mongo import (
    MongoBackend,
    decode_key,
    encode_key,
    from_url,
    id_range,
)
from tests import servers
from tests.plugins.mongo import TEST_DATABASE, nx_server, with_path
from tests.proxy import until_written

pytestmark = pytest.mark.anyio

Docs = Any  # a pymongo Collection of the test database
SECRET = "s3cretPW-do-not-leak"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def docs(mongo_admin: MongoClient[dict[str, Any]], mongo_collection: str) -> Docs:
    return mongo_admin[TEST_DATABASE][mongo_collection]


@pytest.fixture
async def backend(mongo_url: str) -> AsyncIterator[MongoBackend]:
    store = MongoBackend(mongo_url)
    yield store
    await store.aclose()


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=ManualClock()) as mgr:
        yield mgr


# PyMongo's server monitor leaks the socket of a connection attempt that ``close()`` cancels (it
# closes sockets on OSError only), which happens when a client closes while its server is down.
# Tests that do that ignore the resulting warning and collect the socket before they end, so it
# cannot surface in a later test.
SOCKET_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:unclosed <socket.socket:ResourceWarning",
)


async def settle() -> None:
    await anyio.sleep(0.05)
    gc.collect()


def closed_port() -> int:
    return servers.free_port()  # nothing listens there


# -- storage layout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"", b"acs1abc:0f", b"%", b"%25", b"a b/c", b"\x00", b"\xff\xff", "ключ".encode(), b"~!=:"],
)
def test_key_encoding_round_trips_and_is_canonical(key: bytes) -> None:
    doc_id = encode_key(key)
    assert doc_id.isascii() and doc_id.isprintable()
    assert decode_key(doc_id) == key


@given(st.binary(max_size=40), st.binary(max_size=6))
def test_key_encoding_is_a_prefix_code(key: bytes, prefix: bytes) -> None:
    # What delete_prefix and scan rely on: a key is in the id range of a prefix iff it starts
    # with that prefix.
    doc_id, bounds = encode_key(key), id_range(prefix)
    inside = bounds["$gte"] <= doc_id and ("$lt" not in bounds or doc_id < bounds["$lt"])
    assert inside == key.startswith(prefix)
    assert decode_key(doc_id) == key
    assert doc_id == quote_from_bytes(key, safe="_.~:=!-")


def test_key_encoding_keeps_package_keys_readable_and_rejects_planted_spellings() -> None:
    assert (
        encode_key(b"acs1" + b"0f" * 16 + b":" + b"ab" * 24) == "acs1" + "0f" * 16 + ":" + "ab" * 24
    )
    assert decode_key("%61bc") is None  # "abc", non-canonically spelled
    assert decode_key(b"abc") is None
    assert id_range(b"p\xff") == {"$gte": "p%FF", "$lt": "p%FG"}


async def test_document_layout_and_ttl_index(
    backend: MongoBackend, docs: Docs, mongo_url: str
) -> None:
    def ttl_indexes() -> list[dict[str, Any]]:
        return [i for i in docs.index_information().values() if i["key"] == [("exp", 1)]]

    assert ttl_indexes() == []  # constructing the backend did no I/O
    before = datetime.now(UTC).replace(tzinfo=None)
    await backend.set(b"k\x00\xff", b"\x00value\xff", ttl=100)
    await backend.set(b"forever", b"v", ttl=None)
    doc = docs.find_one({"_id": "k%00%FF"})
    assert doc is not None and doc["v"] == b"\x00value\xff"
    assert timedelta(seconds=99) < doc["exp"] - before < timedelta(seconds=101)
    assert docs.find_one({"_id": "forever"})["exp"] is None
    # Named TTL_INDEX on MongoDB; nx-27017 picks its own index names.
    (index,) = ttl_indexes()
    assert index["expireAfterSeconds"] == 0
    again = MongoBackend(mongo_url)
    await again.set(b"x", b"y", ttl=1)  # creating the index again is a no-op
    await again.aclose()
    assert len(ttl_indexes()) == 1


async def test_overwrite_with_ttl_keeps_expiry(mongo_url: str, docs: Docs) -> None:
    clock = ManualClock(time.time() + 3600)
    store = MongoBackend(mongo_url, clock=clock)
    try:
        for value in (b"1", b"2", b"3"):
            await store.set(b"k", value, ttl=10)
            await store.set_many([(b"m", value)], ttl=10)
        assert await store.get_many([b"k", b"m"]) == [b"3", b"3"]
        clock.advance(11)
        assert await store.get_many([b"k", b"m"]) == [None, None]
    finally:
        await store.aclose()


async def test_overwrite_batches_and_delete(backend: MongoBackend, docs: Docs) -> None:
    await backend.set(b"a", b"1", ttl=None)
    await backend.set(b"a", b"2", ttl=None)
    await backend.set_many([(b"b", b"x"), (b"c", b"3"), (b"b", b"4")], ttl=50)
    assert docs.count_documents({}) == 3
    assert await backend.get_many([b"c", b"zz", b"a", b"b", b"a"]) == [b"3", None, b"2", b"4", b"2"]
    assert await backend.delete(b"a") is True
    assert await backend.delete(b"a") is False
    assert await backend.get(b"a") is None


async def test_concurrent_upserts_of_one_new_key(backend: MongoBackend) -> None:
    await asyncio.gather(*(backend.set(b"race", b"%d" % i, ttl=None) for i in range(20)))
    assert (await backend.get(b"race") or b"").isdigit()


async def test_expiry_enforced_on_read_before_the_ttl_monitor(mongo_url: str, docs: Docs) -> None:
    # The backend's clock runs ahead of the server's, so the server keeps what reads must drop.
    clock = ManualClock(time.time() + 3600)
    store = MongoBackend(mongo_url, clock=clock)
    try:
        await store.set_many([(b"a", b"1"), (b"b", b"2")], ttl=10)
        await store.set(b"c", b"3", ttl=None)
        clock.advance(11)
        assert docs.count_documents({}) == 3
        assert await store.get(b"a") is None
        assert await store.get_many([b"a", b"b", b"c"]) == [None, None, b"3"]
        assert [item async for item in store.scan(b"")] == [(b"c", b"3")]
    finally:
        await store.aclose()


async def test_delete_prefix_is_exact_with_0xff_bytes(backend: MongoBackend) -> None:
    keys = [b"p", b"p\xfe\xff", b"p\xff", b"p\xff\x00", b"p\xff\xff", b"p\xff\xffz", b"q", b"o\xff"]
    await backend.set_many([(k, k) for k in keys], ttl=None)
    assert await backend.delete_prefix(b"p\xff\xff") == 2
    assert await backend.get_many(keys) == [k if k[:3] != b"p\xff\xff" else None for k in keys]
    assert await backend.delete_prefix(b"p\xff") == 2
    left = dict([item async for item in backend.scan(b"")])
    assert sorted(left) == sorted([b"p", b"p\xfe\xff", b"q", b"o\xff"])
    assert await backend.delete_prefix(b"zz") == 0


async def test_scan_streams_in_batches_and_stops_early(mongo_url: str) -> None:
    store = MongoBackend(mongo_url, batch_size=4)
    try:
        await store.set_many([(b"s%02d" % i, b"%d" % i) for i in range(25)], ttl=None)
        await store.set(b"t00", b"other", ttl=None)
        seen = [item async for item in store.scan(b"s")]
        assert sorted(seen) == [(b"s%02d" % i, b"%d" % i) for i in range(25)]
        async for key, _ in store.scan(b"s"):
            assert key.startswith(b"s")
            break
        assert await store.get(b"t00") == b"other"
    finally:
        await store.aclose()


async def test_namespaces_on_one_collection_clear_independently(
    manager: CacheManager, mongo_url: str, docs: Docs
) -> None:
    one = manager.namespace("one", backend=mongo_url)
    two = manager.namespace("two", backend=mongo_url, hash_keys=False)
    await one.set_many({f"k{i}": i for i in range(5)})
    await two.set_many({f"k{i}": i for i in range(3)})
    assert docs.count_documents({}) == 8
    assert await one.clear() == 5
    assert await two.get_many(["k0", "k1", "k2"]) == [0, 1, 2]
    assert {k: v async for k, v in two.items()} == {"k0": 0, "k1": 1, "k2": 2}


# -- tampering with the documents ----------------------------------------------------------------


async def _two_entries(manager: CacheManager, url: str, docs: Docs, **policy: Any) -> Any:
    ns = manager.namespace("secret", backend=url, **policy)
    await ns.set("alice", {"plan": "pro"})
    await ns.set("bob", {"plan": "free"})
    assert docs.count_documents({}) == 2
    return ns


@pytest.mark.parametrize("edit", ["flip", "truncate", "not_binary", "empty"])
async def test_edited_value_is_a_tampered_miss(
    manager: CacheManager, mongo_url: str, docs: Docs, edit: str, audit_records: Callable[..., Any]
) -> None:
    ns = await _two_entries(manager, mongo_url, docs)
    for doc in docs.find({}):
        v = bytearray(doc["v"])
        changed: object = {
            "flip": bytes(v[:-1] + bytes([v[-1] ^ 1])),
            "truncate": bytes(v[: len(v) // 2]),
            "not_binary": "a string",
            "empty": b"",
        }[edit]
        docs.update_one({"_id": doc["_id"]}, {"$set": {"v": changed}})
    assert await ns.get_many(["alice", "bob"], default=MISSING) == [MISSING, MISSING]
    assert ns.stats.tampered == 2
    assert docs.count_documents({}) == 0  # tampered entries are deleted
    assert sum(r.getMessage().startswith("tamper_detected") for r in audit_records()) == 2


async def test_swapped_values_never_serve_another_entry(
    manager: CacheManager, mongo_url: str, docs: Docs
) -> None:
    ns = await _two_entries(manager, mongo_url, docs)
    first, second = list(docs.find({}))
    docs.update_one({"_id": first["_id"]}, {"$set": {"v": second["v"]}})
    docs.update_one({"_id": second["_id"]}, {"$set": {"v": first["v"]}})
    assert await ns.get("alice", MISSING) is MISSING
    assert await ns.get("bob", MISSING) is MISSING
    assert ns.stats.tampered == 2


async def test_swap_under_strict_raises(mongo_url: str, docs: Docs) -> None:
    async with CacheManager(keyring=Keyring.generate(), strict=True) as mgr:
        ns = await _two_entries(mgr, mongo_url, docs)
        first, second = list(docs.find({}))
        docs.update_one({"_id": first["_id"]}, {"$set": {"v": second["v"]}})
        with pytest.raises(IntegrityError):
            await ns.get_many(["alice", "bob"])
        assert ns.stats.tampered == 1


async def test_extending_exp_does_not_revive_an_expired_entry(mongo_url: str, docs: Docs) -> None:
    clock = ManualClock(time.time())
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        ns = mgr.namespace("short", backend=mongo_url)
        await ns.set("k", "v", ttl=5)
        clock.advance(60)
        far = datetime.now(UTC) + timedelta(days=365)
        assert docs.update_many({}, {"$set": {"exp": far}}).modified_count == 1
        assert await ns.get("k", MISSING) is MISSING
        assert ns.stats.tampered == 1  # replayed well past its sealed expiry
        assert docs.count_documents({}) == 0


async def test_planted_documents_do_not_delete_genuine_entries(
    manager: CacheManager, mongo_url: str, docs: Docs
) -> None:
    ns = manager.namespace("exported", backend=mongo_url, hash_keys=False)
    await ns.set("a", 1)
    genuine = docs.find_one({})
    assert genuine is not None
    # Same storage key, spelled non-canonically, holding garbage.
    planted = genuine["_id"][:-1] + "%61"
    assert genuine["_id"].endswith("a")
    docs.insert_one({"_id": planted, "v": b"garbage", "exp": None})
    assert {k: v async for k, v in ns.items()} == {"a": 1}
    assert await ns.get("a") == 1


# -- transport security and credentials ----------------------------------------------------------


def _insecure_reasons(records: list[logging.LogRecord]) -> list[str]:
    return [
        r.audit["reason"]  # type: ignore[attr-defined]
        for r in records
        if r.getMessage().startswith("insecure_config")
    ]


@pytest.mark.parametrize(
    ("url", "options", "reason"),
    [
        ("mongodb://127.0.0.1/?tls=true&tlsInsecure=true", {}, "tlsinsecure"),
        (
            "mongodb://127.0.0.1/?tls=true&tlsAllowInvalidCertificates=true",
            {},
            "tlsallowinvalidcertificates",
        ),
        (
            "mongodb://127.0.0.1/?tls=true",
            {"tls_allow_invalid_certificates": True},
            "tlsallowinvalidcertificates",
        ),
        ("mongodb://127.0.0.1/?tls=true", {"tls_insecure": True}, "tlsinsecure"),
        ("mongodb://db.example.com:27017/cache", {}, "plaintext_to_remote_host"),
        ("mongodb://127.0.0.1,db.example.com/cache", {}, "plaintext_to_remote_host"),
        ("mongodb://db.example.com/?tls=false", {"tls": False}, "plaintext_to_remote_host"),
        ("mongodb://127.0.0.1.nip.io/", {}, "plaintext_to_remote_host"),
        ("mongodb://10.0.0.5/", {}, "plaintext_to_remote_host"),
        (
            "mongodb://localhost/?tls=true",
            {"tls_allow_invalid_hostnames": True},
            "tlsallowinvalidhostnames",
        ),
    ],
)
async def test_insecure_transport_is_audited_or_refused(
    url: str, options: dict[str, Any], reason: str, audit_records: Callable[..., Any]
) -> None:
    store = MongoBackend(url, **options)
    await store.aclose()
    assert reason in _insecure_reasons(audit_records())
    with pytest.raises(ConfigurationError, match="strict"):
        MongoBackend(url, strict=True, **options)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://127.0.0.1:1/",
        "mongodb://localhost/db",
        "mongodb://[::1]:27017/db",
        "mongodb://127.0.0.2/db",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock/db",
        "mongodb://db.example.com/?tls=true",
        "mongodb+srv://cluster.example.com/db",
    ],
)
async def test_secure_transport_is_quiet(url: str, audit_records: Callable[..., Any]) -> None:
    store = MongoBackend(url, strict=True)  # strict: anything insecure would raise
    await store.aclose()
    assert _insecure_reasons(audit_records()) == []


async def test_manager_strict_refuses_plaintext_remote() -> None:
    async with CacheManager(keyring=Keyring.generate(), strict=True) as mgr:
        with pytest.raises(ConfigurationError):
            mgr.namespace("x", backend="mongodb://db.example.com/")


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


@SOCKET_LEAK
async def test_credentials_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"mongodb://alice:{SECRET}@127.0.0.1:{closed_port()}/cache?authSource=admin"
    store = MongoBackend(url, server_selection_timeout=0.3, username="bob", password=SECRET)
    assert SECRET not in repr(store) and SECRET not in str(store)
    for call in (store.get(b"k"), store.set(b"k", b"v", ttl=None), store.delete_prefix(b"")):
        with pytest.raises(BackendUnavailable) as info:
            await call
        assert SECRET not in _all_text(info.value)
        assert "alice" not in str(info.value) and "127.0.0.1" not in str(info.value)
    await store.aclose()
    for bad in (
        f"mongodb://alice:{SECRET}@127.0.0.1/bad db",
        f"mongodb://alice:{SECRET}@host/?notAnOption=1",
        f"mongodb://alice:{SECRET}@h/o/st",
        f"mongodb://alice:{SECRET}@127.0.0.1:99999/",
    ):
        with pytest.raises(ConfigurationError) as bad_info:
            MongoBackend(bad)
        assert SECRET not in _all_text(bad_info.value)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    await settle()


# -- failures, recovery, lifecycle ---------------------------------------------------------------


@SOCKET_LEAK
async def test_unreachable_server_fails_fast() -> None:
    store = MongoBackend(f"mongodb://127.0.0.1:{closed_port()}/", server_selection_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="mongodb"):
        await store.get(b"k")
    assert time.monotonic() - started < 3  # a hang would be the bug, not a slow machine
    await store.aclose()
    await settle()


@SOCKET_LEAK
async def test_recovers_after_server_restart(tmp_path: Path) -> None:
    port = servers.free_port()
    server = nx_server(tmp_path, port)
    await anyio.to_thread.run_sync(server.__enter__)
    store = MongoBackend(f"mongodb://127.0.0.1:{port}/db", server_selection_timeout=0.5)
    try:
        await store.set(b"k", b"v", ttl=None)
        assert await store.get(b"k") == b"v"
        await anyio.to_thread.run_sync(server.__exit__, None, None, None)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(BackendError):
                await store.get(b"k")
            assert time.monotonic() - started < 3
        server = nx_server(tmp_path, port)
        await anyio.to_thread.run_sync(server.__enter__)
        assert await until_written(store, b"k", b"again", limit=5.0) < 5.0
        assert await store.get(b"k") == b"again"
    finally:
        await store.aclose()
        await anyio.to_thread.run_sync(server.__exit__, None, None, None)
        await settle()


async def test_owned_client_closed_user_client_not(mongo_server: str, mongo_url: str) -> None:
    store = MongoBackend(mongo_url)
    await store.set(b"k", b"v", ttl=None)
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(BackendUnavailable):
        await store.get(b"k")

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(with_path(mongo_server, ""))
    try:
        mine = MongoBackend(client=client, database=TEST_DATABASE, collection="owned_check")
        await mine.set(b"k", b"v", ttl=None)
        await mine.aclose()
        assert await client.admin.command("ping")  # still usable: the caller owns it
        await client[TEST_DATABASE].drop_collection("owned_check")
    finally:
        await client.close()


async def test_value_too_large_for_a_document(backend: MongoBackend) -> None:
    from aiocache_secure import ValueTooLarge

    with pytest.raises(ValueTooLarge):
        await backend.set(b"big", b"x" * (17 * 1024 * 1024), ttl=None)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"client": object()}, ConfigurationError),
        ((), {"client": MongoClient}, TypeError),
        (("redis://127.0.0.1/",), {}, ConfigurationError),
        ((42,), {}, TypeError),
        (("mongodb://127.0.0.1/",), {"collection": "system.users"}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"collection": "a$b"}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"database": "a.b"}, ConfigurationError),
        (("mongodb://127.0.0.1/d.c",), {"collection": "other"}, ConfigurationError),
        (("mongodb://127.0.0.1/d",), {"database": "other"}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"server_selection_timeout": 0}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"socket_timeout": float("nan")}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"batch_size": 0}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"auth_mechanism": "PLAIN"}, ConfigurationError),
        (("mongodb://127.0.0.1/",), {"tls_insecure": "yes"}, TypeError),
    ],
)
def test_bad_configuration(args: tuple[Any, ...], kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        MongoBackend(*args, **kwargs)


async def test_url_names_database_and_collection(mongo_server: str) -> None:
    store = MongoBackend(with_path(mongo_server, "cachedb.entries"))
    assert "database='cachedb'" in repr(store) and "collection='entries'" in repr(store)
    await store.aclose()
    default = MongoBackend(with_path(mongo_server, ""))
    assert "database='aiocache_secure'" in repr(default)
    await default.aclose()


def test_factory_rejects_quotas_and_ignores_the_manager_clock() -> None:
    with pytest.raises(ConfigurationError):
        from_url(
            "mongodb://127.0.0.1/",
            clock=ManualClock(),
            strict=False,
            max_entries=10,
            max_bytes=None,
            on_evict=None,
        )
    store = open_backend("MONGODB://127.0.0.1/", clock=ManualClock(), strict=False)
    assert isinstance(store, MongoBackend)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_clear_error(mongo_url: str) -> None:
    with pytest.raises(ConfigurationError, match="needs asyncio"):
        MongoBackend(mongo_url)
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        with pytest.raises(ConfigurationError, match="needs asyncio"):
            mgr.namespace("n", backend=mongo_url)
