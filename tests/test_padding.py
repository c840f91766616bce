"""Timing padding (``pad_timing=True``): every read of a padded namespace does the work of a hit
and ends on a deadline that depends on the namespace, never on the probed entry.

Work is counted with hooks on the decryption and the frame parse, and time is a cost model
(an injected timer that advances with the bytes decrypted and parsed): no wall-clock assertion.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiocache_secure import MISSING, Cache, CacheManager, Keyring
from aiocache_secure import padded as padded_module
from aiocache_secure.layers.encryption import PaddedEncryption
from aiocache_secure.layers.padding import TimingPadding

pytestmark = pytest.mark.anyio

LARGE = {"blob": "x" * 60_000}
SMALL = {"plan": "pro"}


@dataclass
class Work:
    """What padded reads did: bytes decrypted and parsed, and the padded durations they chose."""

    opened: int = 0
    parsed: int = 0
    waits: list[tuple[int, int]] = field(default_factory=list)  # (units, padded ns)
    now: int = 0

    def take(self) -> tuple[int, int, list[tuple[int, int]]]:
        done = (self.opened, self.parsed, self.waits)
        self.opened, self.parsed, self.waits = 0, 0, []
        return done

    def timer(self) -> int:
        # Cost model: 10 "ns" a byte decrypted or parsed (see the hooks), 1,000 a clock read.
        self.now += 1_000
        return self.now


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    work = Work()
    real_open, real_frame, real_wait = (
        PaddedEncryption.open,
        Cache._open_frame,
        TimingPadding.wait,
    )

    def counting_open(self: PaddedEncryption, storage_key: bytes, envelope: bytes) -> Any:
        work.opened += len(envelope)
        work.now += 10 * len(envelope)
        return real_open(self, storage_key, envelope)

    def counting_frame(self: Cache, key: bytes, data: bytes, now_ms: float = -1.0) -> Any:
        work.parsed += len(data)
        work.now += 10 * len(data)
        return real_frame(self, key, data, now_ms)

    def recording_wait(self: TimingPadding, started_ns: int, *units: int) -> int:
        padded = real_wait(self, started_ns, *units)
        work.waits.append((units[0] if units else 1, padded))
        return padded

    monkeypatch.setattr(PaddedEncryption, "open", counting_open)
    monkeypatch.setattr(Cache, "_open_frame", counting_frame)
    monkeypatch.setattr(TimingPadding, "wait", recording_wait)
    yield work


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
async def padded(request: pytest.FixtureRequest, work: Work) -> AsyncIterator[Cache]:
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        yield mgr.namespace("padded", pad_timing=True, encrypt=request.param)


async def test_every_read_is_padded_once(padded: Cache, work: Work) -> None:
    await padded.set("k", SMALL, ttl=60)
    await padded.set("forever", SMALL)
    work.take()
    reads: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
        "get": (lambda: padded.get("k"), lambda: padded.get("absent", MISSING)),
        "get_many": (lambda: padded.get_many(["k"]), lambda: padded.get_many(["absent"])),
        "ttl": (lambda: padded.ttl("k"), lambda: padded.ttl("absent")),
        "exists": (lambda: padded.exists("k"), lambda: padded.exists("absent")),
    }
    results = {}
    for name, (hit, miss) in reads.items():
        results[name] = (await hit(), await miss())
        _, _, waits = work.take()
        assert [units for units, _ in waits] == [1, 1], name
    assert results["get"] == (SMALL, MISSING)
    assert results["get_many"] == ([SMALL], [None])
    ttl_hit, ttl_miss = results["ttl"]
    assert ttl_hit is not None and 59 < ttl_hit <= 60 and ttl_miss is None
    assert await padded.ttl("forever") == float("inf")
    assert results["exists"] == (True, False)
    work.take()
    assert await padded.get_many(["k", "absent", "forever"]) == [SMALL, None, SMALL]
    assert [units for units, _ in work.take()[2]] == [3]


async def test_a_miss_does_the_work_of_a_hit_on_the_largest_entry(
    padded: Cache, work: Work
) -> None:
    await padded.set("large", LARGE)
    await padded.set_many({f"small-{i}": SMALL for i in range(3)})
    work.take()
    assert await padded.get("large") == LARGE
    large_hit = work.take()[:2]
    assert large_hit[1] > 60_000
    for read in (padded.get, padded.ttl):
        # Whatever was read last (a small value here), a miss replays the largest entry.
        assert await padded.get("small-1") == SMALL
        work.take()
        assert await read("absent") is None
        assert work.take()[:2] == large_hit
    assert await padded.get_many(["small-0"]) == [SMALL]
    small_batch = work.take()[:2]
    assert await padded.get_many(["absent"]) == [None]
    assert work.take()[:2] == large_hit
    assert await padded.get_many(["small-0", "absent"]) == [SMALL, None]
    pair = work.take()[:2]
    assert pair == (small_batch[0] + large_hit[0], small_batch[1] + large_hit[1])


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain"])
async def test_the_deadline_does_not_depend_on_the_probed_entry(
    monkeypatch: pytest.MonkeyPatch, work: Work, encrypt: bool
) -> None:
    # Padding's clock is the cost model: what a read costs is the work the hooks counted.
    monkeypatch.setattr(
        padded_module, "TimingPadding", functools.partial(TimingPadding, timer=work.timer)
    )
    async with CacheManager(keyring=Keyring.generate()) as mgr:
        await _deadlines_of(mgr.namespace("padded", pad_timing=True, encrypt=encrypt), work)


async def _deadlines_of(padded: Cache, work: Work) -> None:
    await padded.set_many({f"small-{i}": SMALL for i in range(3)})
    await padded.set("large", LARGE)  # covered when written, before its first read
    work.take()
    for _ in range(3):
        for key in ("small-0", "large", "absent", "small-1"):
            await padded.get(key)
            await padded.ttl(key)
    padded_ns = {padded for _, padded in work.take()[2]}
    assert len(padded_ns) == 1
    budget = padded_ns.pop()
    await padded.get("large")
    opened, parsed, _ = work.take()
    assert budget > 10 * (opened + parsed) > 10 * 60_000  # the large entry's work fits in it
    for keys in (["large"], ["absent"], ["small-2"]):
        await padded.get_many(keys)
    for keys in (["large", "absent"], ["absent", "small-0"]):
        await padded.get_many(keys)
    batches = work.take()[2]
    assert len({padded for units, padded in batches if units == 1}) == 1
    assert len({padded for units, padded in batches if units == 2}) == 1


async def test_clear_forgets_the_reference_entry(padded: Cache, work: Work) -> None:
    await padded.set("large", LARGE)
    await padded.get("absent")
    assert work.take()[1] > 60_000
    await padded.clear()
    await padded.get("absent")
    assert work.take()[1] < 1_000  # the same-shaped dummy, not the erased entry


def test_an_overrun_lands_on_a_whole_number_of_budgets() -> None:
    clock = iter(range(0, 10**9, 100))
    padding = TimingPadding(1_000, timer=lambda: next(clock))
    assert padding.wait(padding.timer()) == 1_000
    started = padding.timer()
    for _ in range(25):  # 2,500 ns of work
        padding.timer()
    assert padding.wait(started) == 3_000
    assert padding.calibrate(lambda: None) == 100
    assert padding.floor_ns == 150 and padding.budget_ns == 1_000
    padding.cover(2_000)
    assert padding.floor_ns == padding.budget_ns == 3_000
    padding.reset()
    assert padding.floor_ns == 0
