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
from typing import Final

from ..errors import BackendUnavailable

__all__ = ["InvalidationChannel", "ProtocolError"]

LOGGER = logging.getLogger("aiocache_secure.redis.tracking")

MAX_BULK: Final = 1 << 20
"""Longest bulk string accepted (a key name, or a reply); storage keys are far shorter."""
MAX_ITEMS: Final = 1 << 20
"""Most items accepted in one aggregate frame (keys of one report)."""
_BACKOFF_MAX: Final = 2.0


class ProtocolError(Exception):
    """The server sent something this channel does not accept; the connection is dropped."""


class _ErrorReply(Exception):
    """An error reply (``-ERR ...``); its text stays internal (it may echo a command)."""


class _Push(list[object]):
    """An out-of-band push frame (``>``)."""


async def read_frame(reader: asyncio.StreamReader) -> object:
    """One RESP2/RESP3 value: bytes, int, float, bool, None, list, dict, :class:`_Push`, or an
    :class:`_ErrorReply` instance for an error reply."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return _ErrorReply()
    if kind in (b":", b"("):
        return int(rest)
    if kind == b"_":
        return None
    if kind == b"#":
        return rest == b"t"
    if kind == b",":
        return float(rest)
    if kind in (b"$", b"=", b"!"):
        size = int(rest)
        if size < 0:
            return None
        if size > MAX_BULK:
            raise ProtocolError("bulk string too long")
        data = (await reader.readexactly(size + 2))[:-2]
        if kind == b"!":
            return _ErrorReply()
        return data[4:] if kind == b"=" else data
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(rest)
        if count < 0:
            return None
        if count > MAX_ITEMS:
            raise ProtocolError("aggregate too long")
        if kind in (b"%", b"|"):
            pairs = {}
            for _ in range(count):
                key = await read_frame(reader)
                pairs[key if isinstance(key, bytes) else repr(key).encode()] = await read_frame(
                    reader
                )
            if kind == b"|":  # an attribute: metadata before the value it annotates
                return await read_frame(reader)
            return pairs
        items = [await read_frame(reader) for _ in range(count)]
        return _Push(items) if kind == b">" else items
    raise ProtocolError("unknown frame type")


def _pack(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class InvalidationChannel:
    """Invalidation reports for every key under the added prefixes, from one Redis server."""

    __slots__ = (
        "_changed",
        "_closed",
        "_connect_timeout",
        "_health_interval",
        "_health_timeout",
        "_host",
        "_on_invalidate",
        "_password",
        "_path",
        "_pong",
        "_port",
        "_prefixes",
        "_sent",
        "_ssl",
        "_task",
        "_tracked",
        "_username",
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
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        health_interval: float = 1.0,
        health_timeout: float = 1.0,
    ) -> None:
        if not callable(on_invalidate):
            raise TypeError("on_invalidate must be callable")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("health_interval", health_interval),
            ("health_timeout", health_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self._on_invalidate = on_invalidate
        self._host, self._port, self._path = host, port, path
        self._ssl = ssl_context
        self._username, self._password = username, password
        self._connect_timeout = float(connect_timeout)
        self._health_interval = float(health_interval)
        self._health_timeout = float(health_timeout)
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
        return self._health_interval + self._health_timeout

    def tracks(self, prefix: bytes) -> bool:
        """True while the channel is up and the server has confirmed tracking ``prefix``."""
        return self.ready and prefix in self._tracked

    async def add_prefix(self, prefix: bytes) -> None:
        """Track ``prefix`` too (once tracked, a prefix stays tracked until :meth:`aclose`).

        Starts the channel on first use. Returns when the server has confirmed the prefix, or
        raises :class:`BackendUnavailable` after ``connect_timeout``. Redis refuses prefixes
        that overlap (one a prefix of another): so does this method, with ``ValueError``.
        """
        if not isinstance(prefix, bytes) or not prefix:
            raise TypeError("prefix must be non-empty bytes")
        if self._closed:
            raise BackendUnavailable("the invalidation channel is closed")
        if prefix not in self._prefixes:
            if any(p.startswith(prefix) or prefix.startswith(p) for p in self._prefixes):
                raise ValueError("tracked prefixes must not overlap")
            self._prefixes.append(prefix)
            self._send_untracked()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            async with asyncio.timeout(self._connect_timeout):
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
            writer.write(_pack(*command))
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
        async with asyncio.timeout(self._connect_timeout):
            if self._path is not None:
                reader, writer = await asyncio.open_unix_connection(self._path, ssl=self._ssl)
            else:
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl
                )
            self._writer = writer
            hello = [b"HELLO", b"3"]
            if self._password is not None:
                user = (self._username or "default").encode()
                hello += [b"AUTH", user, self._password.encode()]
            tracked = list(self._prefixes)
            track = [b"CLIENT", b"TRACKING", b"ON", b"BCAST"]
            for prefix in tracked:
                track += [b"PREFIX", prefix]
            writer.write(
                _pack(*hello) + _pack(b"CLIENT", b"SETNAME", b"acs-invalidate") + _pack(*track)
            )
            await writer.drain()
            for _ in range(3):
                reply = await read_frame(reader)
                while isinstance(reply, _Push):  # nothing is tracked before tracking is on
                    reply = await read_frame(reader)
                if isinstance(reply, _ErrorReply):
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
            if isinstance(frame, _Push):
                if len(frame) == 2 and frame[0] == b"invalidate":
                    keys = frame[1]
                    if keys is None:
                        self._on_invalidate(None)
                    elif isinstance(keys, list) and all(isinstance(k, bytes) for k in keys):
                        self._on_invalidate(keys)
                    else:
                        raise ProtocolError("malformed invalidation report")
                continue  # other pushes are not this channel's to act on
            if isinstance(frame, _ErrorReply):
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
            await asyncio.sleep(self._health_interval)
            pong = self._pong = loop.create_future()
            writer.write(_pack(b"PING"))
            try:
                async with asyncio.timeout(self._health_timeout):
                    await pong
            except TimeoutError:
                LOGGER.warning("redis invalidation channel silent; dropping it")
                writer.transport.abort()
                return

    async def aclose(self) -> None:
        """Stop listening; the channel is not ready again."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._down()


async def _one_command(
    host: str,
    port: int,
    *parts: bytes,
    ssl_context: ssl.SSLContext | None,
    username: str | None,
    password: str | None,
    within: float,
) -> object:
    """One command on a short-lived RESP3 connection (topology discovery)."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
        try:
            hello = [b"HELLO", b"3"]
            if password is not None:
                hello += [b"AUTH", (username or "default").encode(), password.encode()]
            writer.write(_pack(*hello) + _pack(*parts))
            await writer.drain()
            if isinstance(await read_frame(reader), _ErrorReply):
                raise ProtocolError("the server refused the handshake")
            return await read_frame(reader)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _primaries(slots: object) -> set[tuple[str, int]]:
    """The primaries in a ``CLUSTER SLOTS`` reply: the first node of every slot range."""
    if not isinstance(slots, list) or not slots:
        raise ProtocolError("malformed CLUSTER SLOTS reply")
    found: set[tuple[str, int]] = set()
    for entry in slots:
        if not (isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[2], list)):
            raise ProtocolError("malformed CLUSTER SLOTS reply")
        host, port = entry[2][0], entry[2][1]
        if not (isinstance(host, bytes) and isinstance(port, int)):
            raise ProtocolError("malformed CLUSTER SLOTS reply")
        found.add((host.decode("ascii", "replace"), port))
    return found


class ClusterChannel:
    """Invalidation reports from every primary of a Redis Cluster: one
    :class:`InvalidationChannel` per primary, each tracking every prefix in broadcast mode
    (a key's changes are reported by the primary that holds its slot, before and after a slot
    moves).

    It is ready only while a channel to every current primary is. The set of primaries is asked
    for again every ``topology_interval`` seconds (``CLUSTER SLOTS``, from any node that
    answers); when it changes (a failover, a primary added or removed), everything is dropped
    and channels to the new primaries must confirm every prefix before anything is served again.
    So a failover is noticed within ``topology_interval``, or at once when the old primary's
    connection breaks.
    """

    __slots__ = (
        "_base_epoch",
        "_children",
        "_closed",
        "_on_invalidate",
        "_options",
        "_prefixes",
        "_ready_event",
        "_seeds",
        "_task",
        "_topology_interval",
        "_tracking",
    )

    def __init__(
        self,
        on_invalidate: Callable[[list[bytes] | None], None],
        *,
        seeds: Iterable[tuple[str, int]],
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        health_interval: float = 1.0,
        health_timeout: float = 1.0,
        topology_interval: float = 1.0,
    ) -> None:
        if not callable(on_invalidate):
            raise TypeError("on_invalidate must be callable")
        if (
            isinstance(topology_interval, bool)
            or not isinstance(topology_interval, int | float)
            or not topology_interval > 0
        ):
            raise ValueError("topology_interval must be a positive number of seconds")
        self._on_invalidate = on_invalidate
        self._seeds = list(seeds)
        if not self._seeds:
            raise ValueError("a cluster channel needs at least one node to ask")
        self._options = {
            "ssl_context": ssl_context,
            "username": username,
            "password": password,
            "connect_timeout": connect_timeout,
            "health_interval": health_interval,
            "health_timeout": health_timeout,
        }
        # Validates the remaining options once, here.
        InvalidationChannel(on_invalidate, **self._options)  # type: ignore[arg-type]
        self._topology_interval = float(topology_interval)
        self._children: dict[tuple[str, int], InvalidationChannel] = {}
        self._base_epoch = 0
        self._prefixes: list[bytes] = []
        self._ready_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tracking: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"ClusterChannel(primaries={len(self._children)}, ready={self.ready})"

    @property
    def epoch(self) -> int:
        return self._base_epoch + sum(child.epoch for child in self._children.values())

    @property
    def ready(self) -> bool:
        return bool(self._children) and all(c.ready for c in self._children.values())

    @property
    def health_bound(self) -> float:
        health = float(self._options["health_interval"]) + float(  # type: ignore[arg-type]
            self._options["health_timeout"]  # type: ignore[arg-type]
        )
        return max(health, self._topology_interval)

    def tracks(self, prefix: bytes) -> bool:
        children = self._children
        return bool(children) and all(child.tracks(prefix) for child in children.values())

    async def add_prefix(self, prefix: bytes) -> None:
        """As :meth:`InvalidationChannel.add_prefix`, on every primary."""
        if not isinstance(prefix, bytes) or not prefix:
            raise TypeError("prefix must be non-empty bytes")
        if self._closed:
            raise BackendUnavailable("the invalidation channel is closed")
        if prefix not in self._prefixes:
            if any(p.startswith(prefix) or prefix.startswith(p) for p in self._prefixes):
                raise ValueError("tracked prefixes must not overlap")
            self._prefixes.append(prefix)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        timeout = float(self._options["connect_timeout"])  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(timeout):
                await self._ready_event.wait()
                children = list(self._children.values())
                await asyncio.gather(*(child.add_prefix(prefix) for child in children))
        except TimeoutError:
            raise BackendUnavailable("the invalidation channel is not connected") from None

    async def _discover(self) -> set[tuple[str, int]]:
        timeout = float(self._options["connect_timeout"])  # type: ignore[arg-type]
        for host, port in [*self._children, *self._seeds]:
            try:
                reply = await _one_command(
                    host,
                    port,
                    b"CLUSTER",
                    b"SLOTS",
                    ssl_context=self._options["ssl_context"],  # type: ignore[arg-type]
                    username=self._options["username"],  # type: ignore[arg-type]
                    password=self._options["password"],  # type: ignore[arg-type]
                    within=timeout,
                )
                return _primaries(reply)
            except Exception as exc:  # noqa: PERF203 - ask the next node
                LOGGER.debug("cluster topology from a node failed: %s", type(exc).__name__)
        raise BackendUnavailable("no cluster node answered")

    async def _watch(self) -> None:
        while not self._closed:
            try:
                primaries = await self._discover()
            except Exception:  # noqa: S112 - no node answered: keep what is there, ask again
                await asyncio.sleep(self._topology_interval)
                continue
            if primaries != set(self._children):
                await self._rebuild(primaries)
            await asyncio.sleep(self._topology_interval)

    async def _rebuild(self, primaries: set[tuple[str, int]]) -> None:
        old, self._children = self._children, {}
        self._base_epoch += sum(child.epoch for child in old.values()) + 1
        self._on_invalidate(None)
        if old:
            LOGGER.warning("redis cluster primaries changed; near-cache entries dropped")
        for child in old.values():
            await child.aclose()
        self._children = {
            (host, port): InvalidationChannel(
                self._on_invalidate,
                host=host,
                port=port,
                **self._options,  # type: ignore[arg-type]
            )
            for host, port in primaries
        }
        self._ready_event.set()
        loop = asyncio.get_running_loop()
        for prefix in self._prefixes:
            for child in self._children.values():
                task = loop.create_task(self._track(child, prefix))
                self._tracking.add(task)
                task.add_done_callback(self._tracking.discard)

    @staticmethod
    async def _track(child: InvalidationChannel, prefix: bytes) -> None:
        with contextlib.suppress(Exception):
            await child.add_prefix(prefix)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._tracking):
            pending.cancel()
        children, self._children = list(self._children.values()), {}
        for child in children:
            await child.aclose()
