"""What an outage costs per call, with and without the circuit breaker, and how fast service
resumes. Starts its own redis-server on a free loopback port and pauses it with SIGSTOP (the
harshest outage: connections stay open, nothing answers)::

    python -m benchmarks.breaker [--calls 20000]

Figures: the median time of one ``get`` on an encrypted namespace (a strict one raising
``BackendUnavailable``, a ``fail_open`` one missing) and of one ``@cached`` call while the store is
paused and the breaker open, and of one request through the ASGI ``CacheMiddleware`` (a plain
ASGI app behind it); the same ``get`` without a breaker, which waits out the backend's
``timeout`` (3 s by default); the time from SIGCONT to the first successful ``get`` (at most the
breaker's ``pause``); and the cost of the breaker on a healthy store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiocache_secure import BackendError, Breaker, Cache, CacheManager, Keyring, cached
from aiocache_secure.backends.redis import RedisBackend
from aiocache_secure.integrations.asgi import CacheMiddleware

from ._redis import redis_server


async def median_us(call: Callable[[], Awaitable[Any]], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with contextlib.suppress(BackendError):
            await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def say(what: str, figure: float, unit: str = "µs") -> None:
    print(f"{what:<58} {figure:>10.2f} {unit}")  # noqa: T201


async def healthy(url: str, keyring: Keyring, calls: int) -> None:
    for label, breaker in (("on", Breaker()), ("off", None)):
        async with CacheManager(keyring, breaker=breaker) as mgr:
            ns = mgr.namespace("healthy", backend=url)
            await ns.set("k", {"v": 1})
            await median_us(lambda ns=ns: ns.get("k"), 2000)  # warm-up
            say(
                f"healthy store, breaker {label}: get",
                await median_us(lambda ns=ns: ns.get("k"), calls),
            )  # type: ignore[misc]


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def asgi_request(middleware: CacheMiddleware) -> Callable[[], Awaitable[None]]:
    scope = {"type": "http", "method": "GET", "path": "/p", "raw_path": b"/p",
             "query_string": b"", "headers": [(b"host", b"example.test")], "scheme": "http",
             "server": ("example.test", 80), "root_path": "", "http_version": "1.1"}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    return lambda: middleware(scope, receive, send)


async def open_circuit(strict: Cache) -> float:
    started = time.perf_counter()
    while strict.stats.breaker != "open":
        # Five concurrent callers time out together: one timeout opens the circuit.
        await asyncio.gather(*(strict.get("k") for _ in range(5)), return_exceptions=True)
    return time.perf_counter() - started


async def main(calls: int) -> None:
    with redis_server() as server:
        url = server.url
        keyring = Keyring.generate()
        await healthy(url, keyring, calls)

        async with CacheManager(keyring) as mgr:
            strict = mgr.namespace("strict", backend=url)
            lenient = mgr.namespace("lenient", backend=url, fail_open=True)
            await strict.set("k", {"v": 1})

            @cached(namespace="lenient", manager=mgr)
            async def compute(x: int) -> int:
                return x * 2

            server.signal(signal.SIGSTOP)
            say("store paused: circuit open after", await open_circuit(strict), "s")
            say("store paused, breaker open: get (BackendUnavailable)",
                await median_us(lambda: strict.get("k"), calls))  # fmt: skip
            say("store paused, breaker open: fail_open get (a miss)",
                await median_us(lambda: lenient.get("k"), calls))  # fmt: skip
            say("store paused, breaker open: @cached call (function runs)",
                await median_us(lambda: compute(2), calls))  # fmt: skip
            web = asgi_request(CacheMiddleware(app, cache=lenient))
            say("store paused, breaker open: ASGI request (app runs)",
                await median_us(web, calls))  # fmt: skip
            server.signal(signal.SIGCONT)
            back = time.perf_counter()
            while True:
                try:
                    await strict.get("k")
                    break
                except BackendError:
                    await asyncio.sleep(0.001)
            say("store resumed: first good get after SIGCONT (pause 2 s)",
                time.perf_counter() - back, "s")  # fmt: skip

        store = RedisBackend(url)  # the default timeout, 3 s
        async with CacheManager(keyring, default_backend=store, breaker=None) as mgr:
            ns = mgr.namespace("nobreaker")
            await ns.set("k", {"v": 1})
            server.signal(signal.SIGSTOP)
            waited = await median_us(lambda: ns.get("k"), 3)
            server.signal(signal.SIGCONT)
            say("store paused, no breaker: get (BackendTimeout)", waited / 1e6, "s")
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    asyncio.run(main(parser.parse_args().calls))
