"""The circuit breaker: shared per backend, fails fast while open, probes after its pause.

Failures are real: a file backend whose directory is replaced by a plain file (asyncio and trio),
and private redis-servers that are killed, stopped and restarted.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from aiocache_secure import (
    MISSING,
    BackendUnavailable,
    Breaker,
    CacheManager,
    ConfigurationError,
    Keyring,
    ManualClock,
    ValueTooLarge,
    cached,
)
from aiocache_secure.backends.redis import RedisBackend
from aiocache_secure.breaker import Circuit, GuardedBackend
from tests import servers

pytestmark = pytest.mark.anyio

Records = Callable[[], list[logging.LogRecord]]


class Outage:
    """A file backend's directory replaced by a plain file, and put back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def start(self) -> None:
        shutil.rmtree(self.directory)
        self.directory.write_bytes(b"not a directory")

    def end(self) -> None:
        self.directory.unlink()
        self.directory.mkdir(mode=0o700)


@pytest.fixture
def outage(tmp_path: Path) -> Outage:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return Outage(directory)


def _events(records: Records) -> list[str]:
    return [r.audit["event"] for r in records() if r.audit["event"].startswith("breaker_")]  # type: ignore[attr-defined]


def test_options_are_validated() -> None:
    for bad in ({"failures": 0}, {"failures": True}, {"window": 0}, {"pause": float("inf")}):
        with pytest.raises(ConfigurationError):
            Breaker(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CacheManager(breaker=5)  # type: ignore[arg-type]
    assert Breaker() == Breaker(failures=5, window=30.0, pause=2.0)


async def test_opens_fails_fast_then_probes_and_closes(
    outage: Outage, audit_records: Records
) -> None:
    clock = ManualClock(0.0)
    breaker = Breaker(failures=3, window=10.0, pause=5.0, clock=clock)
    async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri())
        other = manager.namespace("c", backend=outage.directory.as_uri())
        await ns.set("k", 1)
        assert ns.stats.breaker == "closed"
        outage.start()
        for _ in range(3):
            with pytest.raises(BackendUnavailable) as failed:
                await ns.get("k")
            assert isinstance(failed.value.__cause__, OSError)  # the store was asked
        assert ns.stats.breaker == "open"
        outage.end()
        # The store is back, but the open circuit does not ask it: no cause, no I/O.
        with pytest.raises(BackendUnavailable) as fast:
            await ns.set("k", 2)
        assert fast.value.__cause__ is None
        clock.advance(4.9)
        with pytest.raises(BackendUnavailable):
            await ns.get("k")
        assert other.stats.breaker == "closed"  # per-namespace file stores: separate circuits
        clock.advance(0.1)
        assert await ns.get("k", default=MISSING) is MISSING  # the probe; the file is gone
        assert ns.stats.breaker == "closed"
        await ns.set("k", 3)
        assert await ns.get("k") == 3
        assert _events(audit_records) == ["breaker_opened", "breaker_half_open", "breaker_closed"]


async def test_a_failed_probe_opens_again(outage: Outage) -> None:
    clock = ManualClock(0.0)
    breaker = Breaker(failures=2, window=10.0, pause=1.0, clock=clock)
    async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri())
        outage.start()
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await ns.get("k")
        clock.advance(1.0)
        with pytest.raises(BackendUnavailable) as probe:
            await ns.get("k")
        assert isinstance(probe.value.__cause__, OSError)
        assert ns.stats.breaker == "open"
        with pytest.raises(BackendUnavailable) as fast:
            await ns.get("k")
        assert fast.value.__cause__ is None
        outage.end()


async def test_only_failures_in_a_row_within_the_window_open_it(outage: Outage) -> None:
    clock = ManualClock(0.0)
    breaker = Breaker(failures=3, window=10.0, pause=1.0, clock=clock)
    async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri(), max_value_bytes=100)
        for _ in range(5):  # not backend failures
            with pytest.raises(ValueTooLarge):
                await ns.set("big", "x" * 1000)
        for _ in range(3):
            outage.start()
            for _ in range(2):
                with pytest.raises(BackendUnavailable):
                    await ns.get("k")
            outage.end()
            await ns.get("k")  # a success in between resets the count
        outage.start()
        for _ in range(5):  # spread beyond the window
            with pytest.raises(BackendUnavailable):
                await ns.get("k")
            clock.advance(6.0)
        assert ns.stats.breaker == "closed"
        outage.end()


async def test_fail_open_namespaces_miss_at_once(outage: Outage) -> None:
    clock = ManualClock(0.0)
    breaker = Breaker(failures=1, window=1.0, pause=60.0, clock=clock)
    async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri(), fail_open=True)
        await ns.set("k", 1)
        outage.start()
        assert await ns.get("k", default=MISSING) is MISSING
        assert ns.stats.breaker == "open"
        outage.end()
        assert await ns.get("k", default=MISSING) is MISSING  # served by the open circuit
        await ns.set("k", 2)  # a no-op
        assert ns.stats.errors == 3
        calls = 0

        @cached(namespace="b", manager=manager)
        async def compute(x: int) -> int:
            nonlocal calls
            calls += 1
            return x * 2

        assert [await compute(2), await compute(2)] == [4, 4]
        assert calls == 2  # nothing cached while the circuit is open
        clock.advance(60.0)
        await ns.set("k", 3)
        assert await ns.get("k") == 3
        assert ns.stats.breaker == "closed"


async def test_breaker_none_turns_it_off(outage: Outage) -> None:
    async with CacheManager(Keyring.generate(), breaker=None) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri())
        assert not isinstance(manager.backend_of("b"), GuardedBackend)
        assert ns.stats.breaker == "off"
    async with CacheManager() as manager:
        assert manager.namespace("m").stats.breaker == "off"  # memory:// cannot be unreachable


async def test_state_changes_reach_metrics(outage: Outage) -> None:
    seen: list[tuple[str, str, str]] = []

    class Hook:
        def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
            if operation == "breaker":
                seen.append((operation, namespace, outcome))

    breaker = Breaker(failures=1, window=1.0, pause=60.0, clock=ManualClock(0.0))
    async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri(), metrics=Hook())
        outage.start()
        with pytest.raises(BackendUnavailable):
            await ns.get("k")
        outage.end()
    assert seen == [("breaker", "b", "open")]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_one_circuit_per_redis_store_shared_by_its_namespaces(
    tmp_path: Path, anyio_backend: str
) -> None:
    port = servers.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    clock = ManualClock(0.0)
    breaker = Breaker(failures=3, window=10.0, pause=2.0, clock=clock)
    with servers.redis_server(tmp_path / "a", port=port) as (_, proc):
        async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
            users = manager.namespace("users", backend=url)
            carts = manager.namespace("carts", backend=url)
            store = manager.backend_of("users")
            assert store is manager.backend_of("carts")
            await users.set("alice", 1)
            proc.kill()
            proc.wait(5)
            for ns in (users, carts, users):
                with pytest.raises(BackendUnavailable):
                    await ns.get("alice")
            assert users.stats.breaker == carts.stats.breaker == "open"
            with pytest.raises(BackendUnavailable) as fast:
                await store.acquire_lease(b"acs-lease:x", 1.0)  # the decorator's lease too
            assert fast.value.__cause__ is None
            with servers.redis_server(tmp_path / "b", port=port):
                with pytest.raises(BackendUnavailable):
                    await carts.set("bob", 2)  # still open: the store is not asked
                clock.advance(2.0)
                await carts.set("bob", 2)
                assert users.stats.breaker == carts.stats.breaker == "closed"
                assert await carts.get("bob") == 2
                await carts.clear()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_backend_instance_gets_one_circuit(tmp_path: Path, anyio_backend: str) -> None:
    port = servers.free_port()
    store = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    breaker = Breaker(failures=2, window=10.0, pause=60.0, clock=ManualClock(0.0))
    with servers.redis_server(tmp_path, port=port) as (_, proc):
        async with CacheManager(Keyring.generate(), breaker=breaker) as manager:
            a = manager.namespace("a", backend=store)
            b = manager.namespace("b", backend=store, fail_open=True)
            await a.set("k", 1)
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                for _ in range(2):
                    assert await b.get("k", default=MISSING) is MISSING  # timed out
                # Not BackendTimeout, and no driver error behind it: the stopped store was not
                # asked, so the call did not wait out its timeout.
                with pytest.raises(BackendUnavailable) as fast:
                    await a.get("k")
                assert fast.value.__cause__ is None
            finally:
                os.kill(proc.pid, signal.SIGCONT)
    await store.aclose()


def test_a_lost_or_cancelled_probe_never_wedges_the_circuit() -> None:
    clock = ManualClock(0.0)
    circuit = Circuit(Breaker(failures=1, window=1.0, pause=2.0, clock=clock), kind="test")
    assert circuit.admit() is False  # closed: not a probe
    circuit.failed(False)
    assert circuit.state == "open"
    clock.advance(2.0)
    assert circuit.admit() is True
    assert circuit.state == "half_open"
    with pytest.raises(BackendUnavailable):
        circuit.admit()  # one probe at a time
    clock.advance(2.0)
    assert circuit.admit() is True  # the first probe has been out a whole pause
    circuit.abandoned(True)  # cancelled
    assert circuit.admit() is True  # the next call probes at once
    circuit.succeeded(True)
    assert circuit.state == "closed" and circuit.admit() is False


async def test_the_managers_injected_clock_drives_the_breaker(outage: Outage) -> None:
    clock = ManualClock()
    breaker = Breaker(failures=1, window=1.0, pause=5.0)
    async with CacheManager(Keyring.generate(), clock=clock, breaker=breaker) as manager:
        ns = manager.namespace("b", backend=outage.directory.as_uri())
        outage.start()
        with pytest.raises(BackendUnavailable):
            await ns.get("k")
        outage.end()
        assert ns.stats.breaker == "open"
        clock.advance(5.0)
        assert await ns.get("k", default=MISSING) is MISSING
        assert ns.stats.breaker == "closed"
