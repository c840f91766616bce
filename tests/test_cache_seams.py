"""The facade's public seams for integrations: derived secrets and the eviction question."""

from __future__ import annotations

import pytest

from aiocache_secure import CacheManager, Keyring

pytestmark = pytest.mark.anyio


async def test_derived_secret_is_shared_by_processes_with_the_keyring() -> None:
    keyring = Keyring.generate()
    async with CacheManager(keyring=keyring) as one, CacheManager(keyring=keyring) as two:
        a = one.namespace("web", backend="memory://", encrypt=True)
        b = two.namespace("web", backend="memory://", encrypt=True)
        secret = a.derive_secret(b"web-credential")
        assert secret is not None and len(secret) == 32
        assert b.derive_secret(b"web-credential") == secret
        assert a.derive_secret(b"other-purpose") != secret
        assert one.namespace("api", encrypt=True).derive_secret(b"web-credential") != secret
    async with CacheManager(keyring=Keyring.generate()) as other:
        elsewhere = other.namespace("web", backend="memory://", encrypt=True)
        assert elsewhere.derive_secret(b"web-credential") != secret


async def test_no_derived_secret_without_a_namespace_key() -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        assert manager.namespace("plain", encrypt=False).derive_secret(b"x") is None
        assert manager.namespace("raw", encrypt=True, hash_keys=False).derive_secret(b"x") is None


@pytest.mark.parametrize("purpose", ["web", b"", None, 1])
async def test_derived_secret_refuses_bad_purposes(purpose: object) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        with pytest.raises(TypeError):
            manager.namespace("n").derive_secret(purpose)  # type: ignore[arg-type]


async def test_store_evicts(tmp_path: object) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        assert manager.namespace("free").store_evicts is False
        assert manager.namespace("bounded", max_entries=10).store_evicts is True
        assert manager.namespace("sized", max_bytes=10_000).store_evicts is True
        assert manager.namespace("file", backend=f"file://{tmp_path}").store_evicts is False
        files = manager.namespace("files", backend=f"file://{tmp_path}", max_entries=5)
        assert files.store_evicts is True


async def test_store_in_process(tmp_path: object) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        assert manager.namespace("mem").store_in_process is True
        assert manager.namespace("file", backend=f"file://{tmp_path}").store_in_process is False
