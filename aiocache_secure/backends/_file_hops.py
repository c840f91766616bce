"""Where the file backend's blocking calls run: on the event loop while they are provably quick,
otherwise in worker threads, batched so one thread hop carries every operation queued meanwhile.

A hop to a worker thread costs tens to hundreds of microseconds of wake-up latency, more than
reading a small entry from the page cache or writing one without fsync. :class:`Hops` therefore
runs an operation the backend marks as small *inline* (blocking the loop for its duration) while
a guard keeps the loop safe:

* every inline operation is timed; one over :data:`SLOW` (a cold read, a busy disk, a network
  file system) or a moving average over :data:`AVERAGE` sends every operation to worker threads
  for a cool-down (:data:`COOL_DOWN`, doubled on each relapse up to :data:`MAX_COOL_DOWN`),
  after which inline runs are probed again;
* inline operations never wait on a lock another thread or process may hold: one that would
  raises :class:`WouldBlock` and is retried in a worker thread;
* the loop gets a checkpoint once inline work since the last one passes :data:`YIELD_AFTER`.

Operations sent to threads queue up; one caller leads a hop (``anyio.to_thread.run_sync``) that
drains the queue (up to :data:`BATCH` operations or :data:`BATCH_SECONDS`), wakes their callers,
and passes the lead on while work remains. AnyIO primitives only, so trio works as asyncio does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["HopStats", "Hops", "WouldBlock", "inline_now"]

SLOW: Final = 0.01
AVERAGE: Final = 0.0005
COOL_DOWN: Final = 1.0
MAX_COOL_DOWN: Final = 30.0
YIELD_AFTER: Final = 0.002
BATCH: Final = 64
BATCH_SECONDS: Final = 0.02

_QUEUED, _RUNNING, _FINISHED, _DROPPED = range(4)
_local = threading.local()


class WouldBlock(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an inline operation that would have to wait on a lock."""


def inline_now() -> bool:
    """True while the calling code runs inline on the event loop (it must not wait on locks)."""
    return bool(getattr(_local, "inline", False))


@dataclass(frozen=True, slots=True)
class HopStats:
    """Counters of one backend: operations run ``inline`` and in ``threaded`` hops, the number
    of ``hops`` (``threaded / hops`` is the batching factor), and ``slow`` inline operations
    that sent the backend to threads."""

    inline: int
    threaded: int
    hops: int
    slow: int


@dataclass(slots=True, eq=False)
class _Job:
    func: Callable[..., Any]
    args: tuple[object, ...]
    state: int = _QUEUED
    lead: bool = False
    result: object = None
    error: BaseException | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)


class Hops:
    """The inline guard and the batching thread runner of one backend (one event loop)."""

    __slots__ = (
        "_average",
        "_cool_down",
        "_flipped",
        "_hops",
        "_inline",
        "_leading",
        "_queue",
        "_slow",
        "_threaded",
        "_threads_until",
        "_unyielded",
    )

    def __init__(self) -> None:
        self._queue: deque[_Job] = deque()
        self._leading = False
        self._average = 0.0
        self._threads_until = -float("inf")
        self._cool_down = COOL_DOWN
        self._flipped = -float("inf")
        self._unyielded = 0.0
        self._inline = self._threaded = self._hops = self._slow = 0

    @property
    def stats(self) -> HopStats:
        return HopStats(self._inline, self._threaded, self._hops, self._slow)

    @property
    def inline_allowed(self) -> bool:
        """False during a cool-down after a slow inline operation."""
        return time.perf_counter() >= self._threads_until

    async def run(self, inline: bool, func: Callable[..., Any], *args: object) -> Any:
        """``func(*args)``: inline when ``inline`` and the guard allows it, else in a thread."""
        if inline:
            start = time.perf_counter()
            if start >= self._threads_until:
                _local.inline = True
                try:
                    result = func(*args)
                except WouldBlock:
                    pass
                else:
                    return result
                finally:
                    _local.inline = False
                    end = time.perf_counter()
                    self._observe(end - start, end)
                    if self._unyielded >= YIELD_AFTER:
                        self._unyielded = 0.0
                        await anyio.lowlevel.checkpoint()
        return await self._in_thread(func, args)

    def _observe(self, seconds: float, now: float) -> None:
        self._inline += 1
        self._unyielded += seconds
        self._average += (seconds - self._average) / 8
        if seconds > SLOW or self._average > AVERAGE:
            self._slow += 1
            if now - self._flipped > 4 * self._cool_down:
                self._cool_down = COOL_DOWN
            else:
                self._cool_down = min(2 * self._cool_down, MAX_COOL_DOWN)
            self._flipped = now
            self._threads_until = now + self._cool_down
            self._average = 0.0

    # -- thread mode ------------------------------------------------------------------------------

    async def _in_thread(self, func: Callable[..., Any], args: tuple[object, ...]) -> Any:
        job = _Job(func, args)
        self._queue.append(job)
        self._threaded += 1
        if not self._leading:
            self._leading = True
            job.lead = True
        while job.state != _FINISHED:
            if job.lead:
                job.lead = False
                await self._lead(job)
                continue
            try:
                await job.wake.wait()
            except BaseException:
                if job.state == _QUEUED:
                    job.state = _DROPPED
                if job.lead:
                    self._hand_off()
                raise
            job.wake = anyio.Event()
        if job.error is not None:
            raise job.error
        return job.result

    async def _lead(self, job: _Job) -> None:
        try:
            while job.state != _FINISHED:
                done: list[_Job] = []
                try:
                    await anyio.to_thread.run_sync(self._drain, done)
                finally:
                    self._hops += 1
                    for other in done:
                        other.wake.set()
        finally:
            self._hand_off()

    def _hand_off(self) -> None:
        self._leading = False
        for waiting in self._queue:
            if waiting.state == _QUEUED:
                self._leading = True
                waiting.lead = True
                waiting.wake.set()
                return

    def _drain(self, done: list[_Job]) -> None:
        deadline = time.perf_counter() + BATCH_SECONDS
        while len(done) < BATCH and time.perf_counter() < deadline:
            try:
                job = self._queue.popleft()
            except IndexError:
                return
            if job.state == _DROPPED:
                continue
            job.state = _RUNNING
            try:
                job.result = job.func(*job.args)
            except BaseException as exc:  # delivered to its caller, on the loop
                job.error = exc
            job.state = _FINISHED
            done.append(job)
