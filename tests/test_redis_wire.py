"""The standalone wire's pool: a burst of callers opens a few connections at a time, not one
handshake each (a stand-in connection counts them; the contract suite uses real servers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiocache_secure.backends.redis.wire import MAX_CONNECTING, Wire

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Handshakes:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.opened = 0


class SlowConnection:
    """Connects in 20 ms (a TLS handshake on a slow CPU) and answers PING at once."""

    def __init__(self, counts: Handshakes) -> None:
        self.counts = counts
        self.is_connected = False
        self.pending = 0

    async def connect(self) -> None:
        counts = self.counts
        counts.now += 1
        counts.opened += 1
        counts.most = max(counts.most, counts.now)
        try:
            await asyncio.sleep(0.02)
        finally:
            counts.now -= 1
        self.is_connected = True

    async def send_packed_command(self, packed: Any, check_health: bool = False) -> None:
        self.pending += 1

    def pack_command(self, *args: Any) -> bytes:
        return b""

    async def read_response(self) -> bytes:
        await asyncio.sleep(0)
        self.pending -= 1
        return b"PONG"

    async def disconnect(self, nowait: bool = False) -> None:
        self.is_connected = False


async def test_a_burst_opens_a_few_connections_at_a_time() -> None:
    counts = Handshakes()
    wire = Wire(lambda: SlowConnection(counts), limit=64, timeout=5.0)  # type: ignore[arg-type,return-value]
    replies = await asyncio.gather(*(wire.run([("PING",)]) for _ in range(50)))
    assert replies == [[b"PONG"]] * 50
    assert counts.most <= MAX_CONNECTING
    assert counts.opened < 50  # callers reused connections the first ones opened


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    counts = Handshakes()
    wire = Wire(lambda: SlowConnection(counts), limit=64, timeout=5.0)  # type: ignore[arg-type,return-value]
    tasks = [asyncio.ensure_future(wire.run([("PING",)])) for _ in range(20)]
    await asyncio.sleep(0.005)
    for task in tasks[5:10]:
        task.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    served = [r for r in done if not isinstance(r, BaseException)]
    assert len(served) == 15 and all(r == [b"PONG"] for r in served)
