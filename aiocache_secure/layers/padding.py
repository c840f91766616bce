"""Constant-time hit/miss padding (``pad_timing=True``).

A timer cannot pad at microsecond scale (``asyncio.sleep`` below 1 ms sleeps ~1.1 ms on the
default loop), so a padded read does three things:

1. equal work: a miss repeats the last hit's work — it decrypts that hit's envelope again and
   parses its frame again (before the first hit, a dummy of the same shape) — so both branches
   make the same backend call, the same cryptographic call and the same parse, of the same size;
2. a busy-wait to a deadline measured from the start of the read. The budget adapts to the 95th
   percentile of recent work (hits and misses alike) times 1.25; a read whose work overruns its
   budget waits to the next whole multiple of the budget, so an overrun lands on one of a few
   coarse steps that a hit and a miss reach equally often rather than on its own exact time;
3. a uniform 0-1 µs jitter on the deadline. What still differs after the deadline (returning a
   value rather than the default costs CPython ~20 ns more in frame teardown) is then buried in
   noise: ``benchmarks/timing.py`` measures max |t| < 10 over 20,000 pairs, where the same ~20 ns
   without jitter gives |t| ≈ 15-20. An attacker who can collect many more samples per key than
   that can still average it out; the padding removes the microsecond-scale signal (|t| in the
   thousands unpadded), not every nanosecond.

This runs in the :class:`~aiocache_secure.cache.Cache` facade rather than as a Backend layer
because deserialization, which differs the most between a hit and a miss, happens there.
The spin holds the event loop for the budget (a few microseconds in memory; the backend's
latency on remote stores, which is why padding is off by default and documented as costly there).
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import Final

__all__ = ["TimingPadding"]

_WINDOW: Final = 256


class TimingPadding:
    __slots__ = ("_budget", "_samples")

    def __init__(self, initial_budget_ns: int = 20_000) -> None:
        self._budget = initial_budget_ns
        self._samples: list[int] = []

    @property
    def budget_ns(self) -> int:
        return self._budget

    def wait(self, started_ns: int) -> None:
        """Spin until the deadline for a read that started at ``started_ns``."""
        now = time.perf_counter_ns()
        work = now - started_ns
        samples = self._samples
        samples.append(work)
        if len(samples) >= _WINDOW:
            samples.sort()
            self._budget = max(1_000, samples[int(_WINDOW * 0.95)] * 5 // 4)
            samples.clear()
        budget = self._budget
        steps = work // budget + 1 if work >= budget else 1
        # Uniform jitter (0-1 µs) on the deadline: the spin notices the deadline once per loop
        # turn (~50 ns), so without it the overshoot depends on where in a turn the work ended;
        # and it buries the ~20 ns that returning a hit rather than a miss still costs after the
        # deadline (CPython frame teardown) under noise a 20k-sample t-test cannot average away.
        deadline = started_ns + steps * budget + getrandbits(10)
        while time.perf_counter_ns() < deadline:
            pass
