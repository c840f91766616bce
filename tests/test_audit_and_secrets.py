"""Secret canaries: key material, keys and values never reach messages, logs or reprs."""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

import pytest

from aiocache_secure import (
    MISSING,
    CacheError,
    CacheManager,
    Keyring,
    MemoryBackend,
    audit,
)

pytestmark = pytest.mark.anyio

CANARY_KEY = "canary-key-7f3a9c"
CANARY_VALUE = "canary-value-b81e44"


def forms(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        secret.decode("latin-1"),
    ]


def assert_clean(text: str, secrets: list[bytes]) -> None:
    for secret in secrets:
        for form in forms(secret):
            assert form not in text


async def test_canaries_through_failure_paths(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    master = os.urandom(32)
    keyring = Keyring([master])
    texts: list[str] = []
    store = MemoryBackend()
    async with CacheManager(keyring=keyring) as mgr:
        texts += [repr(mgr), repr(keyring), str(keyring)]
        for private in (False, True):
            ns = mgr.namespace(
                f"n{private}",
                backend=store,
                encrypt=True,
                private=private,
                max_value_bytes=64,
                strict=True,
            )
            texts += [repr(ns), repr(ns.stats), repr(store)]
            await ns.set(CANARY_KEY, CANARY_VALUE)
            failures: list[Any] = []
            for bad in (CANARY_VALUE * 10, {1: CANARY_VALUE}, object()):
                try:
                    await ns.set(CANARY_KEY, bad)
                except CacheError as exc:
                    failures.append(exc)
            # Tamper with every stored entry, then read.
            async for key, value in store.scan(b""):
                await store.set(key, value[:-3] + b"xyz", ttl=None)
            try:
                await ns.get(CANARY_KEY)
            except CacheError as exc:
                failures.append(exc)
            assert len(failures) == 4
            for exc in failures:
                texts += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.args)]
    texts += [r.getMessage() + repr(getattr(r, "audit", "")) for r in caplog.records]
    assert any("tamper_detected" in t for t in texts)
    assert_clean("\n".join(texts), [master, CANARY_KEY.encode(), CANARY_VALUE.encode()])


def test_audit_neutralises_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiocache_secure.audit")
    audit.emit("insecure_config", namespace="evil\r\nforged_event namespace=x", reason="r")
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "\r" not in record.getMessage()
    assert record.audit["event"] == "insecure_config"  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        audit.emit("made_up_event")


async def test_insecure_config_event_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiocache_secure.audit")

    class Remote(MemoryBackend):
        pass

    async with CacheManager() as mgr:
        ns = mgr.namespace("plain-remote", backend=Remote(), encrypt=False)
        assert (
            mgr.namespace("plain-remote", backend=mgr.backend_of("plain-remote"), encrypt=False)
            is ns
        )
        await ns.set("k", 1)
        assert await ns.get("k") == 1
    events = [r for r in caplog.records if r.getMessage().startswith("insecure_config")]
    assert len(events) == 1


async def test_hash_keys_hide_keys_and_names() -> None:
    store = MemoryBackend()
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        ns = mgr.namespace("user:alice@example.com", backend=store, encrypt=True)
        await ns.set(CANARY_KEY, CANARY_VALUE)
        raw = b"".join([k + v async for k, v in store.scan(b"")])
    assert CANARY_KEY.encode() not in raw
    assert CANARY_VALUE.encode() not in raw
    assert b"alice" not in raw
    keys = [k async for k, _ in store.scan(b"")]
    assert all(k.decode("ascii").replace(":", "").isalnum() for k in keys)


async def test_padded_namespace_behaves_like_unpadded() -> None:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        for encrypt in (False, True):
            ns = mgr.namespace(f"pad{encrypt}", pad_timing=True, encrypt=encrypt)
            await ns.set("k", {"v": 1})
            await ns.set("none", None)
            for _ in range(300):  # crosses a budget recalculation
                assert await ns.get("k") == {"v": 1}
                assert await ns.get("absent", MISSING) is MISSING
            assert await ns.get("none", MISSING) is None
            assert ns.stats.hits == 301 and ns.stats.misses == 300


CANARY_PASSWORD = "canary-pw-5d21e9"
CANARY_URLS = [
    f"redis://app:{CANARY_PASSWORD}@10.0.0.7:6379/0",
    f"rediss://app:{CANARY_PASSWORD}@cache.internal:6380/1",
    f"rediss+cluster://:{CANARY_PASSWORD}@10.0.0.1:7000,10.0.0.2:7000",
    f"redis+sentinel://:{CANARY_PASSWORD}@10.0.0.1:26379,10.0.0.2:26380/mymaster/0",
    f"redis+sentinel://10.0.0.1:26379/mymaster/0?sentinel_password={CANARY_PASSWORD}",
    f"mongodb://app:{CANARY_PASSWORD}@db1:27017,db2:27017/cache?authSource=admin",
    f"mongodb://db1:27017/cache?w=1&password={CANARY_PASSWORD}",
    f"mongodb+srv://app:{CANARY_PASSWORD}@cluster0.internal/?retryWrites=true",
    f"redis://app:{CANARY_PASSWORD}/with/slash@10.0.0.7/0",  # unescaped: masked all the same
    f"redis://{CANARY_PASSWORD}@10.0.0.7/0",  # a lone userinfo may be a token
]


@pytest.mark.parametrize("url", CANARY_URLS)
def test_mask_url_hides_the_password_and_keeps_the_address(url: str) -> None:
    from aiocache_secure.backends import mask_url, mask_urls

    shown = mask_url(url)
    assert CANARY_PASSWORD not in shown and "***" in shown
    assert shown.partition("://")[0] == url.partition("://")[0]
    assert ("10.0.0" in shown) == ("10.0.0" in url) and ("db2" in shown) == ("db2" in url)
    message = mask_urls(f"could not open {url} (and 'again {url}')")
    assert CANARY_PASSWORD not in message and message.startswith("could not open ")


def test_mask_url_leaves_credential_free_urls_alone() -> None:
    from aiocache_secure.backends import mask_url

    for url in ("memory://", "file:///var/cache/a@b", "redis://127.0.0.1:6379/0"):
        assert mask_url(url) == url
    assert mask_url("mongodb://h/db?authSource=admin&w=1") == "mongodb://h/db?authSource=admin&w=1"


def test_configuration_reprs_mask_backend_passwords(tmp_path: Any) -> None:
    from aiocache_secure.config import load_config
    from aiocache_secure.lint import check_config

    path = tmp_path / "cache.toml"
    path.write_text(
        f'[manager]\ndefault_backend = "{CANARY_URLS[0]}"\nkey_vault = "{CANARY_URLS[5]}"\n'
        f'[namespaces.a]\nbackend = "{CANARY_URLS[1]}"\n'
        f'[namespaces.b]\nbackend = "{CANARY_URLS[6]}"\n'
    )
    config = load_config(path)
    texts = [repr(config), str(config), *map(repr, config.namespaces)]
    texts += [str(finding) + repr(finding) for finding in check_config(path)]
    for text in texts:
        assert CANARY_PASSWORD not in text
    assert "10.0.0.7" in repr(config) and "db2" in repr(config)
