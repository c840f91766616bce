"""Constant-time hit/miss padding (``pad_timing=True``).

A timer cannot pad at microsecond scale (``asyncio.sleep`` below 1 ms sleeps ~1.1 ms on the
default loop), so a padded read does two things:

1. equal work: a miss decrypts a dummy envelope under the namespace's own key and deserializes a
   dummy payload, so both branches make the same backend call, the same cryptographic call and
   the same parse;
2. a busy-wait to a deadline measured from the start of the read. The budget adapts to the 95th
   percentile of recent work (hits and misses alike) times 1.25; a read whose work overruns its
   budget waits to the next whole multiple of the budget, so an overrun lands on one of a few
   coarse steps that a hit and a miss reach equally often rather than on its own exact time.

This runs in the :class:`~aiocache_secure.cache.Cache` facade rather than as a Backend layer
because deserialization, which differs the most between a hit and a miss, happens there.
The spin holds the event loop for the budget (a few microseconds in memory; the backend's
latency on remote stores, which is why padding is off by default and documented as costly there).
"""

from __future__ import annotations

import time
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
        deadline = started_ns + steps * budget
        while time.perf_counter_ns() < deadline:
            pass
