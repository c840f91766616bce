"""The two ways to talk to Redis, behind one small protocol: :class:`Engine`.

:class:`StandaloneEngine` sends commands straight to redis-py connections on the backend's own
:class:`~.wire.Wire` (a standalone server, or the primary a Sentinel names);
:class:`ClusterEngine` goes through ``redis.asyncio.RedisCluster``, which routes each command to
its hash slot's node, after discovering the topology once. :class:`~.RedisBackend` holds one
engine per event loop and never asks which one it has.

Every method converts driver errors (:data:`.errors.driver_errors`), except :meth:`Engine.batch`,
which returns error replies in place, unconverted, for the batcher to hand to their callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError

from ...errors import BackendUnavailable
from .errors import convert, driver_errors
from .wire import Command, Wire

__all__ = ["ClusterEngine", "Engine", "StandaloneEngine"]

_T = TypeVar("_T")


class Engine(Protocol):
    """What :class:`~.RedisBackend` needs from a connection to Redis."""

    #: Whether queued single GETs may travel as one ``MGET`` (not on a cluster, where the keys of
    #: a run may live in different slots).
    merge_gets: bool

    async def command(self, *command: Any) -> Any:
        """One command's reply; an error reply is raised, converted."""

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        """One reply per command, pipelined; an error reply is returned in its place as the
        driver's exception. A failure of the whole exchange is raised."""

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """One reply per command, pipelined; the first error reply is raised, converted."""

    async def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The values of ``keys`` (a non-empty list), in order."""

    async def unlink(self, keys: Sequence[bytes]) -> int:
        """``UNLINK`` ``keys`` (a non-empty list): how many existed."""

    def pages(self, pattern: bytes, count: int) -> AsyncIterator[list[bytes]]:
        """``SCAN MATCH pattern`` pages of keys, on every primary."""

    async def eval(self, lua: str, sha: str, key: bytes, *args: Any) -> Any:
        """Run a one-key Lua script by its SHA, loading it when the server does not know it."""

    async def aclose(self) -> None:
        """Close what this engine opened (never a client the application passed); the caller
        converts errors and bounds the time."""


class StandaloneEngine:
    """A standalone server (or the primary of a Sentinel service) on our own wire."""

    __slots__ = ("_wire",)

    merge_gets = True

    def __init__(self, wire: Wire) -> None:
        self._wire = wire

    async def command(self, *command: Any) -> Any:
        with driver_errors:
            reply = (await self._wire.run((command,)))[0]
        if isinstance(reply, Exception):
            raise convert(reply) from reply
        return reply

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        with driver_errors:
            return await self._wire.run(commands)

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        with driver_errors:
            replies = await self._wire.run(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise convert(reply) from reply
        return replies

    async def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        values: list[bytes | None] = await self.command("MGET", *keys)
        return values

    async def unlink(self, keys: Sequence[bytes]) -> int:
        return int(await self.command("UNLINK", *keys))

    async def pages(self, pattern: bytes, count: int) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            raw_cursor, keys = await self.command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            cursor = int(raw_cursor)
            yield keys
            if cursor == 0:
                return

    async def eval(self, lua: str, sha: str, key: bytes, *args: Any) -> Any:
        try:
            return await self.command("EVALSHA", sha, 1, key, *args)
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
        return await self.command("EVAL", lua, 1, key, *args)

    async def aclose(self) -> None:
        await self._wire.aclose()


class ClusterEngine:
    """A Redis Cluster through ``RedisCluster``: every call within ``timeout``, topology
    discovery included."""

    __slots__ = ("_client", "_lock", "_owned", "_ready", "_scripts", "_timeout")

    merge_gets = False

    def __init__(self, client: RedisCluster, *, timeout: float, owned: bool) -> None:
        self._client = client
        self._timeout = timeout
        self._owned = owned
        self._ready = False
        self._lock: asyncio.Lock | None = None
        self._scripts: dict[str, Any] = {}

    async def _discover(self) -> None:
        # A burst of first commands on a fresh RedisCluster would each start the topology
        # discovery, and a late discovery replaces node objects (and closes their connections)
        # under commands still in flight: discover once, before anything else is sent.
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._ready:
                await self._client.initialize()
                self._ready = True

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` within the timeout, after discovery; ``call`` is only invoked once discovery
        succeeded, so a failed discovery leaves no coroutine behind unawaited."""
        with driver_errors:
            async with asyncio.timeout(self._timeout):
                if not self._ready:
                    await self._discover()
                return await call()

    async def command(self, *command: Any) -> Any:
        return await self._call(partial(self._client.execute_command, *command))

    async def _pipelined(self, commands: Sequence[Command], *, raise_on_error: bool) -> list[Any]:
        pipe = self._client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        return replies

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        return await self._call(partial(self._pipelined, commands, raise_on_error=False))

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        return await self._call(partial(self._pipelined, commands, raise_on_error=True))

    def _by_slot(self, keys: Sequence[bytes]) -> dict[int, list[int]]:
        by_slot: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            by_slot.setdefault(self._client.keyslot(key), []).append(index)
        return by_slot

    async def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        by_slot = self._by_slot(keys)
        replies = await self.pipeline(
            [("MGET", *(keys[i] for i in group)) for group in by_slot.values()]
        )
        out: list[bytes | None] = [None] * len(keys)
        for indexes, values in zip(by_slot.values(), replies, strict=True):
            for index, value in zip(indexes, values, strict=True):
                out[index] = value
        return out

    async def unlink(self, keys: Sequence[bytes]) -> int:
        by_slot = self._by_slot(keys)
        unlinks = [("UNLINK", *(keys[i] for i in group)) for group in by_slot.values()]
        return sum(int(n) for n in await self.pipeline(unlinks))

    async def pages(self, pattern: bytes, count: int) -> AsyncIterator[list[bytes]]:
        await self._call(self._client.initialize)  # the primaries as they are now
        for node in list(self._client.get_primaries()):
            cursor = 0
            while True:
                scan = partial(
                    node.execute_command, "SCAN", cursor, "MATCH", pattern, "COUNT", count
                )
                raw_cursor, keys = await self._call(scan)
                cursor = int(raw_cursor)
                yield keys
                if cursor == 0:
                    break

    async def eval(self, lua: str, sha: str, key: bytes, *args: Any) -> Any:
        script = self._scripts.get(sha)
        if script is None:
            script = self._scripts[sha] = self._client.register_script(lua)
        return await self._call(partial(script, keys=[key], args=list(args)))

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
