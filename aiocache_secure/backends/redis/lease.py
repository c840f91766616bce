"""Leases (a distributed lock for stampede protection) and compare-and-set, on any engine.

``acquire`` is ``SET key token NX PX ttl`` with a random 128-bit token, retried until ``wait``
seconds have passed; ``release`` deletes the key only if it still holds our token (a
compare-and-delete Lua script, run by ``EVALSHA``), so a holder whose lease expired cannot release
somebody else's. ``compare_and_set`` compares a SHA-1 of the stored bytes on the server, so the
expected value never travels back.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from typing import Final

from .commands import px
from .engines import Engine

__all__ = ["acquire", "check_lease", "compare_and_set", "release", "version"]

_RELEASE_LUA: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
_RELEASE_SHA: Final = hashlib.sha1(_RELEASE_LUA.encode(), usedforsecurity=False).hexdigest()
_CAS_LUA: Final = """
local current = redis.call("GET", KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then
    return 0
end
if ARGV[3] == "" then
    redis.call("SET", KEYS[1], ARGV[2])
else
    redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
end
return 1
"""
_CAS_SHA: Final = hashlib.sha1(_CAS_LUA.encode(), usedforsecurity=False).hexdigest()


def check_lease(ttl: float, wait: float) -> int:
    """The lease's ``PX``; ValueError for an infinite ttl or a bad ``wait``."""
    lease_px = px(ttl)
    if lease_px is None:
        raise ValueError("a lease needs a finite ttl")
    if not 0 <= wait < math.inf:
        raise ValueError("wait must be a finite number of seconds >= 0")
    return lease_px


async def acquire(engine: Engine, key: bytes, lease_px: int, wait: float) -> bytes | None:
    """The owner token of the lease ``key``, or None once ``wait`` seconds have passed."""
    token = secrets.token_hex(16).encode("ascii")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.005
    while True:
        if await engine.command("SET", key, token, "NX", "PX", lease_px):
            return token
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)


async def release(engine: Engine, key: bytes, token: bytes) -> bool:
    """Delete ``key`` if ``token`` still owns it."""
    return bool(await engine.eval(_RELEASE_LUA, _RELEASE_SHA, key, token))


def version(value: bytes) -> bytes:
    """The token :func:`compare_and_set` compares with: the SHA-1 of the stored bytes."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest().encode("ascii")


async def compare_and_set(
    engine: Engine, key: bytes, token: bytes, value: bytes, value_px: int | None
) -> bool:
    """Replace ``key`` only while it still holds the value ``token`` was read from."""
    ttl_arg = b"" if value_px is None else value_px
    return bool(await engine.eval(_CAS_LUA, _CAS_SHA, key, token, value, ttl_arg))
