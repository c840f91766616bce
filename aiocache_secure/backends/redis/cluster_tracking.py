"""Invalidation reports from every primary of a Redis Cluster (see :class:`ClusterChannel`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from ...errors import BackendUnavailable
from .resp3 import ErrorReply, ProtocolError, pack, read_frame
from .tracking import (
    LOGGER,
    ChannelOptions,
    InvalidationChannel,
    add_prefix_to,
    check_arguments,
    check_seconds,
    stop_task,
)

__all__ = ["ClusterChannel", "primaries_of"]


async def _one_command(
    host: str,
    port: int,
    *parts: bytes,
    options: ChannelOptions,
) -> object:
    """One command on a short-lived RESP3 connection (topology discovery)."""
    async with asyncio.timeout(options.connect_timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=options.ssl_context)
        try:
            hello = [b"HELLO", b"3"]
            if options.password is not None:
                user = (options.username or "default").encode()
                hello += [b"AUTH", user, options.password.encode()]
            writer.write(pack(*hello) + pack(*parts))
            await writer.drain()
            if isinstance(await read_frame(reader), ErrorReply):
                raise ProtocolError("the server refused the handshake")
            return await read_frame(reader)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def primaries_of(slots: object) -> set[tuple[str, int]]:
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
        options: ChannelOptions = ChannelOptions(),  # noqa: B008 - frozen
        topology_interval: float = 1.0,
    ) -> None:
        check_arguments(on_invalidate, options)
        self._on_invalidate = on_invalidate
        self._seeds = list(seeds)
        if not self._seeds:
            raise ValueError("a cluster channel needs at least one node to ask")
        self._options = options
        self._topology_interval = check_seconds("topology_interval", topology_interval)
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
        options = self._options
        return max(options.health_interval + options.health_timeout, self._topology_interval)

    def tracks(self, prefix: bytes) -> bool:
        children = self._children
        return bool(children) and all(child.tracks(prefix) for child in children.values())

    async def add_prefix(self, prefix: bytes) -> None:
        """As :meth:`InvalidationChannel.add_prefix`, on every primary."""
        add_prefix_to(self._prefixes, prefix, closed=self._closed)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        try:
            async with asyncio.timeout(self._options.connect_timeout):
                await self._ready_event.wait()
                children = list(self._children.values())
                await asyncio.gather(*(child.add_prefix(prefix) for child in children))
        except TimeoutError:
            raise BackendUnavailable("the invalidation channel is not connected") from None

    async def _discover(self) -> set[tuple[str, int]]:
        for host, port in [*self._children, *self._seeds]:
            try:
                reply = await _one_command(
                    host,
                    port,
                    b"CLUSTER",
                    b"SLOTS",
                    options=self._options,
                )
                return primaries_of(reply)
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
                options=self._options,
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
        await stop_task(task)
        for pending in list(self._tracking):
            pending.cancel()
        children, self._children = list(self._children.values()), {}
        for child in children:
            await child.aclose()
