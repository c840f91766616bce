"""The entry frame: what the facade hands to the layers as a value, and gets back.

``expires_at_ms (u64, 0 = never) | key_length (u16) | key | payload``

The absolute expiry travels with every entry on every stack, so expiry is enforced on read even
when a store keeps an entry longer than asked (file sweeps, MongoDB's once-a-minute TTL monitor).
The original key is embedded only in namespaces that both hash and encrypt their keys: there it is
sealed inside the ciphertext and lets :meth:`Cache.items` export the namespace although the store
only holds key hashes. Elsewhere ``key_length`` is 0 (an unhashed key is recoverable from its
storage key; a hashed key in an unencrypted namespace must not be written out in the clear).

A *tagged* entry (:mod:`aiocache_secure.tags`) sets the top bit of ``key_length`` and carries its
tag references between the key and the payload:

``expires_at_ms | key_length | 0x8000 | key | count (u8) | count × (tag id 16 B, version u64) |
payload``

Key lengths are at most :data:`MAX_KEY_BYTES`, so the bit is never set in an untagged frame,
whose bytes are exactly what they were before tags existed; :func:`unpack` refuses a tagged
frame, so a reader that does not check tags can never take one for a hit.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from .errors import IntegrityError

__all__ = [
    "BATCH_YIELD_BYTES",
    "HEAD",
    "HEADER",
    "MAX_KEY_BYTES",
    "REF",
    "TAGGED",
    "expiry_ms",
    "is_tagged",
    "pack",
    "unpack",
    "unpack_any",
    "unpack_tagged",
]

HEAD: Final = struct.Struct(">QH")
HEADER: Final = HEAD.size
MAX_KEY_BYTES: Final = 4096
BATCH_YIELD_BYTES: Final = 2 << 20
"""A batch read yields to the event loop after about this many bytes of decryption or decoding
(a few milliseconds of CPU), so that one large batch never stalls the loop."""
_EXPIRY_LIMIT: Final = 2.0**64  # the u64 field, in milliseconds
TAGGED: Final = 0x8000
REF: Final = struct.Struct(">16sQ")


def expiry_ms(expires_at: float | None) -> int:
    """The frame's expiry field for the absolute time ``expires_at`` (None or inf: never).

    Lifetimes are bounded by :data:`aiocache_secure.policy.MAX_TTL`, so only a clock set
    beyond the field's range gets here with a time it cannot hold: ValueError, not a bad frame.
    """
    if expires_at is None or math.isinf(expires_at):
        return 0
    if not expires_at * 1000 < _EXPIRY_LIMIT:  # also NaN
        raise ValueError("the expiry time is beyond what an entry frame holds")
    return max(1, math.floor(expires_at * 1000))


def pack(expires_ms: int, key: bytes, payload: bytes, refs: bytes = b"") -> bytes:
    """A frame; ``refs`` (the packed tag references, see :func:`unpack_tagged`) makes it tagged."""
    if refs:
        return HEAD.pack(expires_ms, len(key) | TAGGED) + key + refs + payload
    return HEAD.pack(expires_ms, len(key)) + key + payload


def is_tagged(frame: bytes) -> bool:
    return len(frame) >= HEADER and frame[8] >= 0x80


def unpack(frame: bytes) -> tuple[int, bytes, bytes]:
    """``(expires_ms, embedded_key, payload)``; IntegrityError on a malformed frame."""
    if len(frame) < HEADER:
        raise IntegrityError
    expires_ms, key_len = HEAD.unpack_from(frame)
    end = HEADER + key_len
    if key_len > MAX_KEY_BYTES or len(frame) < end:
        raise IntegrityError
    return expires_ms, frame[HEADER:end], frame[end:]


def unpack_any(frame: bytes) -> tuple[int, bytes, bytes, bytes]:
    """``(expires_ms, embedded_key, refs, payload)`` of any frame (``refs`` empty if untagged)."""
    if len(frame) < HEADER:
        raise IntegrityError
    expires_ms, key_len = HEAD.unpack_from(frame)
    if key_len & TAGGED:
        return _tagged(frame, expires_ms, key_len & ~TAGGED)
    end = HEADER + key_len
    if key_len > MAX_KEY_BYTES or len(frame) < end:
        raise IntegrityError
    return expires_ms, frame[HEADER:end], b"", frame[end:]


def unpack_tagged(frame: bytes) -> tuple[int, bytes, bytes, bytes]:
    """``(expires_ms, embedded_key, refs, payload)`` of a tagged frame, ``refs`` being the count
    byte and the references; IntegrityError on anything else."""
    if len(frame) < HEADER:
        raise IntegrityError
    expires_ms, key_len = HEAD.unpack_from(frame)
    if not key_len & TAGGED:
        raise IntegrityError
    return _tagged(frame, expires_ms, key_len & ~TAGGED)


def _tagged(frame: bytes, expires_ms: int, key_len: int) -> tuple[int, bytes, bytes, bytes]:
    """The rest of :func:`unpack_tagged`, once the header is read."""
    start = HEADER + key_len
    if key_len > MAX_KEY_BYTES or len(frame) <= start or not frame[start]:
        raise IntegrityError
    end = start + 1 + frame[start] * REF.size
    if len(frame) < end:
        raise IntegrityError
    return expires_ms, frame[HEADER:start], frame[start:end], frame[end:]


def read_expiry(frame: bytes) -> int:
    if len(frame) < HEADER:
        raise IntegrityError
    return int(HEAD.unpack_from(frame)[0])
