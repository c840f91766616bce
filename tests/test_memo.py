"""The verified-read memo: bounded, invalidated with the keys, purged on erase, never used where
it would change what a read returns or how long it takes (timing padding)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from aiocache_secure import MISSING, BackendUnavailable, CacheManager, Keyring, ManualClock
from aiocache_secure.backends.memory import MemoryBackend
from aiocache_secure.memo import (
    DEFAULT_MEMO_BYTES,
    ENTRY_OVERHEAD,
    MAX_ENTRY_BYTES,
    KeyEntry,
    Memo,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[CacheManager]:
    async with CacheManager(
        keyring=Keyring.generate(), default_backend=f"file://{tmp_path}", clock=ManualClock()
    ) as mgr:
        yield mgr


def test_memo_bounds_its_bytes_and_skips_large_entries() -> None:
    memo = Memo(16 * 1000)
    entries = [KeyEntry(100, b"%d" % n) for n in range(1000)]
    for n, entry in enumerate(entries):
        memo.put(b"k%d" % n, entry)
    assert memo.nbytes <= memo.limit
    assert len(memo) == 160
    assert memo.get(b"k999") is entries[999]
    assert memo.get(b"k0") is None  # first in, first out
    memo.put(b"big", KeyEntry(1001, b"x"))  # over limit/16: not kept, and not flushing the rest
    assert memo.get(b"big") is None
    assert len(memo) == 160
    roomy = Memo(1 << 30)
    fits = KeyEntry(MAX_ENTRY_BYTES, b"x")
    roomy.put(b"large", KeyEntry(MAX_ENTRY_BYTES + 1, b"x"))  # a large value is never kept
    roomy.put(b"fits", fits)
    assert roomy.get(b"large") is None and roomy.get(b"fits") is fits
    replaced = KeyEntry(50, b"replaced")
    memo.put(b"k999", replaced)
    assert memo.get(b"k999") is replaced
    assert memo.nbytes == 159 * 100 + 50
    memo.discard_prefix(b"k99")
    assert memo.get(b"k999") is None and memo.get(b"k990") is None
    memo.clear()
    assert len(memo) == 0 and memo.nbytes == 0


def test_memo_repr_shows_counts_only() -> None:
    memo = Memo(1 << 20)
    memo.put(b"canary-key", KeyEntry(ENTRY_OVERHEAD, b"canary-value"))
    assert "canary" not in repr(memo)
    assert repr(memo) == f"Memo(entries=1, bytes={ENTRY_OVERHEAD}, limit={1 << 20})"


@pytest.mark.parametrize(
    ("limit", "error"), [("1", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError)]
)
async def test_bad_memo_bytes(limit: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="memo_bytes"):
        CacheManager(memo_bytes=limit)  # type: ignore[arg-type]


async def test_bad_memo_flag(manager: CacheManager) -> None:
    with pytest.raises(TypeError, match="memo must be True or False"):
        manager.namespace("x", memo=1)  # type: ignore[arg-type]


async def test_default_budget_and_off_switches(tmp_path: Path) -> None:
    async with CacheManager(keyring=Keyring.generate()) as default:
        assert default.memo is not None and default.memo.limit == DEFAULT_MEMO_BYTES
    async with CacheManager(keyring=Keyring.generate(), memo_bytes=0) as off:
        assert off.memo is None
        ns = off.namespace("n", backend=f"file://{tmp_path}")
        await ns.set("k", "v")
        assert await ns.get("k") == "v"
        assert await ns.get_many(["k", "k"]) == ["v", "v"]


async def test_hits_come_from_the_memo_and_match_fresh_reads(manager: CacheManager) -> None:
    ns = manager.namespace("users")
    await ns.set_many({f"k{n}": {"n": n} for n in range(50)})
    first = await ns.get_many([f"k{n}" for n in range(50)])
    memo = manager.memo
    assert memo is not None
    size = len(memo)
    assert size == 100  # per key: its storage key, and its verified entry (frame and value)
    again = await ns.get_many([f"k{n}" for n in range(50)])
    assert again == first == [{"n": n} for n in range(50)]
    assert again[0] is not first[0]  # values are decoded afresh: callers may mutate them
    assert len(memo) == size
    assert ns.stats.hits == 100


async def test_writes_and_deletes_drop_entries(manager: CacheManager) -> None:
    ns = manager.namespace("users")
    memo = manager.memo
    assert memo is not None
    await ns.set("a", 1)
    assert await ns.get("a") == 1
    with_entry = len(memo)
    await ns.set("a", 2)
    assert len(memo) == with_entry - 1  # the verified entry went, the storage key stayed
    assert await ns.get("a") == 2
    await ns.delete("a")
    assert len(memo) == with_entry - 1
    assert await ns.add("a", 3)
    assert await ns.get("a") == 3
    assert await ns.incr("a") == 4
    assert len(memo) == with_entry - 1
    assert await ns.get("a") == 4
    assert await ns.expire("a", 60)
    assert len(memo) == with_entry - 1
    await ns.delete("a")
    assert await ns.get("a") is None
    await ns.set_many({"b": 1, "c": 2})
    assert await ns.get_many(["b", "c"]) == [1, 2]
    await ns.clear()
    assert len(memo) == 0
    assert await ns.get_many(["b", "c"]) == [None, None]


async def test_expiry_is_checked_on_every_memo_hit(manager: CacheManager) -> None:
    clock = manager.namespace("probe").clock
    assert isinstance(clock, ManualClock)
    ns = manager.namespace("sessions")
    await ns.set("s", "token", ttl=10)
    assert await ns.get("s") == "token"
    assert await ns.get_many(["s"]) == ["token"]
    clock.advance(11)
    assert await ns.get("s", MISSING) is MISSING
    await ns.set("s", "token", ttl=10)
    assert await ns.get_many(["s"]) == ["token"]
    clock.advance(11)
    assert await ns.get_many(["s"], MISSING) == [MISSING]
    assert ns.stats.tampered == 0


async def test_a_new_keyring_invalidates_what_the_old_one_verified(tmp_path: Path) -> None:
    old = Keyring.generate()
    store = f"file://{tmp_path}"
    async with CacheManager(keyring=old, default_backend=store) as writer:
        await writer.namespace("users").set("k", "sealed under the old key")
    newer = old.rotate()
    async with CacheManager(keyring=newer, default_backend=store) as reader:
        ns = reader.namespace("users")
        assert await ns.get("k") == "sealed under the old key"
        assert await ns.get_many(["k"]) == ["sealed under the old key"]
        # Retire the old key with the index key kept, as an operator would after rotate_keys.
        retired = newer.without(old.primary_id)
        await reader.rewrap(retired)
        assert await ns.get("k", MISSING) is MISSING  # its key is gone: never served again
        assert ns.stats.tampered == 1


async def test_erase_purges_a_private_namespace(manager: CacheManager) -> None:
    private = manager.namespace("user:42", private=True)
    public = manager.namespace("public")
    await private.set("card", "4111")
    await public.set("motd", "hello")
    assert await private.get("card") == "4111"
    assert await public.get("motd") == "hello"
    memo = manager.memo
    assert memo is not None
    assert len(memo) == 4
    assert await manager.erase("user:42")
    assert len(memo) == 2  # the public namespace keeps its entries
    assert await private.get("card") is None
    assert await public.get("motd") == "hello"


async def test_padded_and_opted_out_namespaces_stay_out(manager: CacheManager) -> None:
    memo = manager.memo
    assert memo is not None
    padded = manager.namespace("padded", pad_timing=True)
    opted_out = manager.namespace("optout", memo=False)
    for ns in (padded, opted_out):
        await ns.set("k", "v")
        assert await ns.get("k") == "v"
        assert await ns.get_many(["k"]) == ["v"]
    assert len(memo) == 0


async def test_close_clears(tmp_path: Path) -> None:
    manager = CacheManager(keyring=Keyring.generate(), default_backend=f"file://{tmp_path}")
    ns = manager.namespace("n")
    await ns.set("k", "v")
    assert await ns.get("k") == "v"
    memo = manager.memo
    assert memo is not None and len(memo) > 0
    await manager.aclose()
    assert len(memo) == 0


async def test_get_many_reads_what_only_the_slow_path_decodes(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    stdlib_only = {"big": 2**70, "surrogate": "\udcff", "list": [2**70], "dict": {"s": "\udcff"}}
    await ns.set_many({**stdlib_only, "plain": 1})
    keys = [*stdlib_only, "plain"]
    for _ in range(3):  # through the layers, then memoized batches
        assert await ns.get_many(keys) == [*stdlib_only.values(), 1]
    # A batch with a key never read goes through the layers, meeting memoized frames on the way.
    assert await ns.get_many([*keys, "absent"]) == [*stdlib_only.values(), 1, None]
    assert [await ns.get(k) for k in keys] == [*stdlib_only.values(), 1]
    assert ns.stats.tampered == 0


async def test_get_many_key_validation(manager: CacheManager) -> None:
    ns = manager.namespace("n")
    await ns.set("k", 1)
    assert await ns.get_many(k for k in ["k", "missing"]) == [1, None]
    assert await ns.get_many(("k",)) == [1]
    with pytest.raises(TypeError, match="cache keys must be str"):
        await ns.get_many(["k", b"k"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="lone surrogates"):
        await ns.get_many(["k", "\ud800"])
    with pytest.raises(ValueError, match="limited to 4096 bytes"):
        await ns.get_many(["k", "x" * 4097])


async def test_immutable_values_are_shared_mutable_ones_decoded_afresh(
    manager: CacheManager,
) -> None:
    ns = manager.namespace("n")
    await ns.set_many({"s": "text", "d": {"a": [1]}, "n": None})
    first = await ns.get_many(["s", "d", "n"])
    again = await ns.get_many(["s", "d", "n"])
    single = [await ns.get(k, MISSING) for k in ("s", "d", "n")]
    assert first == again == single == ["text", {"a": [1]}, None]
    assert again[0] is first[0] and single[0] is first[0]  # a str cannot be changed by a caller
    again[1]["a"].append(2)  # a caller mutating what it got changes nothing for the next read
    assert await ns.get("d") == {"a": [1]} and await ns.get_many(["d"]) == [{"a": [1]}]
    assert single[1] is not first[1] and single[1] is not again[1]
    assert ns.stats.hits == 11 and ns.stats.misses == 0


async def test_a_value_rewritten_by_another_manager_is_read_fresh(tmp_path: Path) -> None:
    keyring, store = Keyring.generate(), f"file://{tmp_path}"
    async with (
        CacheManager(keyring=keyring, default_backend=store) as reader,
        CacheManager(keyring=keyring, default_backend=store) as writer,
    ):
        ns, other = reader.namespace("users"), writer.namespace("users")
        await other.set("k", "first")
        for _ in range(2):  # the second read of each is a memo hit
            assert await ns.get("k") == "first"
            assert await ns.get_many(["k"]) == ["first"]
        await other.set("k", "second")  # behind the reader's back: its memo still has "first"
        assert await ns.get("k") == "second"
        await other.set("k", "third")
        assert await ns.get_many(["k"]) == ["third"]
        await other.delete("k")
        assert await ns.get("k", MISSING) is MISSING
        assert await ns.get_many(["k"], MISSING) == [MISSING]
        assert ns.stats.tampered == 0


class CountingStore(MemoryBackend):
    """A memory store that counts batch reads and can be taken down (not a contract backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.down = False

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self.down:
            raise BackendUnavailable("test store is down")
        self.batches.append(len(keys))
        return await super().get_many(keys)


async def test_a_memoized_batch_is_one_store_read_even_with_a_changed_entry() -> None:
    keyring, store = Keyring.generate(), CountingStore()
    async with (
        CacheManager(keyring=keyring) as reader,
        CacheManager(keyring=keyring) as writer,
    ):
        ns = reader.namespace("users", backend=store, encrypt=True)
        other = writer.namespace("users", backend=store, encrypt=True)
        keys = [f"k{n}" for n in range(20)]
        await other.set_many({k: {"n": k} for k in keys})
        assert await ns.get_many(keys) == [{"n": k} for k in keys]  # through the layers
        assert await ns.get_many(keys + keys[:3]) == [{"n": k} for k in keys + keys[:3]]
        assert store.batches == [20, 23]  # the second: every key memoized, one read
        await other.set("k7", "changed")
        await other.delete("k8")
        store.batches.clear()
        values = await ns.get_many(keys, MISSING)
        assert values[7] == "changed" and values[8] is MISSING
        assert values[:7] == [{"n": k} for k in keys[:7]]
        assert store.batches == [20]  # k7 was opened from that same read; k8 is simply gone
        store.batches.clear()
        assert await ns.get_many(["k7", "new"]) == ["changed", None]  # "new" is not memoized
        assert store.batches == [2]
        assert ns.stats.tampered == 0
        assert ns.stats.hits == 20 + 23 + 19 + 1 and ns.stats.misses == 1 + 1


async def test_a_memoized_batch_sees_a_new_keyring_and_tampering() -> None:
    old = Keyring.generate()
    store = CountingStore()
    async with CacheManager(keyring=old) as manager:
        ns = manager.namespace("users", backend=store, encrypt=True)
        await ns.set("a", "1")
        before = {key async for key, _ in store.scan(b"")}
        await ns.set("b", "2")
        (key_b,) = {key async for key, _ in store.scan(b"")} - before
        assert await ns.get_many(["a", "b"]) == ["1", "2"]
        # Flip one ciphertext bit of b's entry in place: its envelope no longer matches the memo.
        damaged = bytearray(await store.get(key_b) or b"")
        damaged[-1] ^= 1
        await store.set(key_b, bytes(damaged), ttl=None)
        assert await ns.get_many(["a", "b"], MISSING) == ["1", MISSING]
        assert ns.stats.tampered == 1
        await manager.rewrap(old.rotate().without(old.primary_id))
        assert await ns.get_many(["a"], MISSING) == [MISSING]  # its key is gone: never again
        assert ns.stats.tampered == 2


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_memoized_batch_with_the_store_down(fail_open: bool) -> None:
    store = CountingStore()
    async with CacheManager(keyring=Keyring.generate()) as manager:
        ns = manager.namespace("n", backend=store, encrypt=True, fail_open=fail_open)
        await ns.set_many({"a": 1, "b": 2})
        assert await ns.get_many(["a", "b"]) == [1, 2]
        store.down = True
        if fail_open:
            assert await ns.get_many(["a", "b"], MISSING) == [MISSING, MISSING]
            assert ns.stats.errors == 1 and ns.stats.misses == 2
        else:
            with pytest.raises(BackendUnavailable):
                await ns.get_many(["a", "b"])
        store.down = False
        assert await ns.get_many(["a", "b"]) == [1, 2]


async def test_a_tagged_entry_is_checked_on_every_memoized_read(manager: CacheManager) -> None:
    """The memo may keep a tagged entry's verified envelope, never its decoded value: every read
    (get, get_many, ttl) runs the tag check, so an invalidation is seen at once."""
    ns = manager.namespace("tagged")
    await ns.set("s", "immutable", tags=["t"])
    await ns.set_many({"a": {"n": 1}, "b": 2}, tags=["t"])
    for _ in range(3):  # the first reads verify the envelopes, the later ones are memo hits
        assert await ns.get("s") == "immutable"
        assert await ns.get_many(["s", "a", "b"]) == ["immutable", {"n": 1}, 2]
    memo = manager.memo
    assert memo is not None and len(memo) > 0
    assert ns.stats.hits == 12
    await ns.invalidate_tags(["t"])
    assert await ns.get("s", MISSING) is MISSING
    assert await ns.get_many(["s", "a", "b"], MISSING) == [MISSING, MISSING, MISSING]
    assert await ns.ttl("a") is None
    assert ns.stats.hits == 12
    await ns.set("s", "again", tags=["t"])
    assert await ns.get("s") == "again"
    assert await ns.get("s") == "again"
