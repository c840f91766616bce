"""A FastAPI endpoint under load: no cache vs our per-route cache and middleware vs peers.

Run from the repository root (it starts its own redis-server on a free loopback port, and
installs ``wrk`` with apt when it is missing and it runs as root)::

    python -m benchmarks.web [--duration 10] [--connections 64] [--rounds 1] [--case SUBSTR ...]
                             [--endpoint model|dict]

Each case is one FastAPI app served by uvicorn (one worker, in its own process) on loopback,
with one endpoint that awaits a 5 ms fake database call and returns about 2 KB of JSON: a
Pydantic ``Order`` model (``--endpoint model``, the default: FastAPI validates and serializes it
on every response it renders, a peer's cache hit included) or a plain dict annotated
``dict[str, Any]`` (``--endpoint dict``: nearly free to render). ``wrk``
drives it for ``--duration`` seconds at ``--connections`` connections. With two CPUs or more
the server runs on the first and wrk and redis-server on the last. Every cached case is checked
to serve from its cache: the handler's calls during the load are counted and reported, and a
cached case whose handler ran more than a handful of times is flagged. The server process's CPU
time per request (``cpu us``) is reported too: on a busy machine it is steadier than req/s.

Cases: no cache; the floor of any cache that runs after routing (the endpoint returns stored
bytes as a ``Response``, no cache work at all); ``cache_response`` (per route) and
``CacheMiddleware`` from aiocache_secure, each on ``memory://`` and on an encrypted Redis
namespace; fastapi-cache2's ``@cache`` with its
in-memory and Redis backends; cashews' ``@cache`` on ``mem://`` and Redis. Ratios compare each
of ours with the peers on the same store, measured in the same run.
Peers: ``pip install -r benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

FLAG_CALLS = 5
"""A cached case whose handler ran more often than this during the load is flagged."""
PAYLOAD = {
    "order": 4711,
    "customer": "c-0042",
    "lines": [
        {"sku": f"SKU-{i:05d}", "name": f"Widget number {i}", "qty": i % 7 + 1, "price": 9.5 + i}
        for i in range(26)
    ],
}


class Line(BaseModel):
    sku: str
    name: str
    qty: int
    price: float


class Order(BaseModel):
    order: int
    customer: str
    lines: list[Line]


ENDPOINTS = ("model", "dict")
"""``model``: the endpoint returns a Pydantic ``Order`` (``-> Order``, ``lines: list[Line]``),
which FastAPI validates and serializes on every response it renders, as in typical services;
``dict``: it returns the plain dict, annotated ``dict[str, Any]`` (nearly free to render)."""


@dataclass(frozen=True)
class Case:
    name: str
    contender: str  # "none", "floor", "ours-route", "ours-middleware", "fastapi-cache2", "cashews"
    store: str  # "-", "memory", "redis"


CASES = [
    Case("no cache", "none", "-"),
    Case("floor: routing + stored bytes", "floor", "-"),
    Case("ours per-route, memory", "ours-route", "memory"),
    Case("ours middleware, memory", "ours-middleware", "memory"),
    Case("fastapi-cache2, memory", "fastapi-cache2", "memory"),
    Case("cashews, memory", "cashews", "memory"),
    Case("ours per-route, redis (encrypted)", "ours-route", "redis"),
    Case("ours middleware, redis (encrypted)", "ours-middleware", "redis"),
    Case("fastapi-cache2, redis", "fastapi-cache2", "redis"),
    Case("cashews, redis", "cashews", "redis"),
]
PEERS = ("fastapi-cache2", "cashews")


# -- the apps (built in the server process) -------------------------------------------------------


def unavailable(case: Case) -> str | None:
    """Why a case cannot run here, or None."""
    try:
        if case.contender == "ours-route":
            from aiocache_secure.integrations.fastapi import cache_response  # noqa: F401
        elif case.contender == "fastapi-cache2":
            import fastapi_cache  # noqa: F401
        elif case.contender == "cashews":
            import cashews  # noqa: F401
    except ImportError as exc:
        return f"unavailable ({exc})"
    return None


def build_app(case: Case, redis_url: str, endpoint: str = "model") -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    calls = [0]
    decorate: Callable[[Any], Any] = lambda fn: fn  # noqa: E731
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None
    middleware: tuple[Any, dict[str, Any]] | None = None

    if case.contender.startswith("ours"):
        from aiocache_secure import CacheManager, Keyring
        from aiocache_secure.integrations.fastapi import cache_lifespan

        manager = CacheManager(keyring=Keyring.generate())
        backend = "memory://" if case.store == "memory" else redis_url
        # memory:// as users get it by default; Redis encrypted (the default off-process).
        namespace = manager.namespace("web", backend=backend)
        lifespan = cache_lifespan(manager)
        if case.contender == "ours-route":
            from aiocache_secure.integrations.fastapi import cache_response

            decorate = cache_response(cache=namespace, ttl=60)
        else:
            from aiocache_secure.integrations.asgi import CacheMiddleware

            middleware = (CacheMiddleware, {"cache": namespace, "ttl": 60})
    elif case.contender == "fastapi-cache2":
        from fastapi_cache import FastAPICache
        from fastapi_cache.decorator import cache as fc_cache

        @asynccontextmanager
        async def fc_lifespan(app: Any) -> Any:
            if case.store == "memory":
                from fastapi_cache.backends.inmemory import InMemoryBackend

                FastAPICache.init(InMemoryBackend(), prefix="bench")
                yield
            else:
                import redis.asyncio
                from fastapi_cache.backends.redis import RedisBackend

                client = redis.asyncio.from_url(redis_url)
                FastAPICache.init(RedisBackend(client), prefix="bench")
                yield
                await client.aclose()

        lifespan = fc_lifespan
        decorate = fc_cache(expire=60)
    elif case.contender == "cashews":
        from cashews import Cache

        cashews = Cache()
        cashews.setup("mem://" if case.store == "memory" else redis_url)

        @asynccontextmanager
        async def cw_lifespan(app: Any) -> Any:
            yield
            await cashews.close()

        lifespan = cw_lifespan
        decorate = cashews(ttl="60s", key="bench:item")

    app = FastAPI(lifespan=lifespan)
    if middleware is not None:
        app.add_middleware(middleware[0], **middleware[1])

    @app.get("/calls")
    async def handler_calls() -> JSONResponse:
        return JSONResponse({"calls": calls[0]}, headers={"Cache-Control": "no-store"})

    async def as_dict() -> dict[str, Any]:
        calls[0] += 1
        await asyncio.sleep(0.005)  # the fake database call
        return PAYLOAD

    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()

    async def as_bytes() -> Response:  # the least any cache that runs after routing can do
        calls[0] += 1
        return Response(body, media_type="application/json")

    async def as_model() -> Order:
        calls[0] += 1
        await asyncio.sleep(0.005)
        return Order.model_validate(PAYLOAD)

    if case.contender == "floor":
        app.get("/item")(as_bytes)
    else:
        app.get("/item")(decorate(as_model if endpoint == "model" else as_dict))
    return app


def serve(case_name: str, port: int, redis_url: str, endpoint: str) -> None:
    import uvicorn

    case = next(c for c in CASES if c.name == case_name)
    config = uvicorn.Config(
        build_app(case, redis_url, endpoint),
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run()


# -- the driver ---------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0:
        print("installing wrk (apt-get)...", flush=True)
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int, path: str) -> bytes:
    """GET with only a Host field, as wrk sends it (so a warm-up fills the variant wrk reads)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"status {response.status}")
        return body
    finally:
        connection.close()


def handler_calls(port: int) -> int:
    return int(json.loads(fetch(port, "/calls"))["calls"])


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT_MS[unit]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    calls: int
    errors: int
    requests: int = 0
    cpu_us: float = 0.0
    """The server process's CPU time per request served: steadier than req/s on a busy machine."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_wrk(output: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(bad.group(1)) if bad else 0
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return Result(rps, p50, p99, 0, errors, requests)


def run_case(
    case: Case,
    *,
    wrk: str,
    redis_url: str,
    endpoint: str,
    duration: float,
    connections: int,
    wrk_cpu: int | None,
) -> Result:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.web", "--serve", case.name,
         "--port", str(port), "--redis-url", redis_url, "--endpoint", endpoint],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(port, "/item")  # also fills the cache
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{case.name}: the server did not start") from None
                time.sleep(0.1)
        if json.loads(fetch(port, "/item")) != PAYLOAD:  # served from the cache now
            raise SystemExit(f"{case.name}: a cached response differs from the handler's")
        before = handler_calls(port)
        command = [wrk, "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency",
                   f"http://127.0.0.1:{port}/item"]  # fmt: skip
        if wrk_cpu is not None:
            command = ["taskset", "-c", str(wrk_cpu), *command]
        cpu_before = cpu_seconds(server.pid)
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        cpu = cpu_seconds(server.pid) - cpu_before
        result = parse_wrk(done.stdout)
        result.calls = handler_calls(port) - before
        result.cpu_us = cpu / max(result.requests, 1) * 1e6
        return result
    finally:
        server.terminate()
        with suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
            server.wait(10)


TARGETS = {"ours-middleware": 3.0, "ours-route": 2.0}
"""Minimum ratio of ours over each peer's Redis hit path."""


def report(results: dict[str, Result | str]) -> None:
    print(
        f"\n{'case':<36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us':>7} {'calls':>7}"
        "  ratios"
    )
    by_name = {c.name: c for c in CASES}
    for name, result in results.items():
        if isinstance(result, str):
            print(f"{name:<36} {result}")
            continue
        case = by_name[name]
        ratios = []
        if case.contender.startswith("ours"):
            for peer in PEERS:
                other = next(
                    (r for n, r in results.items()
                     if by_name[n].contender == peer and by_name[n].store == case.store),
                    None,
                )  # fmt: skip
                if isinstance(other, Result) and other.rps:
                    ratios.append(f"{result.rps / other.rps:.2f}x {peer}")
        baseline = results.get("no cache")
        cached = case.contender not in ("none", "floor")
        if cached and isinstance(baseline, Result) and baseline.rps:
            ratios.append(f"{result.rps / baseline.rps:.1f}x no cache")
        flags = []
        if cached and result.calls > FLAG_CALLS:
            flags.append("FLAG: handler ran during the load (not served from cache)")
        if result.errors:
            flags.append(f"FLAG: {result.errors} errors")
        print(
            f"{name:<36} {result.rps:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
            f"{result.cpu_us:>7.0f} {result.calls:>7}  "
            f"{', '.join(ratios)} {' '.join(flags)}".rstrip()
        )
    for contender, target in TARGETS.items():
        ours = results.get(
            next(c.name for c in CASES if (c.contender, c.store) == (contender, "redis"))
        )
        peers = [
            results.get(next(c.name for c in CASES if (c.contender, c.store) == (peer, "redis")))
            for peer in PEERS
        ]
        if isinstance(ours, Result) and all(isinstance(p, Result) and p.rps for p in peers):
            worst = min(ours.rps / p.rps for p in peers if isinstance(p, Result))
            verdict = "met" if worst >= target else "NOT met"
            # The same ratio in server CPU per request, for a machine too busy for req/s.
            cpu = min((p.cpu_us / ours.cpu_us for p in peers if ours.cpu_us), default=0.0)
            print(
                f"target {contender} >= {target:g}x both peers on Redis: {verdict} "
                f"({worst:.2f}x req/s; {cpu:.2f}x in CPU per request)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per case")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--case", action="append", default=[], help="run cases whose name contains SUBSTR"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds; the best of each case is kept"
    )
    parser.add_argument(
        "--endpoint",
        choices=ENDPOINTS,
        default="model",
        help="what the endpoint returns: a Pydantic model (default) or a plain dict",
    )
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis_url, args.endpoint)
        return

    from ._redis import redis_server

    wrk = ensure_wrk()
    cases = [c for c in CASES if not args.case or any(s in c.name for s in args.case)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    placement = f"server on CPU {cpus[0]}, wrk and redis-server on CPU {cpus[-1]}"
    print(
        f"{len(cases)} cases, endpoint {args.endpoint}, {args.duration:g}s each at "
        f"{args.connections} connections, "
        f"best of {args.rounds} interleaved round(s); {placement if pin else 'unpinned'}"
    )
    results: dict[str, Result | str] = {}
    for case in cases:
        reason = unavailable(case)
        if reason is not None:
            print(f"{case.name}: {reason}", flush=True)
            results[case.name] = reason
    runnable = [c for c in cases if c.name not in results]
    with redis_server(pin=pin) as redis:
        redis_url = redis.url
        for _ in range(args.rounds):  # interleaved, best kept: robust against a busy machine
            for case in runnable:
                result = run_case(
                    case,
                    wrk=wrk,
                    redis_url=redis_url,
                    endpoint=args.endpoint,
                    duration=args.duration,
                    connections=args.connections,
                    wrk_cpu=cpus[-1] if pin else None,
                )
                print(
                    f"{case.name}: {result.rps:.0f} req/s, {result.cpu_us:.0f} us CPU/request, "
                    f"handler calls {result.calls}",
                    flush=True,
                )
                best = results.get(case.name)
                if isinstance(best, Result):
                    result.calls = max(result.calls, best.calls)  # flag any round that missed
                    if best.rps >= result.rps:
                        best.calls = result.calls
                        continue
                results[case.name] = result
    report({c.name: results[c.name] for c in cases})


if __name__ == "__main__":
    main()
