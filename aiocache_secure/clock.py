"""Injectable wall-clock time (seconds since the epoch, as ``time.time``).

Expiry is absolute wall time because entries outlive the process (files, Redis, MongoDB). Tests
pass a :class:`ManualClock` and advance it instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], float]
system_clock: Clock = time.time


class ManualClock:
    """A clock that only moves when told to."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
