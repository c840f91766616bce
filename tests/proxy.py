"""A small asyncio TCP proxy that injects faults between a client and a real server.

``latency`` delays every chunk in both directions; ``blackhole`` swallows everything (connections
are accepted, nothing is forwarded, as with a stopped process or a dropped route);
``reset_next_reply`` forwards half of the next server chunk and then resets the client's
connection (TCP RST), which cuts a reply in the middle. It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def _until(attempt: Callable[[], Awaitable[bool]], limit: float, pause: float) -> float:
    """Seconds until ``attempt()`` returns True; AssertionError after ``limit`` seconds.
    Backend errors on the way are what recovery looks like."""
    from aiocache_secure import BackendError

    started = time.monotonic()
    while True:
        try:
            if await attempt():
                return time.monotonic() - started
        except BackendError:
            pass
        if time.monotonic() - started > limit:
            raise AssertionError("the backend did not recover in time")
        await asyncio.sleep(pause)


async def until_ok(store: Any, key: bytes, expected: bytes, limit: float) -> float:
    """Seconds until ``store.get(key)`` returns ``expected`` again."""

    async def attempt() -> bool:
        return bool(await store.get(key) == expected)

    return await _until(attempt, limit, 0.05)


async def until_written(store: Any, key: bytes, value: bytes, limit: float) -> float:
    """Seconds until ``store.set(key, value)`` succeeds again."""

    async def attempt() -> bool:
        await store.set(key, value, ttl=None)
        return True

    return await _until(attempt, limit, 0.1)


class FaultProxy:
    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.latency = 0.0
        self.blackhole = False
        self.reset_next_reply = False
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, to_client=False)),
            asyncio.create_task(self._pump(up_reader, writer, to_client=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_client: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.blackhole:
                    continue
                if to_client and self.reset_next_reply:
                    self.reset_next_reply = False
                    self.resets += 1
                    writer.write(chunk[: max(1, len(chunk) // 2)])
                    await writer.drain()
                    await asyncio.sleep(0.02)
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
