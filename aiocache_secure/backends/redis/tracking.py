"""Redis server-assisted invalidation: one connection that hears about every change under a set
of key prefixes.

Redis (6.0 and later) tells a client when keys it may hold change (``CLIENT TRACKING``). In
broadcast mode with prefixes (``BCAST PREFIX p``) it reports every change of any key under ``p``,
by any client: a write, a delete, an expiry, an eviction, a flush. On RESP3 (``HELLO 3``) the
reports arrive on the connection that turned tracking on, as push frames
``["invalidate", [key, ...]]``, or ``["invalidate", null]`` after ``FLUSHDB``/``FLUSHALL``.

:class:`InvalidationChannel` owns that connection, and is what a near cache (values served from
process memory with no round trip) stands on. What a consumer may rely on:

* ``on_invalidate(keys)`` is called for every report, in the order the server sent them;
  ``on_invalidate(None)`` means "drop everything": a flush, or the channel going down.
* :attr:`InvalidationChannel.ready` is true only while the connection is up with tracking on
  for every prefix added so far; a consumer serves nothing from memory while it is false.
* :attr:`InvalidationChannel.epoch` grows each time the channel goes down. A read that started
  under one epoch and finished under another must not be remembered: a report may have been
  lost in between.
* A silent connection (a half-open socket, a stalled server) is found by a ``PING`` every
  ``health_interval`` seconds that must be answered within ``health_timeout``: the longest a
  lost report can go unnoticed is their sum. Anything unexpected on the wire (a protocol error,
  an error reply, an oversized frame) takes the channel down: it fails closed.

The channel reconnects by itself, with capped exponential backoff, and turns tracking on again
for every prefix before it is ready. Credentials never reach a repr, a message or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ...errors import BackendUnavailable
from .resp3 import ErrorReply, ProtocolError, Push, pack, read_frame

__all__ = [
    "ChannelOptions",
    "InvalidationChannel",
    "add_prefix_to",
    "check_arguments",
    "check_seconds",
    "stop_task",
]

LOGGER = logging.getLogger("aiocache_secure.redis.tracking")

_BACKOFF_MAX: Final = 2.0


def check_seconds(name: str, value: object) -> float:
    """``value`` as seconds, or ``ValueError`` unless it is a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOptions:
    """How an invalidation channel connects and watches its connection (every node's, on a
    cluster): TLS, the ACL user, and its deadlines in seconds."""

    ssl_context: ssl.SSLContext | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    health_interval: float = 1.0
    health_timeout: float = 1.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "health_interval", "health_timeout"):
            check_seconds(name, getattr(self, name))


def check_arguments(on_invalidate: object, options: object) -> None:
    """TypeError unless a channel's report callback and options are what they must be."""
    if not callable(on_invalidate):
        raise TypeError("on_invalidate must be callable")
    if not isinstance(options, ChannelOptions):
        raise TypeError("options must be ChannelOptions")


def add_prefix_to(prefixes: list[bytes], prefix: object, *, closed: bool) -> bool:
    """Append ``prefix`` to ``prefixes`` unless already there (True when it is new), refusing
    what Redis refuses: a prefix that overlaps another (one a prefix of the other)."""
    if not isinstance(prefix, bytes) or not prefix:
        raise TypeError("prefix must be non-empty bytes")
    if closed:
        raise BackendUnavailable("the invalidation channel is closed")
    if prefix in prefixes:
        return False
    if any(p.startswith(prefix) or prefix.startswith(p) for p in prefixes):
        raise ValueError("tracked prefixes must not overlap")
    prefixes.append(prefix)
    return True


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a channel's background task (if it was started) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class InvalidationChannel:
    """Invalidation reports for every key under the added prefixes, from one Redis server."""

    __slots__ = (
        "_changed",
        "_closed",
        "_host",
        "_on_invalidate",
        "_options",
        "_path",
        "_pong",
        "_port",
        "_prefixes",
        "_sent",
        "_task",
        "_tracked",
        "_writer",
        "epoch",
        "ready",
    )

    def __init__(
        self,
        on_invalidate: Callable[[list[bytes] | None], None],
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        options: ChannelOptions = ChannelOptions(),  # noqa: B008 - frozen
    ) -> None:
        check_arguments(on_invalidate, options)
        self._options = options
        self._on_invalidate = on_invalidate
        self._host, self._port, self._path = host, port, path
        self._prefixes: list[bytes] = []
        # This connection's prefixes the server confirmed, and the batches sent but not yet
        # confirmed (one "+OK" each, in order).
        self._tracked: set[bytes] = set()
        self._sent: list[list[bytes]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._pong: asyncio.Future[None] | None = None
        self._closed = False
        self.ready = False
        self.epoch = 0

    def __repr__(self) -> str:
        where = "unix socket" if self._path is not None else f"{self._host}:{self._port}"
        return f"InvalidationChannel({where}, prefixes={len(self._prefixes)}, ready={self.ready})"

    @property
    def health_bound(self) -> float:
        """The longest a lost report can go unnoticed on a silent connection, in seconds."""
        return self._options.health_interval + self._options.health_timeout

    def tracks(self, prefix: bytes) -> bool:
        """True while the channel is up and the server has confirmed tracking ``prefix``."""
        return self.ready and prefix in self._tracked

    async def add_prefix(self, prefix: bytes) -> None:
        """Track ``prefix`` too (once tracked, a prefix stays tracked until :meth:`aclose`).

        Starts the channel on first use. Returns when the server has confirmed the prefix, or
        raises :class:`BackendUnavailable` after ``connect_timeout``. Redis refuses prefixes
        that overlap (one a prefix of another): so does this method, with ``ValueError``.
        """
        if add_prefix_to(self._prefixes, prefix, closed=self._closed):
            self._send_untracked()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            async with asyncio.timeout(self._options.connect_timeout):
                while not self.tracks(prefix):
                    await self._changed.wait()
        except TimeoutError:
            raise BackendUnavailable("the invalidation channel is not connected") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _send_untracked(self) -> None:
        writer = self._writer
        if writer is None or not self.ready:
            return  # the next handshake tracks every prefix
        pending = {p for batch in self._sent for p in batch}
        batch = [p for p in self._prefixes if p not in self._tracked and p not in pending]
        if batch:
            command = [b"CLIENT", b"TRACKING", b"ON", b"BCAST"]
            for prefix in batch:
                command += [b"PREFIX", prefix]
            writer.write(pack(*command))
            self._sent.append(batch)

    def _up(self, tracked: Iterable[bytes]) -> None:
        self._tracked = set(tracked)
        self._sent = []
        self.ready = True
        self._notify()

    def _down(self) -> None:
        was_ready = self.ready
        self.ready = False
        self._tracked = set()
        self._sent = []
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pong, self._pong = self._pong, None
        if pong is not None and not pong.done():
            pong.cancel()
        if was_ready:
            self.epoch += 1
            self._on_invalidate(None)
            if not self._closed:
                LOGGER.warning("redis invalidation channel lost; near-cache entries dropped")
        self._notify()

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self._session()
            except Exception as exc:  # any failure takes the channel down: it fails closed
                LOGGER.debug("redis invalidation channel failed: %s", type(exc).__name__)
            finally:
                connected = self.ready
                self._down()
            if self._closed:
                return
            delay = 0.05 if connected else min(delay * 2, _BACKOFF_MAX)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        try:
            await self._exchange()
        finally:
            writer = self._writer
            if writer is not None:
                # Closed and waited for here, on the loop that opened it: a TLS transport left
                # to the garbage collector outlives its loop.
                writer.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()

    async def _exchange(self) -> None:
        async with asyncio.timeout(self._options.connect_timeout):
            if self._path is not None:
                reader, writer = await asyncio.open_unix_connection(
                    self._path, ssl=self._options.ssl_context
                )
            else:
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._options.ssl_context
                )
            self._writer = writer
            hello = [b"HELLO", b"3"]
            if self._options.password is not None:
                user = (self._options.username or "default").encode()
                hello += [b"AUTH", user, self._options.password.encode()]
            tracked = list(self._prefixes)
            track = [b"CLIENT", b"TRACKING", b"ON", b"BCAST"]
            for prefix in tracked:
                track += [b"PREFIX", prefix]
            writer.write(
                pack(*hello) + pack(b"CLIENT", b"SETNAME", b"acs-invalidate") + pack(*track)
            )
            await writer.drain()
            for _ in range(3):
                reply = await read_frame(reader)
                while isinstance(reply, Push):  # nothing is tracked before tracking is on
                    reply = await read_frame(reader)
                if isinstance(reply, ErrorReply):
                    raise ProtocolError("the server refused the invalidation handshake")
        self._up(tracked)
        self._send_untracked()  # prefixes added during the handshake
        pinger = asyncio.get_running_loop().create_task(self._ping(writer))
        try:
            await self._listen(reader)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pinger

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        while True:
            frame = await read_frame(reader)
            if isinstance(frame, Push):
                if len(frame) == 2 and frame[0] == b"invalidate":
                    keys = frame[1]
                    if keys is None:
                        self._on_invalidate(None)
                    elif isinstance(keys, list) and all(isinstance(k, bytes) for k in keys):
                        self._on_invalidate(keys)
                    else:
                        raise ProtocolError("malformed invalidation report")
                continue  # other pushes are not this channel's to act on
            if isinstance(frame, ErrorReply):
                raise ProtocolError("error reply on the invalidation channel")
            if frame == b"PONG":
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
            elif frame == b"OK" and self._sent:  # a prefix added while connected
                self._tracked.update(self._sent.pop(0))
                self._notify()
            else:
                raise ProtocolError("unexpected reply on the invalidation channel")

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._options.health_interval)
            pong = self._pong = loop.create_future()
            writer.write(pack(b"PING"))
            try:
                async with asyncio.timeout(self._options.health_timeout):
                    await pong
            except TimeoutError:
                LOGGER.warning("redis invalidation channel silent; dropping it")
                writer.transport.abort()
                return

    async def aclose(self) -> None:
        """Stop listening; the channel is not ready again."""
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task)
        self._down()
