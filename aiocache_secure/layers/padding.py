"""Constant-time hit/miss padding (``pad_timing=True``).

A timer cannot pad at microsecond scale (``asyncio.sleep`` below 1 ms sleeps ~1.1 ms on the
default loop), so a padded read does three things:

1. equal work: a miss repeats the work of a hit on the namespace's *reference* entry — it decrypts
   that entry's envelope again and parses its frame again (before the first entry, a dummy of the
   same shape) — so both branches make the same backend call, the same cryptographic call and the
   same parse. The reference is the largest entry this namespace has written or read in this
   process (since its last ``clear()``), never the last one read: what a miss replays does not
   depend on which key was probed before, nor on the key probed now;
2. a busy-wait to a deadline measured from the start of the read. The budget is the larger of
   1.25 × the 95th percentile of recent work (hits and misses alike) and a *floor*: 1.5 × the
   measured cost of replaying the reference entry, measured again whenever the reference grows by
   more than a quarter. So a hit on the namespace's largest value ends on the same deadline as a
   miss or a hit on a small one, and the padded cost depends on the namespace, not on the probed
   entry. A read whose work overruns its budget (a pause, a slow store) waits to the next whole
   multiple of the budget, so an overrun lands on one of a few coarse steps that a hit and a miss
   reach equally often rather than on its own exact time;
3. a uniform jitter on the deadline, 0-1 µs or up to 1/16 of the budget if that is more. What
   still differs after the deadline (20-40 ns: returning a value rather than the default in
   CPython's frame teardown, and the state a large value's work leaves in the caches) is then
   buried in noise: ``benchmarks/timing.py`` measures max |t| < 10 over 20,000 pairs, where the
   same residual without jitter gives |t| ≈ 15-20. An attacker who can collect many more samples
   per key than that can still average it out; the padding removes the microsecond-scale
   signal (|t| in the thousands unpadded), not every nanosecond.

A batch read of ``n`` keys does the same per key (a miss replays the reference) and waits to
``n`` budgets of its own window (batches amortise the store's round trip, so their per-key work
is measured apart from single reads).

This runs in the :class:`~aiocache_secure.cache.Cache` facade rather than as a Backend layer
because deserialization, which differs the most between a hit and a miss, happens there.
The spin holds the event loop for the budget (a few microseconds in memory for small values; the
backend's latency on remote stores, which is why padding is off by default and documented as
costly there).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from random import getrandbits
from typing import Final

__all__ = ["TimingPadding"]

_WINDOW: Final = 256
_CALIBRATION_RUNS: Final = 5


class TimingPadding:
    """The deadline of padded reads; ``timer`` (monotonic nanoseconds) is injectable for tests."""

    __slots__ = ("_budget", "_floor", "_samples", "timer")

    def __init__(
        self,
        initial_budget_ns: int = 20_000,
        *,
        timer: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._budget = initial_budget_ns
        self._floor = 0
        self._samples: list[int] = []
        self.timer = timer

    @property
    def budget_ns(self) -> int:
        """The current per-read (per-key, for batches) budget."""
        return self._budget

    @property
    def floor_ns(self) -> int:
        """The least budget: 1.5 × the measured cost of replaying the reference entry."""
        return self._floor

    def calibrate(self, replay: Callable[[], object]) -> int:
        """Measure ``replay`` (the reference entry's work) and raise the floor to cover it.

        The median of a few runs, so that one pause on a shared machine does not set the floor
        for good; returns the measured cost. The floor only grows (until :meth:`reset`).
        """
        timer = self.timer
        runs = []
        for _ in range(_CALIBRATION_RUNS):
            started = timer()
            replay()
            runs.append(timer() - started)
        cost = int(statistics.median(runs))
        self.cover(cost)
        return cost

    def cover(self, cost_ns: int) -> None:
        """Raise the floor (and the budget, now) to 1.5 × ``cost_ns``."""
        self._floor = max(self._floor, cost_ns * 3 // 2)
        self._budget = max(self._budget, self._floor)

    def reset(self) -> None:
        """Forget the floor (after a clear or an erase: the reference entry is gone)."""
        self._floor = 0

    def wait(self, started_ns: int, units: int = 1) -> int:
        """Spin until the deadline of a read of ``units`` keys that started at ``started_ns``.

        Returns the padded duration chosen (a whole number of budgets, before the jitter).
        """
        timer = self.timer
        work = timer() - started_ns
        samples = self._samples
        samples.append(work // units)
        if len(samples) >= _WINDOW:
            samples.sort()
            self._budget = max(1_000, self._floor, samples[int(_WINDOW * 0.95)] * 5 // 4)
            samples.clear()
        budget = self._budget * units
        steps = work // budget + 1 if work >= budget else 1
        padded = steps * budget
        # Uniform jitter on the deadline, 0-1 µs or up to 1/16 of the budget if that is more:
        # the spin notices the deadline once per loop turn (~50 ns), so without it the overshoot
        # depends on where in a turn the work ended; and it buries the 20-40 ns by which a hit
        # and a miss still differ after the deadline (CPython frame teardown, and caches that
        # a large value's work leaves in a different state) under noise a 20k-sample t-test
        # cannot average away. A fixed share of the budget keeps its cost proportionate.
        deadline = started_ns + padded + getrandbits(max(10, budget.bit_length() - 4))
        while timer() < deadline:
            pass
        return padded
