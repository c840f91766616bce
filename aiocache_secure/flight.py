"""Single flight: one computation per key in this process, shared by every caller waiting on it.

The computation runs in a task of its own, detached from the callers, so cancelling one caller
only stops that caller's wait: the others still get the result. Under asyncio the task is a plain
``asyncio`` task (its reference is kept until it ends); under trio it is a system task, which is
trio's sanctioned way to run work that belongs to no caller. Waiting uses an AnyIO event, so both
runtimes share one code path.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import anyio

__all__ = ["Flight", "spawn"]

_RUNNING: Final[set[asyncio.Task[None]]] = set()


class Flight:
    """One shared computation: its outcome, and whether it may still be stored.

    A result goes to its callers the way :meth:`succeed` was told: the value itself to the
    first caller that collects it, and to every other caller what ``copy()`` returns, a copy of
    its own (``(False, None)`` when no copy can be made: that caller computes by itself). A
    ``copy`` of None means the value may be shared: it is immutable, or has one caller only.
    """

    __slots__ = ("callers", "copy", "done", "error", "handed", "store", "traceback", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.copy: Callable[[], tuple[bool, Any]] | None = None
        self.handed = False
        self.error: BaseException | None = None
        self.traceback: TracebackType | None = None
        self.store = True
        self.callers = 0  # the caller that started it (none for a background refresh) + joiners

    def succeed(self, value: Any, copy: Callable[[], tuple[bool, Any]] | None) -> None:
        self.value, self.copy = value, copy

    def fail(self, error: BaseException) -> None:
        self.error, self.traceback = error, error.__traceback__

    async def result(self) -> tuple[bool, Any]:
        """``(True, value)`` (see the class docstring); raises the computation's exception;
        ``(False, None)`` when the computation was cancelled or killed from outside (the caller
        then computes by itself)."""
        await self.done.wait()
        error = self.error
        if error is None:
            if self.handed and self.copy is not None:
                return self.copy()
            self.handed = True
            return True, self.value
        if isinstance(error, Exception):
            # Every waiter re-raises one shared exception: restart its traceback each time (as
            # asyncio.Future does) instead of letting it grow by one chain per waiter.
            raise error.with_traceback(self.traceback)
        return False, None


def spawn(job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` detached from the calling task (see the module docstring)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(_as_coroutine(job))
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        return
    import trio

    trio.lowlevel.spawn_system_task(job, context=contextvars.copy_context())


async def _as_coroutine(job: Callable[[], Awaitable[None]]) -> None:
    await job()
