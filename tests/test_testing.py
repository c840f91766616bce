"""The shipped test doubles (aiocache_secure.testing) behave as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

import aiocache_secure.testing as testing
from aiocache_secure import (
    BackendTimeout,
    BackendUnavailable,
    CacheManager,
    IntegrityError,
    Keyring,
    MemoryBackend,
)
from aiocache_secure.testing import (
    Call,
    FailingBackend,
    ManualClock,
    RecordingBackend,
    SwitchableBackend,
    corrupt_entries,
)

pytestmark = pytest.mark.anyio


def test_module_docstring_example_runs() -> None:
    doc = testing.__doc__ or ""
    lines = doc.split("::\n", 1)[1].split("\n\n* ", 1)[0]
    body = "\n".join(line[4:] for line in lines.splitlines())
    program = "import asyncio\n\nasync def main():\n" + "\n".join(
        "    " + line for line in body.splitlines()
    )
    program += "\n\nasyncio.run(main())\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def test_failing_backend_raises_the_error_it_was_given() -> None:
    with pytest.raises(BackendUnavailable):
        await FailingBackend().get(b"k")
    with pytest.raises(BackendTimeout):
        await FailingBackend(BackendTimeout).set_many([(b"k", b"v")], ttl=None)
    with pytest.raises(BackendTimeout):
        async for _ in FailingBackend(BackendTimeout).scan(b"p"):
            pass
    assert "BackendTimeout" in repr(FailingBackend(BackendTimeout))


async def test_switchable_backend_outage_and_recovery() -> None:
    store = SwitchableBackend()
    async with CacheManager(keyring=Keyring.generate(), breaker=None) as manager:
        cache = manager.namespace("users", backend=store)
        await cache.set("alice", "pro")
        store.down = True
        with pytest.raises(BackendUnavailable):
            await cache.get("alice")
        calls = store.calls
        store.down = False
        assert await cache.get("alice") == "pro"
        assert store.calls == calls + 1


async def test_switchable_backend_wraps_a_given_store_and_error() -> None:
    inner = MemoryBackend()
    store = SwitchableBackend(inner, down=True, error=BackendTimeout)
    assert store.inner is inner
    with pytest.raises(BackendTimeout):
        await store.delete(b"k")
    store.down = False
    await store.set(b"k", b"v", ttl=None)
    assert await inner.get(b"k") == b"v"
    assert [item async for item in store.scan(b"k")] == [(b"k", b"v")]


async def test_recording_backend_counts_round_trips_without_keys_or_values() -> None:
    store = RecordingBackend()
    async with CacheManager(keyring=Keyring.generate(), breaker=None) as manager:
        cache = manager.namespace("users", backend=store)
        await cache.set_many({"secret-key": "secret-value", "b": 2})
        assert store.calls == [Call("set_many", 2)]
        store.reset()
        await cache.get_many(["secret-key", "b", "c"])
        await cache.delete("b")
        assert store.operations() == ["get_many", "delete"]
        assert store.calls[0].keys == 3
        assert "secret" not in repr(store) and "secret" not in repr(store.calls)


@pytest.mark.parametrize("strict", [False, True])
async def test_corrupt_entries_makes_reads_miss_or_raise(strict: bool) -> None:
    store = RecordingBackend()
    async with CacheManager(keyring=Keyring.generate(), breaker=None, strict=strict) as manager:
        cache = manager.namespace("users", backend=store)
        other = manager.namespace("other", backend=store)
        await cache.set_many({"a": 1, "b": 2})
        await other.set("a", 3)
        assert await corrupt_entries(store, cache.key_prefix) == 2
        if strict:
            with pytest.raises(IntegrityError):
                await cache.get("a")
        else:
            assert await cache.get("a") is None
            assert cache.stats.tampered == 1
        assert await other.get("a") == 3


async def test_manual_clock_is_the_package_clock() -> None:
    clock = ManualClock()
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as manager:
        cache = manager.namespace("n", ttl=10)
        await cache.set("k", 1)
        clock.advance(11)
        assert await cache.get("k") is None


@pytest.mark.parametrize("bad", [None, ValueError, "BackendUnavailable", BackendUnavailable("x")])
def test_bad_error_types_are_refused(bad: object) -> None:
    with pytest.raises(TypeError):
        FailingBackend(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SwitchableBackend(error=bad)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        SwitchableBackend(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SwitchableBackend(down="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RecordingBackend("memory://")  # type: ignore[arg-type]


async def test_corrupt_entries_refuses_bad_input() -> None:
    with pytest.raises(TypeError):
        await corrupt_entries("memory://", b"p")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await corrupt_entries(MemoryBackend(), b"")
    with pytest.raises(TypeError):
        await corrupt_entries(MemoryBackend(), "prefix")  # type: ignore[arg-type]
