"""The few RESP3 frames an invalidation channel reads and writes (see :mod:`.tracking`).

Sizes are bounded (:data:`MAX_BULK`, :data:`MAX_ITEMS`), and anything unexpected raises
:class:`ProtocolError`: a channel that reads one drops its connection, failing closed.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["MAX_BULK", "MAX_ITEMS", "ErrorReply", "ProtocolError", "Push", "pack", "read_frame"]

MAX_BULK: Final = 1 << 20
"""Longest bulk string accepted (a key name, or a reply); storage keys are far shorter."""
MAX_ITEMS: Final = 1 << 20
"""Most items accepted in one aggregate frame (keys of one report)."""


class ProtocolError(Exception):
    """The server sent something this channel does not accept; the connection is dropped."""


class ErrorReply(Exception):
    """An error reply (``-ERR ...``); its text stays internal (it may echo a command)."""


class Push(list[object]):
    """An out-of-band push frame (``>``)."""


async def read_frame(reader: asyncio.StreamReader) -> object:
    """One RESP2/RESP3 value: bytes, int, float, bool, None, list, dict, :class:`Push`, or an
    :class:`ErrorReply` instance for an error reply."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return ErrorReply()
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
            return ErrorReply()
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
        return Push(items) if kind == b">" else items
    raise ProtocolError("unknown frame type")


def pack(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)
