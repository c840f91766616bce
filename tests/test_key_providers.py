from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aiocache_secure import (
    MISSING,
    CacheManager,
    ConfigurationError,
    IntegrityError,
    Keyring,
    MemoryBackend,
)
from aiocache_secure.clock import ManualClock
from aiocache_secure.keys import EnvKeyProvider, FileKeyProvider, KmsKeyWrapper

TEXT = Keyring.new_key_text()


def key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text(TEXT + "\n")
    path.chmod(mode)
    return path


def test_file_provider_accepts_0600(tmp_path: Path) -> None:
    ring = FileKeyProvider(key_file(tmp_path)).load()
    assert ring.key_ids == Keyring.from_text(TEXT).key_ids
    assert TEXT not in repr(FileKeyProvider(key_file(tmp_path)))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_file_provider_refuses_loose_modes(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigurationError, match="group or others") as info:
        FileKeyProvider(key_file(tmp_path, mode)).load()
    assert TEXT not in str(info.value)


def test_file_provider_refuses_symlink_and_missing(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(key_file(tmp_path))
    with pytest.raises(ConfigurationError):
        FileKeyProvider(link).load()
    with pytest.raises(ConfigurationError):
        FileKeyProvider(tmp_path / "absent").load()
    with pytest.raises(ConfigurationError):
        FileKeyProvider(tmp_path).load()


def test_file_provider_refuses_other_owner(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
        with pytest.raises(ConfigurationError, match="owned by another user"):
            FileKeyProvider(path).load()
    else:
        assert path.stat().st_uid == os.geteuid()
        assert len(FileKeyProvider(path).load()) == 1


def test_env_provider_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import aiocache_secure.keys as keys_module

    monkeypatch.setattr(keys_module, "_warned_env", False)
    monkeypatch.setenv("ACS_TEST_KEYS", TEXT)
    caplog.set_level(logging.WARNING, logger="aiocache_secure")
    EnvKeyProvider("ACS_TEST_KEYS").load()
    EnvKeyProvider("ACS_TEST_KEYS").load()
    warnings = [r for r in caplog.records if "environment variable" in r.getMessage()]
    assert len(warnings) == 1
    assert TEXT not in caplog.text


class FakeKms:
    """An in-process stand-in for a KMS (tests only): holds its own key, honours contexts."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self.calls = {"wrap": 0, "unwrap": 0}

    async def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        self.calls["wrap"] += 1
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    async def unwrap(self, blob: bytes, context: bytes) -> bytes:
        self.calls["unwrap"] += 1
        return self._aead.decrypt(blob[:12], blob[12:], context)


@pytest.mark.anyio
async def test_kms_wraps_private_data_keys_without_a_master_key() -> None:
    kms = FakeKms()
    store = type("Remote", (MemoryBackend,), {})()  # a store that leaves the process
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    index_key = os.urandom(32)  # keys the hashing; the KMS holds the wrapping key
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as mgr:
        ns = mgr.namespace("tenant:1", backend=store, private=True)
        await ns.set("k", {"secret": 1})
        assert await ns.get("k") == {"secret": 1}
        assert kms.calls["wrap"] == 1
        with pytest.raises(ConfigurationError):
            mgr.namespace("not-private", backend=store)  # still needs a keyring
    # A new manager unwraps through the KMS.
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as mgr2:
        assert await mgr2.namespace("tenant:1", backend=store, private=True).get("k") == {
            "secret": 1
        }
        assert kms.calls["unwrap"] >= 1
        # The record is bound to its namespace: copied elsewhere, it does not unwrap.
        records = {k: v async for k, v in store.scan(b"") if k.endswith(b"!vault")}
        ((record_key, record),) = records.items()
        other = mgr2.namespace("tenant:2", backend=store, private=True)
        await store.set(
            record_key.replace(record_key[4:36], other.key_prefix[4:36]), record, ttl=None
        )
        with pytest.raises(IntegrityError):
            await other.get("k")
    # Another KMS (or a KMS that lost the key) cannot unwrap: a typed error, no silent new key.
    other_kms = FakeKms()
    async with CacheManager(
        key_wrapper=KmsKeyWrapper(wrap=other_kms.wrap, unwrap=other_kms.unwrap),
        index_key=index_key,
    ) as mgr3:
        with pytest.raises(IntegrityError):
            await mgr3.namespace("tenant:1", backend=store, private=True).get("k", MISSING)
    assert other_kms.calls["wrap"] == 0


def test_kms_wrapper_validation() -> None:
    with pytest.raises(TypeError):
        KmsKeyWrapper(wrap=None, unwrap=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CacheManager(key_wrapper=object())  # type: ignore[arg-type]


def _unused(*_: Any) -> None:
    return None


@pytest.mark.anyio
async def test_kms_only_manager_refuses_public_index_on_shared_stores() -> None:
    kms = FakeKms()
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    store = type("Remote", (MemoryBackend,), {})()  # a store that leaves the process
    async with CacheManager(key_wrapper=wrapper) as mgr:
        with pytest.raises(ConfigurationError, match="index_key="):
            mgr.namespace("user:alice@example.com", backend=store, private=True)
        # In-process memory stays usable: nothing leaves the process.
        mine = mgr.namespace("user:bob", backend="memory://", private=True)
        await mine.set("k", 1)
        assert await mine.get("k") == 1
    assert kms.calls["wrap"] == 1
    # With a secret index key, nothing in the store is derivable from public constants: two
    # secrets give unrelated storage keys for the same namespace and key.
    prefixes = []
    for _ in range(2):
        async with CacheManager(key_wrapper=wrapper, index_key=os.urandom(32)) as mgr:
            ns = mgr.namespace("user:alice@example.com", backend=store, private=True)
            await ns.set("ssn", "x")
            prefixes.append(ns.key_prefix)
    assert prefixes[0] != prefixes[1]


def test_index_key_validation() -> None:
    with pytest.raises(ConfigurationError):
        CacheManager(index_key=b"short")
    with pytest.raises(TypeError):
        CacheManager(index_key="x" * 32)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Keyring"):
        CacheManager(keyring=Keyring.generate(), index_key=os.urandom(32))


class GatedKms(FakeKms):
    """A KMS whose unwrap waits for the test to let it finish (a slow KMS call)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = anyio.Event()
        self.gate = anyio.Event()

    async def unwrap(self, blob: bytes, context: bytes) -> bytes:
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.gate.wait()
        return await super().unwrap(blob, context)


@pytest.mark.anyio
async def test_erase_during_a_slow_first_key_load_is_not_undone() -> None:
    kms = GatedKms()  # built per run: its events belong to the running event loop
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    store = type("Remote", (MemoryBackend,), {})()
    index_key = os.urandom(32)
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as first:
        await first.namespace("user:1", backend=store, private=True).set("k", "v")
    results: list[object] = []
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as mgr:
        ns = mgr.namespace("user:1", backend=store, private=True)
        kms.armed = True

        async def read() -> None:
            results.append(await ns.get("k", MISSING))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await kms.entered.wait()  # the load has read the vault record and awaits the KMS
            assert await mgr.erase("user:1")
            kms.gate.set()
        assert results == [MISSING]
        await ns.set("after", 1)  # under the fresh data key, not the destroyed one
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as fresh:
        ns = fresh.namespace("user:1", backend=store, private=True)
        assert await ns.get("after") == 1
        assert await ns.get("k", MISSING) is MISSING


@pytest.mark.anyio
async def test_kms_manager_adopts_only_a_keyring_with_its_index_key() -> None:
    kms = FakeKms()
    store = type("Remote", (MemoryBackend,), {})()
    index_key = os.urandom(32)
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    async with CacheManager(key_wrapper=wrapper, index_key=index_key) as mgr:
        ns = mgr.namespace("tenant:1", backend=store, private=True)
        await ns.set("k", 1)
        with pytest.raises(ConfigurationError, match="index key"):
            await mgr.rewrap(Keyring.generate())  # would move every storage key
        await mgr.rewrap(Keyring([os.urandom(32)], index_key=index_key))
        assert await ns.get("k") == 1


@pytest.mark.anyio
async def test_kms_only_manager_keeps_a_wrapped_index_key_in_the_vault(tmp_path: Path) -> None:
    kms = FakeKms()
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    url = "file://" + str(tmp_path / "cache")
    with pytest.raises(ConfigurationError, match="async with"):
        CacheManager(key_wrapper=wrapper, default_backend=url).namespace("u:1", private=True)
    prefixes = []
    for _ in range(2):  # two processes sharing the store agree on the index key
        async with CacheManager(key_wrapper=wrapper, default_backend=url) as mgr:
            ns = mgr.namespace("user:alice@example.com", private=True)
            if not prefixes:
                await ns.set("ssn", "123")
            assert await ns.get("ssn") == "123"
            prefixes.append(ns.key_prefix)
    assert prefixes[0] == prefixes[1]
    # Not derivable from public constants: a pinned secret gives another prefix, and a manager
    # whose KMS cannot unwrap the index record refuses to start.
    async with CacheManager(
        key_wrapper=wrapper, default_backend=url, index_key=os.urandom(32)
    ) as mgr:
        assert mgr.namespace("user:alice@example.com", private=True).key_prefix != prefixes[0]
    other = FakeKms()
    with pytest.raises(IntegrityError):
        async with CacheManager(
            key_wrapper=KmsKeyWrapper(wrap=other.wrap, unwrap=other.unwrap), default_backend=url
        ):
            pass


@pytest.mark.anyio
async def test_key_lease_rechecks_once_per_interval_for_all_callers() -> None:
    kms, clock = FakeKms(), ManualClock()
    wrapper = KmsKeyWrapper(wrap=kms.wrap, unwrap=kms.unwrap)
    store = type("Remote", (MemoryBackend,), {})()
    async with CacheManager(
        key_wrapper=wrapper, index_key=os.urandom(32), clock=clock, key_check_interval=5.0
    ) as mgr:
        ns = mgr.namespace("tenant:1", backend=store, private=True)
        await ns.set("k", 1)
        loads = kms.calls["unwrap"]  # each vault read of the record unwraps it once
        for _ in range(50):
            assert await ns.get("k") == 1
        clock.advance(4.9)
        assert await ns.get("k") == 1
        assert kms.calls["unwrap"] == loads  # within the lease: no vault read at all
        clock.advance(0.1)
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ns.get, "k")
        assert kms.calls["unwrap"] == loads + 1  # one re-check, shared by every caller
        assert await ns.get("k") == 1
