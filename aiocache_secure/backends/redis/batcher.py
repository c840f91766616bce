"""Automatic batching of concurrent single ``get``/``set`` calls, and the per-loop engine.

When nothing is in flight a ``get``/``set`` goes straight to the server, so a lone caller pays
nothing. While a command is in flight (``busy``), further single calls queue up and are sent
together at the end of the current event-loop tick (``loop.call_soon``) as one ``MGET`` or one
pipeline, at most ``max_batch`` per round trip, in arrival order. Each caller gets its own reply;
a server error on one command fails only that command's callers, a connection failure only that
batch's; a cancelled caller is simply dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from ...errors import BackendError, ClosedError
from .commands import set_command
from .engines import Engine
from .errors import DRIVER_ERRORS, fail

__all__ = ["GET", "SET", "Batcher", "gather_ops"]

GET: Final = 0
SET: Final = 1
_MGET: Final = 2


@dataclass(slots=True)
class _Op:
    kind: int
    key: bytes
    value: bytes | None
    px: int | None
    future: asyncio.Future[Any]


class Batcher:
    """One event loop's engine and queue. ``busy`` counts commands in flight; the backend
    queues a call (:meth:`enqueue`) while ``enabled and (busy or queue)``."""

    __slots__ = ("busy", "closed", "enabled", "engine", "loop", "max_batch", "queue", "tasks")

    def __init__(
        self, engine: Engine, loop: asyncio.AbstractEventLoop, *, enabled: bool, max_batch: int
    ) -> None:
        self.engine = engine
        self.loop = loop
        self.enabled = enabled
        self.max_batch = max_batch
        self.queue: list[_Op] = []
        self.busy = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def enqueue(
        self, kind: int, key: bytes, value: bytes | None, px: int | None
    ) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        queue = self.queue
        queue.append(_Op(kind, key, value, px, future))
        if len(queue) >= self.max_batch:
            self._flush()
        elif len(queue) == 1:
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self.queue = self.queue, []
        if not batch:
            return
        if self.closed:
            for op in batch:
                fail(op.future, ClosedError("the redis backend is closed"))
            return
        self.busy += 1
        task = self.loop.create_task(self._send(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[_Op]) -> None:
        live = [op for op in batch if not op.future.done()]
        try:
            if not live:
                return
            groups, commands = _plan(live, merge_gets=self.engine.merge_gets)
            replies = await self.engine.batch(commands)
            for (shape, ops), reply in zip(groups, replies, strict=True):
                if isinstance(reply, Exception):
                    for op in ops:
                        fail(op.future, reply)
                    continue
                values = reply if shape == _MGET else [None if shape == SET else reply]
                for op, value in zip(ops, values, strict=True):
                    if not op.future.done():
                        op.future.set_result(value)
        except (*DRIVER_ERRORS, BackendError) as exc:
            for op in live:
                fail(op.future, exc)
        except BaseException:
            for op in live:
                op.future.cancel()
            raise
        finally:
            self.busy -= 1

    def shut(self) -> None:
        """Refuse further batches and fail what is queued."""
        self.closed = True
        queued, self.queue = self.queue, []
        for op in queued:
            fail(op.future, ClosedError("the redis backend is closed"))

    async def drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) for the batches in flight."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=seconds)


async def gather_ops(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The results of queued operations, in order. On a failure or a cancellation the others
    are settled too (retrieved or cancelled), so none is left unretrieved."""
    results: list[Any] = []
    try:
        for future in futures:
            results.append(await future)
    except BaseException:
        for other in futures:
            if not other.done():
                other.cancel()
            elif not other.cancelled():
                other.exception()
        raise
    return results


def _plan(ops: list[_Op], *, merge_gets: bool) -> tuple[list[tuple[int, list[_Op]]], list[Any]]:
    """Commands for a batch, in arrival order: runs of GETs become one MGET when ``merge_gets``."""
    groups: list[tuple[int, list[_Op]]] = []
    commands: list[Any] = []
    run: list[_Op] = []

    def close_run() -> None:
        if run:
            commands.append(("MGET", *(o.key for o in run)))
            groups.append((_MGET, run.copy()))
            run.clear()

    for op in ops:
        if op.kind == GET:
            if merge_gets:
                run.append(op)
                continue
            commands.append(("GET", op.key))
            groups.append((GET, [op]))
            continue
        close_run()
        assert op.value is not None  # noqa: S101 - a SET always carries its value
        commands.append(set_command(op.key, op.value, op.px))
        groups.append((SET, [op]))
    close_run()
    return groups, commands
