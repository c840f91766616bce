"""An attacker who can write to the store: every manipulation of an encrypted entry is a miss
(IntegrityError under strict), deletes the entry, counts in ``stats.tampered`` and raises one
``tamper_detected`` audit event — never another entry's value, never code execution."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

import pytest

from aiocache_secure import MISSING, Cache, CacheManager, IntegrityError, ManualClock
from aiocache_secure.backend import Backend

pytestmark = pytest.mark.anyio

ENCRYPTED = ("encrypted", "encrypted-unhashed")


async def stored(store: Backend, cache: Cache) -> dict[bytes, bytes]:
    prefix = cache._prefix  # noqa: SLF001 - the test plays the attacker with raw store access
    return {k: v async for k, v in store.scan(prefix)}


@pytest.fixture
def enc_ns(make_ns: Callable[..., Cache], stack_name: str) -> Cache:
    if stack_name not in ENCRYPTED:
        return make_ns("victim", encrypt=True)
    return make_ns("victim")


async def expect_tampered(
    cache: Cache, key: str, records: Callable[[], list[logging.LogRecord]]
) -> None:
    before = cache.stats.tampered
    events_before = len([r for r in records() if r.getMessage().startswith("tamper_detected")])
    assert await cache.get(key, MISSING) is MISSING
    assert cache.stats.tampered == before + 1
    events = [r for r in records() if r.getMessage().startswith("tamper_detected")]
    assert len(events) == events_before + 1
    # The bad entry is gone: a second read is a plain miss, not another tamper event.
    assert await cache.get(key, MISSING) is MISSING
    assert cache.stats.tampered == before + 1


async def test_swap_two_entries(
    manager: CacheManager, enc_ns: Cache, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    await enc_ns.set("alice", {"role": "user"})
    await enc_ns.set("admin", {"role": "admin"})
    store = manager.backend_of(enc_ns.name)
    entries = await stored(store, enc_ns)
    (k1, v1), (k2, v2) = entries.items()
    await store.set(k1, v2, ttl=None)
    await store.set(k2, v1, ttl=None)
    await expect_tampered(enc_ns, "alice", audit_records)
    await expect_tampered(enc_ns, "admin", audit_records)


async def test_copy_into_other_namespace(
    manager: CacheManager,
    make_ns: Callable[..., Cache],
    enc_ns: Cache,
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    other = make_ns("other", encrypt=True)
    await enc_ns.set("k", "victim value")
    await other.set("k", "other value")
    src = await stored(manager.backend_of(enc_ns.name), enc_ns)
    dst_store = manager.backend_of(other.name)
    dst = await stored(dst_store, other)
    (dst_key,) = dst
    (src_value,) = src.values()
    await dst_store.set(dst_key, src_value, ttl=None)
    await expect_tampered(other, "k", audit_records)
    assert await enc_ns.get("k") == "victim value"


@pytest.mark.parametrize("position", [0, 1, 4, 5, 12, 13, 24, 25, -17, -1])
async def test_flip_any_bit(
    manager: CacheManager,
    enc_ns: Cache,
    position: int,
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    await enc_ns.set("k", {"secret": "v" * 40}, ttl=300)
    store = manager.backend_of(enc_ns.name)
    ((key, value),) = (await stored(store, enc_ns)).items()
    mutated = bytearray(value)
    mutated[position] ^= 0x01
    await store.set(key, bytes(mutated), ttl=None)
    await expect_tampered(enc_ns, "k", audit_records)


@pytest.mark.parametrize("keep", [0, 1, 10, 25, 40, -1])
async def test_truncate(
    manager: CacheManager,
    enc_ns: Cache,
    keep: int,
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    await enc_ns.set("k", "value")
    store = manager.backend_of(enc_ns.name)
    ((key, value),) = (await stored(store, enc_ns)).items()
    await store.set(key, value[:keep], ttl=None)
    await expect_tampered(enc_ns, "k", audit_records)


async def test_replay_expired_entry(
    manager: CacheManager,
    enc_ns: Cache,
    clock: ManualClock,
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    await enc_ns.set("token", "old", ttl=10)
    store = manager.backend_of(enc_ns.name)
    ((key, value),) = (await stored(store, enc_ns)).items()
    clock.advance(3600)
    # The attacker restores the old entry with no expiry at the store level.
    await store.set(key, value, ttl=None)
    await expect_tampered(enc_ns, "token", audit_records)


async def test_planted_pickle_is_never_loaded(
    manager: CacheManager, enc_ns: Cache, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    await enc_ns.set("k", "value")
    store = manager.backend_of(enc_ns.name)
    ((key, _),) = (await stored(store, enc_ns)).items()

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (pytest.fail, ("pickle payload executed",))

    await store.set(key, pickle.dumps(Boom()), ttl=None)
    await expect_tampered(enc_ns, "k", audit_records)


async def test_strict_raises_integrity_error(
    manager: CacheManager, make_ns: Callable[..., Cache]
) -> None:
    ns = make_ns("strict", encrypt=True, strict=True)
    await ns.set("k", "v")
    store = manager.backend_of(ns.name)
    ((key, value),) = (await stored(store, ns)).items()
    await store.set(key, value[:-1] + bytes([value[-1] ^ 1]), ttl=None)
    with pytest.raises(IntegrityError) as info:
        await ns.get("k")
    assert str(info.value) == "entry failed integrity check"
    assert ns.stats.tampered == 1
    assert await ns.get("k", MISSING) is MISSING


async def test_garbage_in_plain_namespace_is_a_miss(
    manager: CacheManager, make_ns: Callable[..., Cache]
) -> None:
    ns = make_ns("plainvictim", encrypt=False)
    await ns.set("k", "v")
    store = manager.backend_of(ns.name)
    for garbage in (b"", b"\x00", b"\xff" * 64, pickle.dumps({"x": 1})):
        ((key, _),) = (await stored(store, ns)).items()
        await store.set(key, garbage, ttl=None)
        assert await ns.get("k", MISSING) is MISSING
        await ns.set("k", "v")
    assert ns.stats.tampered == 4


async def _read(cache: Cache, key: str, how: str) -> object:
    if how == "get":
        return await cache.get(key, MISSING)
    (value,) = await cache.get_many([key], MISSING)
    return value


@pytest.mark.encrypting_stacks
@pytest.mark.parametrize("how", ["get", "get_many"])
@pytest.mark.parametrize("mutation", ["key_id", "expiry", "tag", "truncate", "older_entry"])
async def test_tamper_after_a_memoized_read(
    manager: CacheManager,
    enc_ns: Cache,
    how: str,
    mutation: str,
    audit_records: Callable[[], list[logging.LogRecord]],
) -> None:
    """The verified-read memo vouches only for the exact bytes it verified: warm it with a read,
    change the stored entry in any way, and the next read is still a tamper-detected miss."""
    memo = manager.memo
    assert memo is not None
    await enc_ns.set("k", {"secret": "old"}, ttl=300)
    store = manager.backend_of(enc_ns.name)
    ((key, older),) = (await stored(store, enc_ns)).items()
    await enc_ns.set("k", {"secret": "v" * 40}, ttl=300)
    assert await _read(enc_ns, "k", how) == {"secret": "v" * 40}
    assert await _read(enc_ns, "k", how) == {"secret": "v" * 40}  # served by the memo
    assert len(memo) >= 1
    ((_, value),) = (await stored(store, enc_ns)).items()
    mutated = bytearray(value)
    if mutation == "key_id":
        mutated[2] ^= 0x01
    elif mutation == "expiry":
        mutated[11] ^= 0x01
    elif mutation == "tag":
        mutated[-1] ^= 0x01
    elif mutation == "truncate":
        del mutated[-1]
    if mutation == "older_entry":
        # An earlier, authentic envelope of the same key is not tampering (it decrypts), but
        # it must come back as what it is, never as the memoized newer value.
        await store.set(key, older, ttl=None)
        assert await _read(enc_ns, "k", how) == {"secret": "old"}
        return
    before = enc_ns.stats.tampered
    await store.set(key, bytes(mutated), ttl=None)
    assert await _read(enc_ns, "k", how) is MISSING
    assert enc_ns.stats.tampered == before + 1
    assert await _read(enc_ns, "k", how) is MISSING
    assert enc_ns.stats.tampered == before + 1


@pytest.mark.encrypting_stacks
async def test_strict_get_many_raises(manager: CacheManager, make_ns: Callable[..., Cache]) -> None:
    ns = make_ns("strictmany", encrypt=True, strict=True)
    await ns.set("bad", "v")
    store = manager.backend_of(ns.name)
    ((key, value),) = (await stored(store, ns)).items()
    await ns.set_many({"a": 1, "c": 3})
    assert await ns.get_many(["a", "bad", "c"]) == [1, "v", 3]
    await store.set(key, value[:-1] + bytes([value[-1] ^ 1]), ttl=None)
    hits = ns.stats.hits
    with pytest.raises(IntegrityError):
        await ns.get_many(["a", "bad", "c"])
    assert ns.stats.tampered == 1
    assert ns.stats.hits == hits  # the batch failed as a whole: nothing was returned
    assert await ns.get_many(["a", "bad", "c"], MISSING) == [1, MISSING, 3]
